"""Group-sequential seeds (docs/statistics.md): Lan-DeMets O'Brien-Fleming-type boundaries, checked by
simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from sal.stats.inference import obrien_fleming_spending, sequential_alphas

LOOKS = [10, 15, 20, 25, 30, 35, 40]


def test_the_spent_alpha_adds_up_and_a_single_look_is_the_plain_test():
    times = [n / LOOKS[-1] for n in LOOKS]
    spent = np.diff([0.0] + [obrien_fleming_spending(t, 0.05) for t in times])
    assert spent.sum() == pytest.approx(0.05, abs=1e-12) and (spent > 0).all()
    assert sequential_alphas([40], 0.05, test="normal") == [pytest.approx(0.05)]
    assert sequential_alphas([40], 0.05) == [pytest.approx(0.05, abs=0.002)]
    # two equally spaced looks: the first spends alpha(0.5) = 2 - 2 Phi(1.96 / sqrt(0.5)) = 0.005575
    first, second = sequential_alphas([20, 40], 0.05, test="normal")
    assert first == pytest.approx(2 * sps.norm.sf(sps.norm.isf(0.025) / math.sqrt(0.5)), rel=1e-9)
    assert first < second < 0.05  # the final look pays for the earlier one


def test_the_boundaries_keep_the_brownian_motion_at_alpha():
    rng = np.random.default_rng(1)
    t = np.array(LOOKS) / LOOKS[-1]
    steps = rng.standard_normal((400_000, len(t))) * np.sqrt(np.diff(np.r_[0, t]))
    z = np.abs(np.cumsum(steps, axis=1) / np.sqrt(t))
    bounds = sps.norm.isf(np.array(sequential_alphas(LOOKS, 0.05, test="normal")) / 2)
    crossed = (z >= bounds).any(axis=1).mean()
    assert crossed == pytest.approx(0.05, abs=0.0015)  # Monte-Carlo error ~ 0.00035


def _sequential_paired_t(effect: float, sims: int, seed: int) -> tuple[float, float]:
    """Rejection rate and mean seeds used when looking at a paired t-test after each look of LOOKS."""
    rng = np.random.default_rng(seed)
    d = rng.normal(effect, 1.0, (sims, LOOKS[-1]))
    thresholds = sequential_alphas(LOOKS, 0.05)
    rejected = np.zeros(sims, bool)
    used = np.full(sims, LOOKS[-1])
    for n, threshold in zip(LOOKS, thresholds):
        x = d[:, :n]
        p = 2 * sps.t.sf(np.abs(x.mean(1) / (x.std(1, ddof=1) / math.sqrt(n))), n - 1)
        now = ~rejected & (p < threshold)
        used[now] = n
        rejected |= now
    return rejected.mean(), used.mean()


def test_paired_t_tests_under_no_effect_reject_at_most_alpha():
    # simulations independent of the calibration's (seed 0); the z boundaries would reject about 5.25%
    rate, seeds = _sequential_paired_t(0.0, sims=20_000, seed=2)
    assert rate <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / 20_000)
    assert seeds > 39  # almost every null run goes to the end


def test_under_a_real_effect_fewer_seeds_than_the_maximum_are_used():
    rate, seeds = _sequential_paired_t(0.6, sims=5_000, seed=3)
    assert rate > 0.95 and seeds < 0.7 * LOOKS[-1]


def test_bad_looks_are_refused():
    with pytest.raises(ValueError, match="increasing"):
        sequential_alphas([10, 10, 20], 0.05)
