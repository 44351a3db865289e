"""Statistics for paired, seeded comparisons: pure functions, arrays in, dicts out, seeded resampling.

The unit of analysis is the per-seed difference d_s = A(s) - B(s) (randomised blocks, block = seed).
See reference/statistics.md for the method; every function here is checked against scipy/statsmodels
or a published value in tests/test_stats.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower
from statsmodels.stats.proportion import proportion_confint

__all__ = [
    "describe", "paired", "cliffs_delta", "cliffs_magnitude", "p_outperform", "adjust", "verdict",
    "min_detectable_effect", "exact_p_floor", "too_few_seeds", "iqm", "aggregate_scores",
    "probability_of_improvement", "stratified_bootstrap_ci", "normalized_delta_across", "friedman",
    "nemenyi_cd",
]

Array = Sequence[float] | np.ndarray


def describe(values: Array, *, level: float = 0.95) -> dict[str, float]:
    """n, mean, sd (ddof 1) and the t-interval of the mean. values: (n,)."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    sd = float(x.std(ddof=1)) if n > 1 else math.nan
    if n > 1 and sd > 0:
        low, high = stats.t.interval(level, n - 1, loc=mean, scale=sd / math.sqrt(n))
    else:
        low = high = mean if n == 1 or sd == 0 else math.nan
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


def paired(a: Array, b: Array, *, level: float = 0.95, n_boot: int = 2000, random_state: int = 0) -> dict[str, float]:
    """Paired comparison of A against B over seeds (a[i], b[i] share seed i). a, b: (n,).

    delta = mean(d) with its t-interval (primary) and a seeded BCa bootstrap interval (secondary);
    p-values of the paired t-test and the exact Wilcoxon signed-rank test; Cohen's d_z = mean(d)/sd(d);
    Cliff's delta; win rate k/n (d > 0) with its Wilson interval; P(A > B); corr(A, B).
    """
    x, y = np.asarray(a, float), np.asarray(b, float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired() needs two equal-length 1-d arrays, got {x.shape} and {y.shape}")
    d = x - y
    n = len(d)
    desc = describe(d, level=level)
    out = {"n": n, "delta": desc["mean"], "delta_sd": desc["sd"], "delta_ci_low": desc["ci_low"],
           "delta_ci_high": desc["ci_high"]}
    if n > 1 and np.all(d == d[0]):  # no spread: the tests are undefined; a zero difference is no evidence
        out["p_ttest"] = 1.0 if d[0] == 0 else 0.0
        out["p_wilcoxon"] = 1.0 if d[0] == 0 else exact_p_floor(n)
    else:
        out["p_ttest"] = float(stats.ttest_rel(x, y).pvalue) if n > 1 else math.nan
        out["p_wilcoxon"] = float(stats.wilcoxon(x, y).pvalue) if n > 1 and np.any(d != 0) else math.nan
    out["boot_ci_low"], out["boot_ci_high"] = _bootstrap_mean_ci(d, level, n_boot, random_state)
    out["effect_dz"] = desc["mean"] / desc["sd"] if desc["sd"] and desc["sd"] > 0 else math.nan
    out["cliffs_delta"] = cliffs_delta(x, y)
    wins = int((d > 0).sum())
    out["wins"], out["ties"] = wins, int((d == 0).sum())
    out["win_rate"] = wins / n if n else math.nan
    low, high = proportion_confint(wins, n, alpha=1 - level, method="wilson") if n else (math.nan, math.nan)
    out["win_ci_low"], out["win_ci_high"] = float(low), float(high)
    out["p_outperform"] = p_outperform(x, y)
    out["corr"] = float(np.corrcoef(x, y)[0, 1]) if n > 2 and x.std() > 0 and y.std() > 0 else math.nan
    return out


def _bootstrap_mean_ci(d: np.ndarray, level: float, n_boot: int, random_state: int) -> tuple[float, float]:
    if len(d) < 3 or np.all(d == d[0]):
        return (math.nan, math.nan)
    res = stats.bootstrap((d,), np.mean, confidence_level=level, n_resamples=n_boot, method="BCa",
                          rng=np.random.default_rng(random_state))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def adjust(pvalues: Array, method: str = "holm") -> np.ndarray:
    """Multiplicity-adjusted p-values over one family (holm or bh); NaNs stay NaN and do not count."""
    p = np.asarray(pvalues, float)
    out = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method={"holm": "holm", "bh": "fdr_bh"}[method])[1]
    return out


def verdict(p_adjusted: float, ci_low: float, ci_high: float, *, rope: float, alpha: float = 0.05,
            higher_is_better: bool = True) -> str:
    """better/worse: adjusted p < alpha and the delta CI excludes 0; equivalent: the CI lies inside
    +-rope; inconclusive otherwise."""
    if any(math.isnan(v) for v in (ci_low, ci_high)):
        return "inconclusive"
    if not math.isnan(p_adjusted) and p_adjusted < alpha and (ci_low > 0 or ci_high < 0):
        up = ci_low > 0
        return "better" if up == higher_is_better else "worse"
    if rope > 0 and -rope < ci_low and ci_high < rope:
        return "equivalent"
    return "inconclusive"


def min_detectable_effect(n: int, sd_diff: float, *, alpha: float = 0.05, power: float = 0.8, m: int = 1) -> float:
    """Smallest mean difference a paired t-test on n seeds detects with the given power, at alpha/m
    (Holm's first step); in the units of sd_diff."""
    if n < 2 or not sd_diff or math.isnan(sd_diff):
        return math.nan
    dz = TTestPower().solve_power(effect_size=None, nobs=n, alpha=alpha / m, power=power, alternative="two-sided")
    return float(dz * sd_diff)


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


def aggregate_scores(scores: np.ndarray, *, gamma: float = 1.0) -> dict[str, float]:
    """scores: (runs, tasks). Mean (of task means), median, IQM (pooled) and optimality gap."""
    s = np.asarray(scores, float)
    return {"mean": float(s.mean(axis=0).mean()), "median": float(np.median(s)), "iqm": iqm(s),
            "optimality_gap": float(np.mean(gamma - np.minimum(s, gamma)))}


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """x: (runs_x, tasks), y: (runs_y, tasks). Mean over tasks of P(X > Y) + P(X = Y) / 2."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    return float(np.mean([p_outperform(x[:, t], y[:, t]) for t in range(x.shape[1])]))


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
                            n_boot: int = 2000, random_state: int = 0) -> dict[str, float]:
    """Across data sets: the mean over data sets of mean(d)/|mean(B)| with a stratified bootstrap
    interval (seeds resampled within each data set), and a Wilcoxon test over per-set mean deltas."""
    groups = [np.stack([np.asarray(a, float), np.asarray(b, float)], axis=1) for a, b in pairs.values()]

    def stat(gs):
        return float(np.mean([(g[:, 0] - g[:, 1]).mean() / abs(g[:, 1].mean()) for g in gs]))

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
