"""One scoring rule for studies, ablations, reports, findings and the Optuna queues (whose direction
optuna-dashboard shows): which way a metric is better, the range it lives in, and what a seed that
diverged scores.

A run that diverged (NaN/inf loss) is a failure of the method on that seed, not a missing value
(docs/statistics.md, "Diverged runs"): it keeps its place in every paired comparison and aggregate with the
worst score the metric can take, so divergence always counts against the method, in the direction the
metric is optimised.
"""

from __future__ import annotations

import math

from ..core.names import RESULT_STATUSES, STATUS_DIVERGED
from .instability import LOWER_IS_BETTER as LOWER_IS_BETTER_STABILITY

__all__ = ["direction", "higher_is_better", "bounds", "is_bounded_fraction", "is_cost", "rope_for", "worst_value",
           "score", "DIVERGED", "RESULT_STATUSES"]

DIVERGED = STATUS_DIVERGED  # train()'s status for a NaN/inf loss (also the MLflow tag sal.status)

_LOWER_IS_BETTER = ("loss", "time/", "mem/", "sharpness", "grad_norm", "infer", *LOWER_IS_BETTER_STABILITY)
# Scores that are fractions in [0, 1] by construction (the last part of the metric's name).
_FRACTIONS = ("acc", "top1", "top5", "f1", "precision", "recall", "auc", "auroc", "ap", "iou", "miou", "dice")


def direction(metric: str) -> str:
    """``maximize`` or ``minimize``: accuracies, F1 and other scores go up; losses, times, memory and
    sharpness go down. The one place that decides it (Optuna queues, objectives, verdicts, effect sizes)."""
    return "minimize" if any(s in metric for s in _LOWER_IS_BETTER) else "maximize"


def higher_is_better(metric: str) -> bool:
    return direction(metric) == "maximize"


def bounds(metric: str) -> tuple[float, float] | None:
    """The range the metric lives in: (0, 1) for fractions (accuracies, top-5, F1, ...), else None."""
    leaf = metric.rsplit("/", 1)[-1]
    return (0.0, 1.0) if leaf in _FRACTIONS or leaf.endswith("acc") else None


def rope_for(metric: str, rope: float) -> float:
    """The ROPE a contrast on ``metric`` uses: the plan's on fractions, none (0) on unbounded metrics, whose
    scale the plan's ROPE does not know (docs/statistics.md, "The verdict")."""
    return rope if is_bounded_fraction(metric) else 0.0


def is_bounded_fraction(metric: str) -> bool:
    """Fractions in [0, 1]: their intervals are clipped there and the ROPE applies to them."""
    return bounds(metric) is not None


def is_cost(metric: str) -> bool:
    """What a run spent rather than what it reached: a diverged run's time and memory are still real."""
    return metric.startswith(("time/", "mem/"))


def worst_value(metric: str) -> float:
    """The worst score the metric can take: the bad end of its bounds (0 for accuracies), else infinite."""
    b = bounds(metric)
    if b is not None:
        return b[0] if higher_is_better(metric) else b[1]
    return -math.inf if higher_is_better(metric) else math.inf


def score(value: float | None, *, status: str, metric: str) -> float:
    """A seed's score on ``metric``: the logged value, or the worst value when the run diverged.

    Cost metrics keep what was logged. A finished run without the metric stays NaN (missing, not bad).
    """
    if status == DIVERGED and not is_cost(metric):
        return worst_value(metric)
    return math.nan if value is None else float(value)
