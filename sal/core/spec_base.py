"""The base of every spec model: pydantic with unknown keys refused (a typo far more often than intent).

Its own module so that method modules can declare their specs without importing sal.spec.config, which
builds the run spec from them.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

__all__ = ["SpecError", "Strict", "Seeds", "seed_list", "MAX_SEEDS", "MAX_NAME_CHARS", "name_problem"]

MAX_SEEDS = 10_000  # seeds of one sweep setting: far above any design (docs/statistics.md), far below a typo's 3e8
MAX_NAME_CHARS = 100  # a sweep's name ends up in file names (optuna/KIND-NAME.journal: 255 bytes at most)


class SpecError(ValueError):
    """A spec failed validation. ``str(err)`` has one line per problem: dotted key, bad value, fix."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class Strict(BaseModel):
    # allow_inf_nan=False: every float setting is finite (optim.lr: .inf would train to divergence)
    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)


def seed_list(seeds: int | list[int]) -> list[int]:
    """The seeds a ``seeds`` setting names: a count n means seeds 1..n, a list is the seeds themselves."""
    return list(range(1, seeds + 1)) if isinstance(seeds, int) else list(seeds)


def _distinct_positive(v: int | list[int]) -> int | list[int]:
    count = v if isinstance(v, int) else len(v)
    if count > MAX_SEEDS:  # checked before the list is built: 300000000 would take gigabytes
        raise ValueError(f"seeds={count} is more than sal runs (at most {MAX_SEEDS}); fix: e.g. seeds: 10")
    seeds = seed_list(v)
    if not seeds or min(seeds) < 1 or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds={v!r} must be a count >= 1 or distinct seeds >= 1; fix: e.g. seeds: 10")
    return v


def name_problem(name: str, pattern, *, kind: str, allowed: str) -> str | None:
    """The problem with a sweep's ``name`` (characters ``pattern`` allows, at most MAX_NAME_CHARS), or None."""
    if not pattern.match(name):
        return f"name={name!r} must be {allowed}; fix: rename the {kind}"
    if len(name) > MAX_NAME_CHARS:
        return (f"name={name[:20]}... is {len(name)} characters, more than the {MAX_NAME_CHARS} sal allows (it names "
                f"files); fix: a shorter name for the {kind}")
    return None


# every ``seeds`` setting of every spec (ablation, study, a compare's tuning)
Seeds = Annotated[int | list[int], AfterValidator(_distinct_positive)]
