"""sal.stats.inference against scipy/statsmodels and the public check values of docs/statistics.md."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from sal.stats import inference as stats

RNG = np.random.default_rng(20261123)


def test_describe_is_the_t_interval():
    x = RNG.normal(0.9, 0.01, size=7)
    d = stats.describe(x)
    low, high = sps.t.interval(0.95, 6, loc=x.mean(), scale=sps.sem(x))
    assert (d["n"], d["mean"], d["sd"]) == (7, pytest.approx(x.mean(), abs=1e-15), pytest.approx(x.std(ddof=1)))
    assert d["ci_low"] == pytest.approx(low, abs=1e-12) and d["ci_high"] == pytest.approx(high, abs=1e-12)


@pytest.mark.parametrize("n", [5, 8, 12])
def test_paired_matches_scipy_on_random_data(n):
    a, b = RNG.normal(0.90, 0.01, n), RNG.normal(0.895, 0.01, n)
    r = stats.paired(a, b)
    d = a - b
    assert r["delta"] == pytest.approx(d.mean(), abs=1e-12)
    low, high = sps.t.interval(0.95, n - 1, loc=d.mean(), scale=sps.sem(d))
    assert r["delta_ci_low"] == pytest.approx(low, abs=1e-9) and r["delta_ci_high"] == pytest.approx(high, abs=1e-9)
    assert r["p_ttest"] == pytest.approx(sps.ttest_rel(a, b).pvalue, abs=1e-9)
    assert r["p_wilcoxon"] == pytest.approx(sps.wilcoxon(a, b, method="exact").pvalue, abs=1e-9)
    assert r["effect_dz"] == pytest.approx(d.mean() / d.std(ddof=1), abs=1e-9)
    assert r["win_rate"] == (d > 0).sum() / n
    boot = sps.bootstrap((d,), np.mean, n_resamples=2000, method="BCa", rng=np.random.default_rng(0))
    assert r["boot_ci_low"] == pytest.approx(boot.confidence_interval.low, abs=1e-12)


def test_bootstrap_honours_random_state():
    a, b = RNG.normal(0, 1, 10), RNG.normal(0, 1, 10)
    assert stats.paired(a, b, random_state=3)["boot_ci_low"] == stats.paired(a, b, random_state=3)["boot_ci_low"]
    assert stats.paired(a, b, random_state=3)["boot_ci_low"] != stats.paired(a, b, random_state=4)["boot_ci_low"]


def test_holm_and_bh_match_derrac_2011_table_16():
    raw = [6e-6, 3.32e-4, 0.009823, 0.014171, 0.083642, 0.141093, 0.518605, 0.660706]
    assert stats.adjust(raw, "holm") == pytest.approx([0.000048, 0.002324, 0.058938, 0.070855, 0.334568,
                                                       0.423279, 1, 1], abs=1e-6)
    assert stats.adjust(raw, "bh") == pytest.approx([0.000048, 0.001328, 0.026195, 0.028342, 0.133827,
                                                     0.188124, 0.592691, 0.660706], abs=1e-6)


def test_holm_matches_statsmodels_on_random_unsorted_pvalues_and_keeps_nan_in_m():
    p = RNG.uniform(0, 0.2, 9)
    assert stats.adjust(p) == pytest.approx(multipletests(p, method="holm")[1], abs=1e-12)
    # a contrast without a p-value still counts in m (docs/statistics.md, "Families"): it enters as p = 1
    with_nan = np.array([0.01, np.nan, 0.04])
    out = stats.adjust(with_nan)
    assert math.isnan(out[1]) and out[[0, 2]] == pytest.approx(multipletests([0.01, 1.0, 0.04],
                                                                             method="holm")[1][[0, 2]])


@pytest.mark.parametrize("method, theirs", [("holm", "holm"), ("bh", "fdr_bh")])
def test_adjust_matches_statsmodels_with_ties_and_large_families(method, theirs):
    for m in (1, 2, 7, 40):
        p = np.round(RNG.uniform(0, 0.3, m), 2)  # rounded: ties in p
        assert stats.adjust(p, method) == pytest.approx(multipletests(p, method=theirs)[1], abs=1e-12)


def test_iqm_is_the_mean_of_the_middle_half():
    assert stats.iqm(range(1, 11)) == 5.5 and stats.iqm([0, 1, 2, 3, 100]) == 2.0


DEMSAR = np.array([
    [0.763, 0.599, 0.954, 0.628, 0.882, 0.936, 0.661, 0.583, 0.775, 1.0, 0.94, 0.619, 0.972, 0.957],
    [0.768, 0.591, 0.971, 0.661, 0.888, 0.931, 0.668, 0.583, 0.838, 1.0, 0.962, 0.666, 0.981, 0.978],
    [0.771, 0.590, 0.968, 0.654, 0.886, 0.916, 0.609, 0.563, 0.866, 1.0, 0.965, 0.614, 0.9751, 0.946],
    [0.798, 0.569, 0.967, 0.657, 0.898, 0.931, 0.685, 0.625, 0.875, 1.0, 0.962, 0.669, 0.975, 0.970],
]).T  # (14 data sets, 4 methods): C4.5, C4.5+m, C4.5+cf, C4.5+m+cf


def test_friedman_iman_davenport_and_nemenyi_match_demsar_2006():
    f = stats.friedman(DEMSAR)
    assert f["avg_ranks"] == pytest.approx([3.142857, 2.000000, 2.892857, 1.964286], abs=1e-6)
    assert f["chi2"] == pytest.approx(9.278571, abs=1e-6)
    assert f["ff"] == pytest.approx(3.686313, abs=1e-6)
    assert f["cd"] == pytest.approx(1.253551, abs=1e-5)
    assert sps.friedmanchisquare(*DEMSAR.T).statistic == pytest.approx(10.228346, abs=1e-6)  # tie-corrected


def test_wilcoxon_rank_sums_match_demsar():
    d = DEMSAR[:, 1] - DEMSAR[:, 0]
    # Demsar splits the one zero difference's rank between R+ and R-: R+ = 93, R- = 12
    ranks_all = sps.rankdata(np.abs(d))
    r_plus = ranks_all[d > 0].sum() + ranks_all[d == 0].sum() / 2
    r_minus = ranks_all[d < 0].sum() + ranks_all[d == 0].sum() / 2
    assert (r_plus, r_minus) == (93, 12)


def test_cliffs_delta_and_magnitudes():
    assert stats.cliffs_delta([3, 4], [1, 2]) == 1.0
    assert stats.cliffs_delta([1, 2], [1, 2]) == 0.0
    assert stats.cliffs_delta([1, 3], [2, 2]) == 0.0
    assert [stats.cliffs_magnitude(v) for v in (0.1, -0.2, 0.4, 0.5)] == ["negligible", "small", "medium", "large"]


def _verdict(p: dict, *, rope: float = 0.002, flip: bool = False, **kw) -> str:
    """stats.verdict on one paired() result, uncorrected (a family of one); flip mirrors the delta."""
    sign = -1 if flip else 1
    low, high = sorted((sign * p["delta_ci_low"], sign * p["delta_ci_high"]))
    return stats.verdict(delta=sign * p["delta"], ci_low=low, ci_high=high, p_ttest_adj=p["p_ttest"],
                         p_signflip_adj=p["p_signflip"], n=p["n"], rope=rope, **kw)


def test_verdicts_follow_their_definition():
    a = 0.90 + np.linspace(0, 0.002, 10)
    win = stats.paired(a + 0.01 + RNG.normal(0, 0.001, 10), a)  # clear win
    assert _verdict(win) == "better" and _verdict(win, flip=True) == "worse"
    same = stats.paired(a + RNG.normal(0, 0.0003, 10), a)  # inside +-0.2 points
    assert _verdict(same) == "equivalent"
    noisy = stats.paired(a + RNG.normal(0.001, 0.01, 10), a)
    assert _verdict(noisy) == "inconclusive"
    # lower is better (a loss): a significant drop is "better"
    assert _verdict(stats.paired(a - 0.3 + RNG.normal(0, 0.01, 10), a), rope=0.0, higher_is_better=False) == "better"


def test_equivalence_is_checked_before_significance():
    # +0.05 points with a tight CI inside the ROPE: significant, and negligible. Old main called it "better".
    base = 0.90 + np.linspace(-0.004, 0.004, 12)
    tiny_win = stats.paired(base + 0.0005 + RNG.normal(0, 0.0001, 12), base)
    assert tiny_win["p_ttest"] < 1e-6 and 0 < tiny_win["delta_ci_low"] and tiny_win["delta_ci_high"] < 0.002
    assert _verdict(tiny_win) == "equivalent"


def test_zero_variance_differences_have_no_t_test_and_the_sign_flip_decides():
    base = np.array([0.91, 0.93])
    r = stats.paired(base + 0.01, base)  # every seed +1 point: old main gave p_ttest = 0 and "better" on 2 seeds
    assert math.isnan(r["p_ttest"]) and math.isnan(r["delta_ci_low"]) and math.isnan(r["delta_ci_high"])
    assert r["p_signflip"] == pytest.approx(2 / 2**2)
    assert _verdict(r) == "inconclusive"
    eight = stats.paired(np.full(8, 0.95), np.full(8, 0.94))
    assert eight["p_signflip"] == pytest.approx(2 / 2**8) and _verdict(eight) == "better"
    tied = stats.paired(np.full(6, 0.9), np.full(6, 0.9))
    assert tied["p_signflip"] == 1.0 and tied["win_rate"] == 0.5 and _verdict(tied) == "inconclusive"


def test_small_samples_need_the_sign_flip_test_too():
    # 6 seeds, 5 clear wins and one small loss: the t-test is significant, the exact sign-flip test is not.
    d = np.array([0.010, 0.011, 0.012, 0.009, 0.013, -0.001])
    base = np.full(6, 0.9)
    r = stats.paired(base + d, base)
    assert r["p_ttest"] < 0.05 and r["p_signflip"] > 0.05
    assert _verdict(r) == "inconclusive"


def test_sign_flip_p_is_scipys_exact_permutation_test():
    d = RNG.normal(0.002, 0.01, 9)
    exact = sps.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=np.inf).pvalue
    assert stats.sign_flip_p(d) == pytest.approx(exact, abs=1e-12)
    # by hand: 4 pairs, all positive -> 2 of 16 sign patterns are as extreme
    assert stats.sign_flip_p([0.1, 0.2, 0.3, 0.4]) == pytest.approx(2 / 16)


def test_win_rate_counts_ties_as_half_and_accuracy_intervals_stay_in_range():
    r = stats.paired([0.9, 0.8, 0.7, 0.6], [0.8, 0.8, 0.8, 0.8])
    assert r["win_rate"] == pytest.approx((1 + 0.5) / 4)
    near_one = stats.describe([1.0, 0.999, 1.0, 0.97], bounds=(0.0, 1.0))
    assert near_one["ci_high"] == 1.0 and near_one["ci_low"] >= 0.0
    assert stats.describe([1.0, 0.999, 1.0, 0.97])["ci_high"] > 1.0  # unclipped, it would leave [0, 1]


def test_exploratory_up_to_five_seeds():
    assert stats.exploratory(2) and stats.exploratory(5) and not stats.exploratory(6)


def test_small_n_facts():
    assert stats.exact_p_floor(5) == 0.0625
    assert stats.too_few_seeds(5) and not stats.too_few_seeds(6)
    assert stats.too_few_seeds(7, m=5) and not stats.too_few_seeds(8, m=5)
    assert stats.too_few_seeds(9, m=20) and not stats.too_few_seeds(10, m=20)
    # statistics.md: seeds to detect 0.5 points at power 0.8 with a per-method seed sd of 0.2 / 0.3 / 0.5
    # (independent runs: sd of the difference = sqrt(2) sd) are 5 / 8 / 18, and 8 / 12 / 27 under Holm
    # over 5 comparisons.
    def seeds_needed(sd, m):
        n = 2
        while stats.min_detectable_effect(n, math.sqrt(2) * sd, m=m) > 0.5:
            n += 1
        return n

    assert [seeds_needed(sd, 1) for sd in (0.2, 0.3, 0.5)] == [5, 8, 18]
    assert [seeds_needed(sd, 5) for sd in (0.2, 0.3, 0.5)] == [8, 12, 27]


def test_normalized_delta_across_sets_resamples_within_sets():
    pairs = {f"set{i}": (RNG.normal(0.91, 0.01, 8), RNG.normal(0.90, 0.01, 8)) for i in range(6)}
    out = stats.normalized_delta_across(pairs, random_state=1)
    expected = np.mean([(a - b).mean() / b.mean() for a, b in pairs.values()])
    assert out["norm_delta"] == pytest.approx(expected)
    assert out["ci_low"] < out["norm_delta"] < out["ci_high"] and out["can_reject"]
    assert out == stats.normalized_delta_across(pairs, random_state=1)


# Fixed vectors and baycomp 1.0.3's CorrelatedTTest.probs(x, y, rope, runs) on them (computed once with
# baycomp; runs r means correlation rho = r / n there): (P(left), P(rope), P(right)) of y - x.
BAYES_X = [0.899, 0.905, 0.906, 0.901, 0.902, 0.898, 0.896, 0.896, 0.896, 0.904]
BAYES_Y = [0.903, 0.91, 0.907, 0.9, 0.9, 0.898, 0.903, 0.9, 0.898, 0.907]
BAYCOMP = [(0.002, 0.1, (0.004567478307992721, 0.4067915317966786, 0.5886409898953286)),
           (0.002, 0.2, (0.015144525836533234, 0.41574577194762696, 0.5691097022158398)),
           (0.001, 0.5, (0.14754889755318681, 0.18833206688005288, 0.6641190355667603)),
           (0.01, 0.1, (2.839094058843124e-06, 0.9998855532057057, 0.00011160770023543876))]


@pytest.mark.parametrize("rope,rho,expected", BAYCOMP)
def test_the_bayesian_correlated_ttest_matches_baycomp(rope, rho, expected):
    d = np.subtract(BAYES_Y, BAYES_X)
    assert stats.bayes_correlated_ttest(d, rope=rope, rho=rho) == pytest.approx(expected, abs=1e-9)


def test_independent_seeds_take_correlation_zero_and_a_loss_reads_lower_as_better():
    d = np.subtract(BAYES_Y, BAYES_X)
    posterior = sps.t(df=9, loc=d.mean(), scale=d.std(ddof=1) / np.sqrt(10))
    worse, rope, better = stats.bayes_correlated_ttest(d, rope=0.002)
    assert (worse, better) == (pytest.approx(posterior.cdf(-0.002)), pytest.approx(posterior.sf(0.002)))
    assert worse + rope + better == pytest.approx(1.0)
    assert stats.bayes_correlated_ttest(-d, rope=0.002, higher_is_better=False) == pytest.approx((worse, rope, better))
    assert stats.bayes_correlated_ttest([0.001] * 10, rope=0.002) == (0.0, 1.0, 0.0)  # no spread: known exactly
    assert all(math.isnan(v) for v in stats.bayes_correlated_ttest([0.1], rope=0.002))
    assert all(math.isnan(v) for v in stats.bayes_correlated_ttest([np.inf, 0.1], rope=0.002))


def test_expected_max_of_n_trials_matches_brute_force_enumeration():
    import itertools

    val, test = np.array([0.70, 0.90, 0.80, 0.85]), np.array([0.60, 0.88, 0.81, 0.79])
    curve = stats.expected_max_curve(val)
    chosen = stats.expected_max_curve(val, other=test)
    for n in range(1, 5):  # every ordered draw of n trials with replacement, equally likely
        draws = list(itertools.product(range(4), repeat=n))
        assert curve[n - 1] == pytest.approx(np.mean([val[list(d)].max() for d in draws]))
        assert chosen[n - 1] == pytest.approx(np.mean([test[max(d, key=lambda i: val[i])] for d in draws]))
    assert curve[0] == pytest.approx(val.mean()) and curve[-1] < val.max()  # one trial: the mean
    loss = stats.expected_max_curve(-val, higher_is_better=False)  # best = lowest
    assert loss == pytest.approx(-curve)


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_the_trial_chosen_at_n_is_the_one_optunas_best_trial_picks_among_ties(direction):
    """Among tied values Optuna's best_trial keeps the first trial that reached the best value; the expected
    test score of the trial chosen at n must weight that one (a real in-memory study per draw)."""
    import itertools

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    val, test = np.array([0.80, 0.90, 0.70, 0.90]), np.array([0.10, 0.20, 0.30, 0.40])  # trials 1 and 3 tie
    chosen = stats.expected_max_curve(val, higher_is_better=direction == "maximize", other=test)
    for n in range(1, 4):
        picked = []
        for draw in itertools.product(range(len(val)), repeat=n):  # every ordered draw, equally likely
            study = optuna.create_study(direction=direction)
            for i in sorted(draw):  # the drawn trials in the order they ran
                study.add_trial(optuna.trial.create_trial(value=float(val[i]), user_attrs={"test": float(test[i])}))
            picked.append(study.best_trial.user_attrs["test"])
        assert chosen[n - 1] == pytest.approx(np.mean(picked), abs=1e-12)
