"""The hierarchical model across data sets: what it says on clear cases, what two data sets can say, its
direction rule, its determinism and its errors."""

from __future__ import annotations

import numpy as np
import pytest

from sal.stats.hierarchical import hierarchical_test

FAST = {"draws": 1500, "burn": 300}


def _sets(mean: float, sd: float, k: int, n: int = 10, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(mean, sd, n) for _ in range(k)]


def test_a_consistent_gain_on_eight_data_sets_is_better_on_a_new_one():
    worse, rope, better = hierarchical_test(_sets(0.02, 0.01, 8), rope=0.002, **FAST)
    assert better > 0.95 and worse < 0.03
    assert worse + rope + better == pytest.approx(1.0)


def test_no_effect_inside_a_wide_rope_is_practically_equivalent():
    worse, rope, better = hierarchical_test(_sets(0.0, 0.005, 8), rope=0.01, **FAST)
    assert rope > 0.9


def test_two_data_sets_that_disagree_leave_the_new_one_open():
    rng = np.random.default_rng(3)
    worse, rope, better = hierarchical_test([rng.normal(0.01, 0.01, 20), rng.normal(-0.01, 0.01, 20)], rope=0.002,
                                            **FAST)
    assert max(worse, better) < 0.75 and min(worse, better) > 0.25


def test_a_lower_is_better_metric_reads_the_other_way_and_a_seed_gives_the_same_answer():
    sets = _sets(0.02, 0.01, 6)
    up = hierarchical_test(sets, rope=0.002, **FAST)
    down = hierarchical_test(sets, rope=0.002, higher_is_better=False, **FAST)
    assert down == pytest.approx(up[::-1])
    assert hierarchical_test(sets, rope=0.002, **FAST) == up
    # the scale of the data does not change the answer (the model works on the data's mean sd)
    assert hierarchical_test([100 * x for x in sets], rope=0.2, **FAST) == pytest.approx(up, abs=0.03)


def test_data_sets_whose_seeds_tie_give_finite_probabilities():
    """Two seeds with equal accuracies (no spread), as in a smoke run: no division by zero."""
    for sets in ([np.zeros(2), np.zeros(2)], [np.full(3, 0.01), np.array([0.0, 0.01, 0.02])],
                 [np.full(2, 0.004), np.full(2, 0.004)],
                 [np.array([0.0, 0.0]), np.array([0.455, 0.471]) - np.array([0.485, 0.501])]):  # sd 4e-17: rounding
        probs = hierarchical_test(sets, rope=0.002, **FAST)
        assert all(np.isfinite(probs)) and sum(probs) == pytest.approx(1.0)


@pytest.mark.parametrize("sets", [[np.ones(5)], [np.ones(5), np.ones(1)]])
def test_too_little_data_is_refused(sets):
    with pytest.raises(ValueError, match="2 data sets"):
        hierarchical_test(sets, rope=0.0)


def test_the_cross_data_set_view_carries_the_hierarchical_posterior_and_none_for_a_diverged_loss():
    import math

    import pandas as pd

    from sal.spec.analysis import legacy_plan
    from sal.stats.summary import ReportOptions, across_datasets

    rng = np.random.default_rng(4)
    rows = []
    for dataset in ("a", "b", "c", "d"):
        adam = 0.8 + rng.normal(0, 0.01, 8)
        sal = adam + 0.02 + rng.normal(0, 0.004, 8)
        for seed in range(8):
            bad = dataset == "a" and seed == 0
            for method, v in (("adam", adam[seed]), ("sal", sal[seed])):
                loss = math.inf if bad and method == "sal" else 1 - v
                rows += [{"dataset": dataset, "context": "", "method": method, "seed": seed, "metric": "test/acc",
                          "value": v, "diverged": False},
                         {"dataset": dataset, "context": "", "method": method, "seed": seed, "metric": "test/loss",
                          "value": loss, "diverged": bad and method == "sal"}]
    tidy = pd.DataFrame(rows)
    opts = ReportOptions(plan=legacy_plan(["adam", "sal"], "adam", ["test/acc", "test/loss"]), n_boot=100)
    acc = across_datasets(tidy, opts, "test/acc")
    worse, rope, better = acc["hierarchical"]["sal vs adam"]
    assert better > 0.9 and worse + rope + better == pytest.approx(1.0)
    # the same call as sal.stats.hierarchical on the raw differences, seeded alike
    diffs = [g.pivot_table(index="seed", columns="method", values="value").pipe(lambda w: (w["sal"] - w["adam"]))
             .to_numpy() for _, g in tidy[tidy["metric"] == "test/acc"].groupby("dataset")]
    assert acc["hierarchical"]["sal vs adam"] == hierarchical_test(diffs, rope=opts.rope)
    assert across_datasets(tidy, opts, "test/loss")["hierarchical"] == {}
