"""Yoked controls in an ablation: a ``random_trigger`` cell with ``method.yoke: <cell>`` copies, seed by
seed, how many interventions its partner cell's run made (and their noise sizes), at epochs of its own.

The grid pairs each yoked (cell, seed) with its partner's queue key; a worker claims a yoked trial only
once its partner's trial is settled (complete, or failed with nothing left to retry), reads the partner's
events from MLflow, and puts them into the control's spec (``method.yoked_events``, which is not part of
its identity) before it trains.
"""

from __future__ import annotations

from collections.abc import Callable

from optuna.trial import FrozenTrial, TrialState

from ..core.names import (
    ATTR_YOKE_KEY,
    EVENT_DEFORM,
    EVENT_NOISE,
    METRIC_NOISE_STD,
    RESULT_STATUSES,
    TAG_KEY,
    TAG_STATUS,
)
from ..methods import SAL_FAMILY
from ..methods.sal import YokedEvents
from ..queue import engine
from ..spec.config import RunSpec, SpecError
from ..tracking.store import metric_histories, runs_with_tag

__all__ = ["YOKE_KEY", "yoke_problems", "partner_keys", "settled_filter", "with_partner_events", "YokeFailed"]

YOKE_KEY = ATTR_YOKE_KEY  # trial user attr of a yoked control: its partner's queue key


class YokeFailed(Exception):
    """The partner run a yoked control copies is not there to copy (it failed, or was never logged)."""


def _yoke(spec: RunSpec) -> str | None:
    return getattr(spec.method, "yoke", None)


def yoke_problems(items: list, cells: dict) -> list[str]:
    """Spec errors of the grid's yoked cells: the partner must be another stress-aware cell of the grid."""
    problems = []
    for item in items:
        partner = _yoke(item.spec)
        if partner is None:
            continue
        if partner not in cells:
            problems.append(f"cell {item.cell}: method.yoke={partner!r} is not a cell; fix: name the SAL cell it "
                            f"copies, one of {sorted(c for c in cells if c != item.cell)}")
        elif partner == item.cell:
            problems.append(f"cell {item.cell}: method.yoke names the cell itself; fix: name the SAL cell it copies")
    if problems:
        return list(dict.fromkeys(problems))
    by_place = {(i.cell, i.context, i.spec.data.display_name, i.seed): i for i in items}
    for item in items:
        partner = _yoke(item.spec)
        if partner is None:
            continue
        other = by_place.get((partner, item.context, item.spec.data.display_name, item.seed))
        if other is not None and (other.spec.method.name not in SAL_FAMILY or _yoke(other.spec) is not None):
            problems.append(f"cell {item.cell}: method.yoke={partner!r} is a {other.spec.method.name} cell, which is "
                            "not stress-driven; fix: yoke to a sal (or sal ablation) cell")
    return list(dict.fromkeys(problems))


def partner_keys(items: list) -> dict[str, str]:
    """Yoked item's queue key -> its partner's (same data set, context and seed)."""
    by_place = {(i.cell, i.context, i.spec.data.display_name, i.seed): i for i in items}
    out = {}
    for item in items:
        partner = _yoke(item.spec)
        if partner is not None:
            other = by_place.get((partner, item.context, item.spec.data.display_name, item.seed))
            if other is None:
                raise SpecError([f"cell {item.cell} seed {item.seed}: its partner cell {partner!r} has no run at "
                                 f"{item.context or 'this context'} on {item.spec.data.display_name}; fix: give "
                                 "both cells the same axes and seeds"])
            out[item.key] = other.key
    return out


def settled_filter(trials: list[FrozenTrial]) -> Callable[[FrozenTrial], bool]:
    """Which WAITING trials a worker may take now: any but a yoked one whose partner is still to run."""
    states: dict[str, set[TrialState]] = {}
    for t in trials:
        states.setdefault(t.user_attrs.get(engine.KEY), set()).add(t.state)
    pending = {TrialState.WAITING, TrialState.RUNNING}

    def settled(t: FrozenTrial) -> bool:
        partner = t.user_attrs.get(YOKE_KEY)
        if partner is None:
            return True
        seen = states.get(partner, set())
        return TrialState.COMPLETE in seen or not (seen & pending)

    return settled


def with_partner_events(spec: RunSpec, trial: FrozenTrial, *, uri: str, experiment: str) -> RunSpec:
    """The yoked control's spec with its partner run's events; the spec unchanged for other trials."""
    partner = trial.user_attrs.get(YOKE_KEY)
    if partner is None:
        return spec
    runs = [r for r in runs_with_tag(uri, experiment, TAG_KEY, partner)
            if r.data.tags.get(TAG_STATUS) in RESULT_STATUSES]
    if not runs:
        raise YokeFailed(f"its partner {partner.split('|')[0]} seed {spec.seed} has no finished run to copy (it "
                         "failed or was not logged); fix: re-run with --retry-failed once the partner trains")
    names = [EVENT_DEFORM, EVENT_NOISE, METRIC_NOISE_STD]
    h = metric_histories(uri, runs[0].info.run_id, names)
    noise = sorted(e for e, v in h[EVENT_NOISE].items() if v)
    events = {"deform": sorted(e for e, v in h[EVENT_DEFORM].items() if v), "noise": noise,
              "noise_std": [h[METRIC_NOISE_STD].get(e, 0.0) for e in noise]}
    method = spec.method.model_copy(update={"yoked_events": YokedEvents(**events)})
    return spec.model_copy(update={"method": method})
