"""Aggregates over seeds, on tiny hand-computed arrays."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from sal.sweeps.objectives import aggregate, cvar, lower_confidence_bound, mean, worst

SCORES = [0.90, 0.80, 0.95, 0.70]


def test_mean_and_worst_follow_the_direction():
    assert mean(SCORES) == pytest.approx(0.8375)
    assert worst(SCORES, maximize=True) == 0.70
    assert worst(SCORES, maximize=False) == 0.95


def test_cvar_is_the_mean_of_the_bad_tail():
    assert cvar(SCORES, maximize=True, alpha=0.5) == pytest.approx((0.70 + 0.80) / 2)
    assert cvar(SCORES, maximize=False, alpha=0.5) == pytest.approx((0.95 + 0.90) / 2)
    assert cvar(SCORES, alpha=0.01) == 0.70  # at least one score
    assert cvar(SCORES, alpha=1.0) == pytest.approx(mean(SCORES))


def test_lcb_is_the_end_of_the_t_interval():
    low, high = stats.t.interval(0.95, len(SCORES) - 1, loc=mean(SCORES), scale=stats.sem(SCORES))
    assert lower_confidence_bound(SCORES, maximize=True) == pytest.approx(low, abs=1e-12)
    assert lower_confidence_bound(SCORES, maximize=False) == pytest.approx(high, abs=1e-12)
    assert lower_confidence_bound([0.5]) == 0.5


def test_aggregate_dispatch_and_diverged_seeds():
    assert aggregate("worst", [0.5, -math.inf], maximize=True) == -math.inf
    assert aggregate("lcb", [1.0, -math.inf], maximize=True) == -math.inf
    with pytest.raises(ValueError):
        aggregate("mean", [], maximize=True)
