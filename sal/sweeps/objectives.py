"""Aggregates of one trial's per-seed scores into the value Optuna optimises.

Pure functions: scores in, float out. ``maximize`` says which way is better, so every pessimistic
aggregate looks at the bad tail (Ustun et al. 2024: tune for the worst near-optimal model, not the
average one).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy import stats

__all__ = ["mean", "worst", "cvar", "lower_confidence_bound", "aggregate", "trial_value", "AGGREGATES"]


def mean(scores: Sequence[float], *, maximize: bool = True) -> float:
    return sum(scores) / len(scores)


def worst(scores: Sequence[float], *, maximize: bool = True) -> float:
    return min(scores) if maximize else max(scores)


def cvar(scores: Sequence[float], *, maximize: bool = True, alpha: float = 0.25) -> float:
    """Mean of the worst ceil(alpha * n) scores (conditional value at risk at level alpha)."""
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha={alpha} must be in (0, 1]")
    k = max(1, math.ceil(alpha * len(scores)))
    tail = sorted(scores, reverse=not maximize)[:k]
    return sum(tail) / k


def lower_confidence_bound(scores: Sequence[float], *, maximize: bool = True, level: float = 0.95) -> float:
    """The pessimistic end of the two-sided t-interval of the mean (upper end when minimising).

    One seed has no spread: its score is returned unchanged.
    """
    n = len(scores)
    m = mean(scores)
    if n < 2 or any(math.isinf(s) for s in scores):
        return m
    sd = stats.tstd(scores)
    half = stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return m - half if maximize else m + half


AGGREGATES = {"mean": mean, "worst": worst, "cvar": cvar, "lcb": lower_confidence_bound}


def aggregate(name: str, scores: Sequence[float], *, maximize: bool, alpha: float = 0.25) -> float:
    if not scores:
        raise ValueError("no scores to aggregate")
    if name == "cvar":
        return cvar(scores, maximize=maximize, alpha=alpha)
    return AGGREGATES[name](scores, maximize=maximize)


def trial_value(name: str, scores: Sequence[float], diverged: Sequence[bool], *, metric: str, maximize: bool,
                alpha: float = 0.25) -> float:
    """The value Optuna ranks a multi-seed trial by.

    ``scores`` already carry the diverged seeds' worst scores (sal.metrics.scoring.score). A trial whose every seed
    diverged trained nothing: it gets the infinitely bad value, so it never ranks above a trial with a
    trained seed.

    The value is a ranking score, not an accuracy: a pessimistic aggregate (the LCB of a wide spread) may
    leave the metric's range, and it is never clipped back into it. Clipping to [0, 1] made trials tie at 0,
    and Optuna then kept the first completed one, even one with 2 of 3 seeds diverged (docs/statistics.md,
    "Tuning objective").
    """
    if diverged and all(diverged):
        return -math.inf if maximize else math.inf
    return aggregate(name, scores, maximize=maximize, alpha=alpha)
