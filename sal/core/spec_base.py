"""The base of every spec model: pydantic with unknown keys refused (a typo far more often than intent).

Its own module so that method modules can declare their specs without importing sal.spec.config, which
builds the run spec from them.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

__all__ = ["SpecError", "Strict", "Seeds", "seed_list"]


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
    seeds = seed_list(v)
    if not seeds or min(seeds) < 1 or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds={v!r} must be a count >= 1 or distinct seeds >= 1; fix: e.g. seeds: 10")
    return v


# every ``seeds`` setting of every spec (ablation, study, a compare's tuning)
Seeds = Annotated[int | list[int], AfterValidator(_distinct_positive)]
