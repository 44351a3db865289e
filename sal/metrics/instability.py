"""How stable a run's validation curve was (the paper's degraded regime is a claim about stability, not
the final score), as final metrics a report compares like any other. Pure functions of the history."""

from __future__ import annotations

import math

__all__ = ["DEFAULT_TOLERANCE", "instability", "LOWER_IS_BETTER", "STABILITY_METRICS"]

# The epochs-below-best count needs a margin: the reports' default ROPE (0.2 points of accuracy).
DEFAULT_TOLERANCE = 0.002
STABILITY_METRICS = ("stability/max_drop", "stability/epochs_below_best", "stability/final_minus_best",
                     "stability/val_auc")
LOWER_IS_BETTER = STABILITY_METRICS[:2]


def instability(history: list[dict[str, float]], *, metric: str = "val/acc",
                tolerance: float = DEFAULT_TOLERANCE) -> dict[str, float]:
    """``stability/max_drop``: the largest fall below the running best; ``stability/epochs_below_best``:
    epochs more than ``tolerance`` below the running best; ``stability/final_minus_best``: last minus best
    (0 when the run ended at its best); ``stability/val_auc``: the mean of the curve (its area per epoch).
    Empty when the run has no such curve (no validation split) or it stopped being finite."""
    curve = [row.get(metric, math.nan) for row in history]
    if not curve or not all(math.isfinite(v) for v in curve):
        return {}
    best, drops = -math.inf, []
    for v in curve:
        best = max(best, v)
        drops.append(best - v)
    return {"stability/max_drop": max(drops), "stability/epochs_below_best": float(sum(d > tolerance for d in drops)),
            "stability/final_minus_best": curve[-1] - best, "stability/val_auc": sum(curve) / len(curve)}
