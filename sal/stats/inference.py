"""Statistics for paired, seeded comparisons: pure functions, arrays in, dicts out, seeded resampling.

The unit of analysis is the per-seed difference d_s = A(s) - B(s) (randomised blocks, block = seed).
See docs/statistics.md for the method; every function here is checked against scipy/statsmodels
or a published value in tests/test_stats.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from scipy import stats
from statsmodels.stats.power import TTestPower
from statsmodels.stats.proportion import proportion_confint

__all__ = [
    "describe", "no_spread", "paired", "sign_flip_p", "exploratory", "cliffs_delta", "cliffs_magnitude",
    "p_outperform", "adjust", "verdict",
    "bayes_correlated_ttest", "expected_max_curve",
    "min_detectable_effect", "exact_p_floor", "too_few_seeds", "iqm",
    "stratified_bootstrap_ci", "normalized_delta_across", "friedman",
    "nemenyi_cd", "obrien_fleming_spending", "sequential_alphas",
    "sequential_alphas_normal",
]

Array = Sequence[float] | np.ndarray


def describe(values: Array, *, level: float = 0.95, bounds: tuple[float, float] | None = None) -> dict[str, float]:
    """n, mean, sd (ddof 1) and the t-interval of the mean. values: (n,).

    ``bounds``: the range the values live in (accuracies: (0, 1)); the interval is clipped to it. With no
    spread (or one value) the t-interval is undefined and left NaN, never a zero-width interval.
    """
    x = np.asarray(values, dtype=float)
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    sd = float(x.std(ddof=1)) if n > 1 else math.nan
    low = high = math.nan
    if n > 1 and sd > 0 and math.isfinite(sd):
        low, high = stats.t.interval(level, n - 1, loc=mean, scale=sd / math.sqrt(n))
        if bounds is not None:
            low, high = max(bounds[0], low), min(bounds[1], high)
    return {"n": n, "mean": mean, "sd": sd, "ci_low": float(low), "ci_high": float(high)}


def cliffs_delta(a: Array, b: Array) -> float:
    """(#(a_i > b_j) - #(a_i < b_j)) / (n_a n_b): the dominance of A over B, in [-1, 1]."""
    x, y = np.asarray(a, float)[:, None], np.asarray(b, float)[None, :]
    return float(((x > y).sum() - (x < y).sum()) / (x.size * y.size))


def cliffs_magnitude(delta: float) -> str:
    """Romano et al. thresholds: |d| < .147 negligible, < .33 small, < .474 medium, else large."""
    d = abs(delta)
    return "negligible" if d < 0.147 else "small" if d < 0.33 else "medium" if d < 0.474 else "large"


def p_outperform(a: Array, b: Array) -> float:
    """P(A > B) + P(A = B) / 2 over all pairs of runs (rliable's probability of improvement)."""
    x, y = np.asarray(a, float)[:, None], np.asarray(b, float)[None, :]
    return float(((x > y).sum() + 0.5 * (x == y).sum()) / (x.size * y.size))


def sign_flip_p(d: Array, *, n_exact: int = 16, n_resamples: int = 20000, random_state: int = 0) -> float:
    """Two-sided p of the paired sign-flip permutation test on the mean of d (scipy.stats.permutation_test,
    permutation_type='samples'): exact over all 2^n sign patterns up to n_exact pairs, else seeded Monte
    Carlo. All n differences of one sign give the floor 2/2^n; all zero give 1."""
    x = np.asarray(d, float)
    if len(x) == 0:
        return math.nan
    if not np.any(x != 0) or len(x) == 1:  # one pair: both sign patterns are as extreme
        return 1.0
    res = stats.permutation_test((x,), np.mean, permutation_type="samples", alternative="two-sided",
                                 n_resamples=np.inf if len(x) <= n_exact else n_resamples,
                                 rng=np.random.default_rng(random_state))
    return float(min(1.0, res.pvalue))


def no_spread(d: Array) -> bool:
    """True when every difference is the same (up to float rounding, e.g. 0.901 - 0.900 vs 0.851 - 0.850):
    the difference is then known exactly and t-tests and t-intervals are undefined."""
    x = np.asarray(d, float)
    if len(x) < 2 or not np.all(np.isfinite(x)):
        return False
    return float(np.ptp(x)) <= 1e-12 * max(1.0, float(np.abs(x).max()))


def paired(a: Array, b: Array, *, level: float = 0.95, n_boot: int = 2000, random_state: int = 0,
           bounds: tuple[float, float] | None = None, higher_is_better: bool = True) -> dict[str, float]:
    """Paired comparison of A against B over seeds (a[i], b[i] share seed i). a, b: (n,).

    delta = mean(d) with its t-interval (primary) and a seeded BCa bootstrap interval (secondary);
    p-values of the paired t-test, the exact sign-flip test and the exact Wilcoxon signed-rank test;
    Cohen's d_z = mean(d)/sd(d); Cliff's delta; win rate (ties count half) with its Wilson interval;
    P(A > B); corr(A, B). ``bounds``: the range of A and B (accuracies: (0, 1)), so delta's interval is
    clipped to the differences that can occur.

    delta, its intervals and d_z keep the metric's sign (A - B). Win rate, Cliff's delta and P(A > B) read
    "higher favours A" whatever the metric: with ``higher_is_better=False`` (a loss) a lower A is a win.

    When every seed differs by the same amount the t-test and t-interval are undefined: p_ttest and the
    interval are NaN, delta_sd is 0 and the sign-flip p (2/2^n for one sign) is the evidence
    (docs/statistics.md, "No spread").
    """
    x, y = np.asarray(a, float), np.asarray(b, float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired() needs two equal-length 1-d arrays, got {x.shape} and {y.shape}")
    d = np.where(x == y, 0.0, x - y)  # two seeds that both diverged on a loss (inf, inf) tie
    n = len(d)
    flat = no_spread(d)
    if flat:
        d = np.full(n, d.mean())  # float rounding is not spread
    delta_bounds = None if bounds is None else (bounds[0] - bounds[1], bounds[1] - bounds[0])
    desc = describe(d, level=level, bounds=delta_bounds)
    out = {"n": n, "delta": desc["mean"], "delta_sd": 0.0 if flat else desc["sd"],
           "delta_ci_low": math.nan if flat else desc["ci_low"], "delta_ci_high": math.nan if flat else desc["ci_high"]}
    spread = n > 1 and bool(np.all(np.isfinite(d))) and not flat
    out["p_ttest"] = float(stats.ttest_rel(x, y).pvalue) if spread else math.nan
    out["p_signflip"] = sign_flip_p(d, random_state=random_state) if np.all(np.isfinite(d)) else _sign_test_p(d)
    out["p_wilcoxon"] = float(stats.wilcoxon(x, y).pvalue) if n > 1 and np.any(d != 0) else (1.0 if n > 1 else
                                                                                             math.nan)
    out["boot_ci_low"], out["boot_ci_high"] = _bootstrap_mean_ci(d, level, n_boot, random_state)
    out["effect_dz"] = desc["mean"] / desc["sd"] if spread else math.nan
    good = d if higher_is_better else -d  # oriented: > 0 favours A
    fx, fy = (x, y) if higher_is_better else (y, x)
    out["cliffs_delta"] = cliffs_delta(fx, fy)
    wins, ties = int((good > 0).sum()), int((good == 0).sum())
    out["wins"], out["ties"] = wins, ties
    score = wins + 0.5 * ties  # a tie is half a win (docs/statistics.md)
    out["win_rate"] = score / n if n else math.nan
    low, high = proportion_confint(score, n, alpha=1 - level, method="wilson") if n else (math.nan, math.nan)
    out["win_ci_low"], out["win_ci_high"] = float(low), float(high)
    out["p_outperform"] = p_outperform(fx, fy)
    finite = np.all(np.isfinite(x)) and np.all(np.isfinite(y))
    out["corr"] = float(np.corrcoef(x, y)[0, 1]) if finite and n > 2 and x.std() > 0 and y.std() > 0 else math.nan
    return out


def _sign_test_p(d: np.ndarray) -> float:
    """Exact two-sided sign test: the sign-flip test when differences are infinite (a diverged run scored
    on a loss); zero differences are dropped as in a sign test."""
    nonzero = d[d != 0]
    if len(nonzero) == 0:
        return 1.0
    return float(stats.binomtest(int((nonzero > 0).sum()), len(nonzero)).pvalue)


def _bootstrap_mean_ci(d: np.ndarray, level: float, n_boot: int, random_state: int) -> tuple[float, float]:
    if len(d) < 3 or np.all(d == d[0]) or not np.all(np.isfinite(d)):
        return (math.nan, math.nan)
    res = stats.bootstrap((d,), np.mean, confidence_level=level, n_resamples=n_boot, method="BCa",
                          rng=np.random.default_rng(random_state))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def adjust(pvalues: Array, method: str = "holm", *, fill: Array | None = None) -> np.ndarray:
    """Multiplicity-adjusted p-values over one family (holm or bh). pvalues: (m,).

    The family's m is its declared contrasts, always (docs/statistics.md, "Families"): a contrast without a
    p-value (a t-test undefined with no spread or an infinite difference) takes its ``fill`` p (the test
    that decides it, e.g. the exact sign-flip) and its adjusted value is returned; with no fill it enters
    as p = 1 and stays NaN in the output. Dropping it would correct every other contrast over fewer tests.
    """
    p = np.asarray(pvalues, float)
    missing = np.isnan(p)
    filled = np.asarray(fill, float) if fill is not None else np.full_like(p, np.nan)
    p = np.where(missing, filled, p)
    unknown = np.isnan(p)
    if not len(p):
        return p
    out = _ADJUSTERS[method](np.where(unknown, 1.0, p))
    return np.where(unknown, np.nan, out)


# Not statsmodels' multipletests: its Holm runs a full gc.collect() on every call, which a report (one call
# per family and metric, per class, per look) pays for seconds in a process that holds torch and mlflow.
def _holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down: the i-th smallest p times (m - i + 1), made monotone, capped at 1."""
    order = np.argsort(p, kind="stable")
    m = len(p)
    stepped = np.minimum(1.0, np.maximum.accumulate(p[order] * np.arange(m, 0, -1)))
    out = np.empty(m)
    out[order] = stepped
    return out


def _bh(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg: the i-th smallest p times m / i, made monotone from the largest down, capped at 1."""
    order = np.argsort(p, kind="stable")
    m = len(p)
    stepped = np.minimum(1.0, np.minimum.accumulate((p[order] * m / np.arange(1, m + 1))[::-1])[::-1])
    out = np.empty(m)
    out[order] = stepped
    return out


_ADJUSTERS = {"holm": _holm, "bh": _bh}


SEEDS_FOR_T_ALONE = 10  # below this, a better/worse verdict also needs the exact sign-flip test
EXPLORATORY_MAX_SEEDS = 5  # verdicts on this many seeds or fewer are exploratory


def verdict(*, delta: float, ci_low: float, ci_high: float, p_ttest_adj: float, p_signflip_adj: float, n: int,
            rope: float, alpha: float = 0.05, higher_is_better: bool = True, sd: float = math.nan) -> str:
    """docs/statistics.md's verdict; the first rule that holds wins:

    1. ``equivalent``: the delta CI lies inside +-rope, whatever the p-value (a significant but
       negligible gain is not a gain). With no spread (``sd`` = 0 on n >= 2 seeds) the difference is
       known exactly: inside +-rope it is equivalent;
    2. ``better``/``worse``: the corrected t-test p < alpha and the whole CI lies beyond the ROPE (at or
       past +rope, or -rope: a gain must clear the ROPE, not only 0; with rope 0 this is "excludes 0"), and
       with fewer than SEEDS_FOR_T_ALONE seeds the corrected exact sign-flip p < alpha too. With zero-variance
       differences or an infinite one (no t-test, no interval) the corrected sign-flip (or sign) p decides,
       and the difference, known exactly, must be at least the ROPE;
    3. ``inconclusive`` otherwise (a significant difference whose interval reaches into the ROPE among them).
    """
    has_ci = math.isfinite(ci_low) and math.isfinite(ci_high)
    if rope > 0 and has_ci and -rope < ci_low and ci_high < rope:
        return "equivalent"
    if rope > 0 and n > 1 and sd == 0 and math.isfinite(delta) and abs(delta) < rope:
        return "equivalent"
    sign_flip_ok = not math.isnan(p_signflip_adj) and p_signflip_adj < alpha
    if has_ci and not math.isnan(p_ttest_adj):
        significant = p_ttest_adj < alpha and (ci_low > 0 or ci_high < 0)
        if n < SEEDS_FOR_T_ALONE:
            significant = significant and sign_flip_ok
        clears_rope = ci_low >= rope or ci_high <= -rope
    else:
        significant = sign_flip_ok and delta != 0 and not math.isnan(delta)
        clears_rope = abs(delta) >= rope
    if significant and clears_rope:
        return "better" if (delta > 0) == higher_is_better else "worse"
    return "inconclusive"


def exploratory(n: int) -> bool:
    """Verdicts on 5 seeds or fewer are exploratory (docs/statistics.md)."""
    return n <= EXPLORATORY_MAX_SEEDS


def bayes_correlated_ttest(d: Array, *, rope: float, rho: float = 0.0,
                           higher_is_better: bool = True) -> tuple[float, float, float]:
    """Posterior (P(worse), P(within the ROPE), P(better)) of the mean paired difference ``d`` (A - B) under
    the Bayesian correlated t-test (Corani & Benavoli 2015; Benavoli et al. 2017): a Student posterior with
    n - 1 degrees of freedom, location mean(d) and scale sd(d) * sqrt(1/n + rho / (1 - rho)). ``rho`` is the
    correlation between the differences: 0 for seeds trained independently (sal's case), 1/k for k-fold
    cross-validation. "Better" reads in the metric's direction; the three sum to 1.

    With no spread the posterior is a point at mean(d); with fewer than 2 seeds or a non-finite difference
    there is no posterior (NaN).
    """
    x = np.asarray(d, float)
    if not higher_is_better:
        x = -x
    n = len(x)
    if n < 2 or not np.all(np.isfinite(x)) or not 0.0 <= rho < 1.0:
        return (math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if no_spread(x):
        return (float(mean < -rope), float(-rope <= mean <= rope), float(mean > rope))
    scale = float(x.std(ddof=1)) * math.sqrt(1.0 / n + rho / (1.0 - rho))
    posterior = stats.t(df=n - 1, loc=mean, scale=scale)
    worse, below_top = float(posterior.cdf(-rope)), float(posterior.cdf(rope))
    return (worse, below_top - worse, 1.0 - below_top)


def _best_of_n_weights(n_values: int) -> np.ndarray:
    """w[n-1, i]: the chance that the i-th smallest of N values is the largest of n draws with replacement,
    (i/N)^n - ((i-1)/N)^n (Dodge et al. 2019), for n = 1..N."""
    i = np.arange(1, n_values + 1) / n_values
    n = np.arange(1, n_values + 1)[:, None]
    return i ** n - (i - 1 / n_values) ** n


def expected_max_curve(values: Array, *, higher_is_better: bool = True, other: Array | None = None) -> np.ndarray:
    """E[best of n] for n = 1..N trials drawn from the N observed ``values`` (Dodge et al. 2019, "Show your
    work": E[max of n] = sum_i v_(i) [(i/N)^n - ((i-1)/N)^n], v sorted ascending). With ``other`` (e.g. each
    trial's test score), the expected ``other`` of the trial that would be chosen at n instead. ``values``
    come in the order the trials ran: among tied values the earliest ranks highest, so the trial chosen at
    n is the one Optuna's ``best_trial`` picks (the first to reach the best value)."""
    v = np.asarray(values, float)
    order = np.lexsort((-np.arange(len(v)), v if higher_is_better else -v))  # ties: the later trial first
    picked = (v if other is None else np.asarray(other, float))[order]
    return _best_of_n_weights(len(v)) @ picked


def min_detectable_effect(n: int, sd_diff: float, *, alpha: float = 0.05, power: float = 0.8, m: int = 1) -> float:
    """Smallest mean difference a paired t-test on n seeds detects with the given power, at alpha/m
    (Holm's first step); in the units of sd_diff."""
    if n < 2 or not sd_diff or math.isnan(sd_diff):
        return math.nan
    return _detectable_dz(n, alpha / m, power) * float(sd_diff)


@lru_cache(maxsize=256)
def _detectable_dz(n: int, alpha: float, power: float) -> float:
    """The standardised effect (d_z) a two-sided paired t-test on n pairs detects; solved once per design,
    as a report asks the same n and alpha for every contrast of a family."""
    return float(TTestPower().solve_power(effect_size=None, nobs=n, alpha=alpha, power=power,
                                          alternative="two-sided"))


def exact_p_floor(n: int) -> float:
    """The smallest two-sided p an exact sign-flip or Wilcoxon test on n pairs can give: 2 / 2^n."""
    return 2.0 / 2**n


def too_few_seeds(n: int, *, alpha: float = 0.05, m: int = 1) -> bool:
    """True when even a unanimous result cannot survive the correction: 2/2^n > alpha/m."""
    return exact_p_floor(n) > alpha / m


# ------------------------------------------------------------------ across tasks (rliable style)


def iqm(values: Array) -> float:
    """Interquartile mean: the mean of the middle 50% (scipy.stats.trim_mean at 0.25)."""
    return float(stats.trim_mean(np.asarray(values, float).ravel(), 0.25))


def stratified_bootstrap_ci(groups: list[np.ndarray], statistic, *, level: float = 0.95, n_boot: int = 2000,
                            random_state: int = 0) -> tuple[float, float]:
    """Percentile interval of statistic(groups) when each group is resampled within itself (never
    across groups). groups: list of (n_g, ...) arrays, e.g. one per data set."""
    rng = np.random.default_rng(random_state)
    draws = np.empty(n_boot)
    for i in range(n_boot):
        draws[i] = statistic([g[rng.integers(0, len(g), len(g))] for g in groups])
    tail = (1 - level) / 2
    return float(np.quantile(draws, tail)), float(np.quantile(draws, 1 - tail))


def normalized_delta_across(pairs: dict[str, tuple[np.ndarray, np.ndarray]], *, level: float = 0.95,
                            n_boot: int = 2000, random_state: int = 0, relative: bool = True) -> dict[str, float]:
    """Across data sets: the mean over data sets of mean(d)/|mean(B)| (``relative``; or of mean(d) for
    scores already normalised per data set) with a stratified bootstrap interval (seeds resampled within
    each data set), and a Wilcoxon test over per-set mean deltas."""
    groups = [np.stack([np.asarray(a, float), np.asarray(b, float)], axis=1) for a, b in pairs.values()]

    def stat(gs):
        return float(np.mean([(g[:, 0] - g[:, 1]).mean() / (abs(g[:, 1].mean()) if relative else 1.0)
                              for g in gs]))

    low, high = stratified_bootstrap_ci(groups, stat, level=level, n_boot=n_boot, random_state=random_state)
    deltas = [float((g[:, 0] - g[:, 1]).mean()) for g in groups]
    p = float(stats.wilcoxon(deltas).pvalue) if len(deltas) > 1 and any(deltas) else math.nan
    return {"n_sets": len(groups), "norm_delta": stat(groups), "ci_low": low, "ci_high": high, "p_wilcoxon": p,
            "can_reject": len(groups) >= 6}


def friedman(scores: np.ndarray, *, higher_is_better: bool = True, alpha: float = 0.05) -> dict:
    """scores: (data sets, methods). Average ranks (1 = best), Friedman chi2 (no tie correction, as in
    Demsar 2006), the Iman-Davenport F and its p, and the Nemenyi critical difference."""
    s = np.asarray(scores, float)
    n, k = s.shape
    ranks = stats.rankdata(-s if higher_is_better else s, axis=1)
    avg = ranks.mean(axis=0)
    chi2 = 12 * n / (k * (k + 1)) * (np.sum(avg**2) - k * (k + 1) ** 2 / 4)
    ff = (n - 1) * chi2 / (n * (k - 1) - chi2)
    p_ff = float(stats.f.sf(ff, k - 1, (k - 1) * (n - 1)))
    return {"avg_ranks": avg, "chi2": float(chi2), "p_chi2": float(stats.chi2.sf(chi2, k - 1)), "ff": float(ff),
            "p_ff": p_ff, "cd": nemenyi_cd(k, n, alpha=alpha)}


def nemenyi_cd(k: int, n: int, *, alpha: float = 0.05) -> float:
    """Critical difference of average ranks: q_alpha sqrt(k (k + 1) / (6 n)), q from the studentized range."""
    q = stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
    return float(q * math.sqrt(k * (k + 1) / (6 * n)))


# ------------------------------------------------------------------ group-sequential looks (seeds until decided)


def obrien_fleming_spending(t: float, alpha: float) -> float:
    """Lan-DeMets alpha spent by information fraction t with the O'Brien-Fleming-type function
    alpha(t) = 2 - 2 Phi(z_{1-alpha/2} / sqrt(t))."""
    if t <= 0:
        return 0.0
    return float(2 - 2 * stats.norm.cdf(stats.norm.ppf(1 - alpha / 2) / math.sqrt(min(t, 1.0))))


def _crossing(boundary: float, grid: np.ndarray, weights: np.ndarray, sd: float) -> float:
    """P(|S_prev + N(0, sd^2)| >= boundary) over the previous look's continuation density (as weights)."""
    return float(np.sum(weights * (stats.norm.cdf((-boundary - grid) / sd) + stats.norm.sf((boundary - grid) / sd))))


def sequential_alphas(looks: list[int], alpha: float, *, test: str = "t", paths: int = 200_000,
                      random_state: int = 0) -> list[float]:
    """Nominal two-sided p thresholds, one per look, of a group-sequential design for the paired t-test.

    looks: the seed counts at which the paired comparison is looked at, increasing; the last is the
    maximum (information fraction t_k = looks[k] / looks[-1]). The alpha spent by look k follows Lan-DeMets
    with the O'Brien-Fleming-type function (obrien_fleming_spending); a look rejects when its p-value is
    below its threshold, and the probabilities of first rejecting at each look add up to ``alpha``.

    ``test="normal"``: the thresholds of z statistics (Brownian motion on the information scale), by
    recursive numerical integration (sequential_alphas_normal). With paired t-tests on few seeds these
    leak: estimating the variance afresh at each look loosens the dependence between looks, and 20,000
    simulated null sequences reject about 5.25% of the time at alpha = 5%. ``test="t"`` (the default)
    therefore solves the same spending on the joint null distribution of the paired t-test's p-values
    at the looks, from ``paths`` seeded simulations of normal differences (the t-test's p-values do not
    depend on the differences' mean or sd under the null): exact for the test the reports use.
    """
    if test == "normal":
        return sequential_alphas_normal(looks, alpha)
    _check_looks(looks, alpha)
    return list(_t_thresholds(tuple(looks), alpha, paths, random_state))


def _check_looks(looks: list[int], alpha: float) -> None:
    if not looks or any(b <= a for a, b in zip(looks, looks[1:])) or looks[0] < 2:
        raise ValueError(f"looks={looks} must be increasing seed counts of at least 2")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha} must be in (0, 1)")


@lru_cache(maxsize=32)
def _t_thresholds(looks: tuple[int, ...], alpha: float, paths: int, random_state: int) -> tuple[float, ...]:
    rng = np.random.default_rng(random_state)
    pvalues = []  # (paths, looks) p-values of the paired t-test on the first n differences of each path
    for size in [min(50_000, paths - i) for i in range(0, paths, 50_000)]:
        d = rng.standard_normal((size, looks[-1]))
        s1, s2 = np.cumsum(d, axis=1), np.cumsum(d * d, axis=1)
        cols = []
        for n in looks:
            mean = s1[:, n - 1] / n
            sd = np.sqrt(np.maximum(s2[:, n - 1] - n * mean**2, 1e-300) / (n - 1))
            cols.append(2 * stats.t.sf(np.abs(mean / (sd / math.sqrt(n))), n - 1))
        pvalues.append(np.stack(cols, axis=1))
    p = np.concatenate(pvalues)
    alive = np.ones(len(p), bool)
    thresholds, spent = [], 0.0
    for k, n in enumerate(looks):
        spend = obrien_fleming_spending(n / looks[-1], alpha) - spent
        spent += spend
        candidates = np.sort(p[alive, k])
        count = int(round(spend * len(p)))  # paths allowed to first cross here
        threshold = float(candidates[count]) if count < len(candidates) else 1.0
        thresholds.append(threshold)
        alive &= p[:, k] >= threshold
    return tuple(thresholds)


def sequential_alphas_normal(looks: list[int], alpha: float, *, grid: int = 2001) -> list[float]:
    """Nominal two-sided p thresholds, one per look, for z statistics.

    looks: the seed counts at which the paired comparison is looked at, increasing; the last is the
    maximum (information fraction t_k = looks[k] / looks[-1]). The alpha spent up to look k follows
    Lan-DeMets with the O'Brien-Fleming-type function; the boundary z_k of look k is solved so that the
    probability under no effect of first crossing at look k (and never before) is exactly the alpha spent
    there, on the joint distribution of the sequential z statistics (Brownian motion on the information
    scale, by the recursive numerical integration of Armitage, McPherson and Rowe). A look rejects when
    its p-value is below its threshold; the spent alphas add up to ``alpha``.
    """
    _check_looks(looks, alpha)
    thresholds, spent = [], 0.0
    points = weights = None  # the score S = Z sqrt(t) on the last continuation region, and its mass there
    prev_t = 0.0
    for n in looks:
        t = n / looks[-1]
        spend = obrien_fleming_spending(t, alpha) - spent
        spent += spend
        if points is None:
            boundary = stats.norm.isf(spend / 2) * math.sqrt(t)
        else:
            sd = math.sqrt(t - prev_t)
            low, high = 0.0, 12.0 * math.sqrt(t)
            for _ in range(80):  # bisection: the crossing probability falls as the boundary rises
                mid = (low + high) / 2
                low, high = (mid, high) if _crossing(mid, points, weights, sd) > spend else (low, mid)
            boundary = high
        new_points = np.linspace(-boundary, boundary, grid)
        step = new_points[1] - new_points[0]
        simpson = np.ones(grid)  # Simpson's rule weights (grid is odd)
        simpson[1:-1:2], simpson[2:-1:2] = 4, 2
        simpson *= step / 3
        if points is None:
            density = stats.norm.pdf(new_points / math.sqrt(t)) / math.sqrt(t)
        else:
            sd = math.sqrt(t - prev_t)
            density = (stats.norm.pdf((new_points[:, None] - points[None, :]) / sd) / sd) @ weights
        points, weights, prev_t = new_points, density * simpson, t
        thresholds.append(float(2 * stats.norm.sf(boundary / math.sqrt(t))))
    return thresholds
