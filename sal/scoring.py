"""One scoring rule for studies, ablations and reports: which way a metric is better, and what a seed
that diverged scores.

A run that diverged (NaN/inf loss) is a failure of the method on that seed, not a missing value
(reference/statistics.md): it keeps its place in every paired comparison and aggregate with the worst
score the metric can take, so divergence always counts against the method.
"""

from __future__ import annotations

import math

from .instability import LOWER_IS_BETTER as LOWER_IS_BETTER_STABILITY

__all__ = ["higher_is_better", "is_bounded_fraction", "is_cost", "worst_value", "score", "DIVERGED"]

DIVERGED = "diverged"  # train()'s status for a NaN/inf loss (also the MLflow tag sal.status)

_LOWER_IS_BETTER = ("loss", "time/", "mem/", "sharpness", "infer", *LOWER_IS_BETTER_STABILITY)


def higher_is_better(metric: str) -> bool:
    """Accuracies go up; losses, times, memory and sharpness go down."""
    return not any(s in metric for s in _LOWER_IS_BETTER)


def is_bounded_fraction(metric: str) -> bool:
    """Accuracies (top-1, top-5) are fractions in [0, 1]: their intervals are clipped there and the ROPE
    applies to them."""
    return metric.endswith("acc") or metric.endswith("top5")


def is_cost(metric: str) -> bool:
    """What a run spent rather than what it reached: a diverged run's time and memory are still real."""
    return metric.startswith(("time/", "mem/"))


def worst_value(metric: str) -> float:
    """The worst score the metric can take: 0 for accuracies, else the unbounded end."""
    if is_bounded_fraction(metric):
        return 0.0
    return -math.inf if higher_is_better(metric) else math.inf


def score(value: float | None, *, status: str, metric: str) -> float:
    """A seed's score on ``metric``: the logged value, or the worst value when the run diverged.

    Cost metrics keep what was logged. A finished run without the metric stays NaN (missing, not bad).
    """
    if status == DIVERGED and not is_cost(metric):
        return worst_value(metric)
    return math.nan if value is None else float(value)
