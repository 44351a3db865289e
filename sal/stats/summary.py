"""From scored runs to the report's tables: one summary row per (dataset, context, metric, contrast) of
the analysis plan, paired on seed, corrected within each family, with docs/statistics.md's verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..metrics.scoring import bounds, higher_is_better, rope_for
from ..spec.analysis import Plan
from ..spec.config import SpecError
from . import inference as stats
from .hierarchical import PRIOR_DOMINATED_BELOW, SIGMA0_BOUND, SIGMA0_BOUNDS, prior_sensitivity

__all__ = ["ReportOptions", "summarize", "across_datasets", "family_sizes", "SUMMARY_COLUMNS", "BLOCK",
           "bounds_of", "hierarchical_table", "HIERARCHICAL_COLUMNS"]

SUMMARY_COLUMNS = ["dataset", "context", "metric", "family", "treatment", "method", "baseline", "n", "n_diverged",
                   "diverged_seeds", "mean", "sd", "ci_low", "ci_high", "delta", "delta_ci_low", "delta_ci_high",
                   "boot_ci_low", "boot_ci_high", "p_ttest", "p_signflip", "p_wilcoxon", "correction", "p_adj",
                   "p_signflip_adj", "p_wilcoxon_adj", "p_holm", "p_signflip_holm", "p_wilcoxon_holm", "effect_dz",
                   "cliffs_delta", "cliffs_magnitude", "win_rate", "win_ci_low", "win_ci_high", "p_outperform", "corr",
                   "bayes_p_worse", "bayes_p_rope", "bayes_p_better", "rope", "mde", "exploratory", "unpaired_seeds",
                   "verdict"]
BLOCK = ["dataset", "context", "metric"]
FAMILY_MODES = ("plan", "metric", "dataset")


@dataclass
class ReportOptions:
    plan: Plan
    family: str = "plan"  # plan: Holm within each declared family (and metric) across data sets and contexts;
    #                       metric: every contrast of a metric; dataset: per (dataset, context, metric)
    allow_unpaired: bool = False
    n_boot: int = 2000
    random_state: int = 0
    level: float = 0.95  # of every interval; a sequential look uses 1 - its nominal alpha (repeated CIs)

    @property
    def metrics(self) -> list[str]:
        return self.plan.metrics

    @property
    def alpha(self) -> float:
        return self.plan.alpha

    @property
    def rope(self) -> float:
        return self.plan.rope

    @property
    def correction(self) -> str:
        return self.plan.correction

    @property
    def reference(self) -> str | None:
        """The cell figures pair against: the baseline of the plan's first contrast (None: no contrast)."""
        return self.plan.contrasts[0].baseline if self.plan.contrasts else None


def bounds_of(metric: str) -> tuple[float, float] | None:
    return bounds(metric)


def _check_pairs(wide: pd.DataFrame, cells: list[str], block: tuple, allow_unpaired: bool) -> None:
    missing = {m: sorted(int(s) for s in wide.index[wide[m].isna()]) for m in cells}
    missing = {m: s for m, s in missing.items() if s}
    if missing and not allow_unpaired:
        where = "/".join(str(b) for b in block if b)
        detail = "; ".join(f"{m} has no value for seed(s) {', '.join(map(str, s))}" for m, s in missing.items())
        raise SpecError([f"{where}: seeds do not pair ({detail}); these runs crashed or are missing (a diverged "
                         "run counts, with the worst score); fix: re-run them (sal ablate FILE --retry-failed), "
                         "or pass --allow-unpaired to compare on common seeds"])


def _describe_row(block: tuple, cell: str, wide: pd.DataFrame, diverged: pd.DataFrame, level: float) -> dict:
    dataset, context, metric = block
    seeds = sorted(int(s) for s in diverged.index[diverged[cell].fillna(False).astype(bool)]) \
        if cell in diverged else []
    return {"dataset": dataset, "context": context, "metric": metric, "method": cell,
            **stats.describe(wide[cell].dropna(), level=level, bounds=bounds_of(metric)),
            "n_diverged": len(seeds), "diverged_seeds": ",".join(map(str, seeds))}


def summarize(tidy: pd.DataFrame, opts: ReportOptions) -> pd.DataFrame:
    """The summary table: one row per (dataset, context, metric, contrast) of the plan, plus a
    ``reference`` row for each cell that is never the first of a contrast there (its own mean and CI)."""
    rows = []
    for block, g in tidy.groupby(BLOCK, sort=True):
        metric = block[2]
        wide = g.pivot_table(index="seed", columns="method", values="value", aggfunc="first", dropna=False)
        wide = wide.reindex(sorted(set(g["seed"])))
        diverged = g.pivot_table(index="seed", columns="method", values="diverged", aggfunc="first")
        contrasts = [c for c in opts.plan.contrasts if c.method in wide and c.baseline in wide]
        _check_pairs(wide, sorted({x for c in contrasts for x in (c.method, c.baseline)}), block, opts.allow_unpaired)
        for c in contrasts:
            # With --allow-unpaired a row's mean and CI are over the same (common) seeds as its n and delta.
            pair = wide[[c.method, c.baseline]].dropna()
            row = {**_describe_row(block, c.method, wide.loc[pair.index], diverged, opts.level),
                   "baseline": c.baseline, "family": c.family, "treatment": opts.plan.treatment}
            p = stats.paired(pair[c.method], pair[c.baseline], level=opts.level, n_boot=opts.n_boot,
                             random_state=opts.random_state, bounds=bounds_of(metric),
                             higher_is_better=higher_is_better(metric))
            row.update({k: p[k] for k in ("n", "delta", "delta_ci_low", "delta_ci_high", "boot_ci_low",
                                          "boot_ci_high", "p_ttest", "p_signflip", "p_wilcoxon", "effect_dz",
                                          "cliffs_delta", "win_rate", "win_ci_low", "win_ci_high", "p_outperform",
                                          "corr")})
            row["cliffs_magnitude"] = stats.cliffs_magnitude(p["cliffs_delta"])
            # the Bayesian second opinion on the same differences and ROPE (docs/statistics.md, "Second opinions")
            rope = rope_for(metric, opts.rope)
            row["rope"] = rope  # the ROPE the verdict and the posterior used (none for unbounded metrics)
            row["bayes_p_worse"], row["bayes_p_rope"], row["bayes_p_better"] = stats.bayes_correlated_ttest(
                (pair[c.method] - pair[c.baseline]).to_numpy(), rope=rope, higher_is_better=higher_is_better(metric))
            row["exploratory"] = stats.exploratory(p["n"])
            row["_sd_diff"] = p["delta_sd"]
            row["unpaired_seeds"] = ",".join(str(int(s)) for s in wide.index.difference(pair.index))
            rows.append(row)
        firsts = {c.method for c in contrasts}
        for cell in sorted(set(wide.columns) - firsts):
            rows.append({**_describe_row(block, cell, wide, diverged, opts.level), "verdict": "reference",
                         "treatment": opts.plan.treatment})
    summary = pd.DataFrame(rows)
    _adjust(summary, opts)
    return summary.reindex(columns=SUMMARY_COLUMNS)


def _family_keys(opts: ReportOptions) -> list[str]:
    return {"plan": ["family", "metric"], "metric": ["metric"], "dataset": BLOCK}[opts.family]


def _adjust(summary: pd.DataFrame, opts: ReportOptions) -> None:
    """Holm (or BH) within each family; then the minimum detectable effect and the verdict.

    Every declared contrast counts in its family's m (docs/statistics.md, "Families"): one without a t p-value
    (no spread, an infinite difference) enters the t-test family with the p of the test that decides it,
    the exact sign-flip (or sign) test. The adjusted values sit in ``p_adj`` (``correction`` names the
    method); ``p_holm`` and its siblings hold them only when the correction is Holm's.
    """
    for col in ("p_adj", "p_signflip_adj", "p_wilcoxon_adj", "mde"):
        summary[col] = np.nan
    summary["correction"] = None
    if "verdict" not in summary:
        summary["verdict"] = None
    compared = summary["verdict"] != "reference"
    for _, idx in summary[compared].groupby(_family_keys(opts)).groups.items():
        summary.loc[idx, "correction"] = opts.correction
        summary.loc[idx, "p_adj"] = stats.adjust(summary.loc[idx, "p_ttest"], opts.correction,
                                                 fill=summary.loc[idx, "p_signflip"])
        for raw, adjusted in (("p_signflip", "p_signflip_adj"), ("p_wilcoxon", "p_wilcoxon_adj")):
            summary.loc[idx, adjusted] = stats.adjust(summary.loc[idx, raw], opts.correction)
        m = len(idx)
        for i in idx:
            r = summary.loc[i]
            summary.loc[i, "mde"] = stats.min_detectable_effect(int(r["n"]), r["_sd_diff"], alpha=opts.alpha, m=m)
            summary.loc[i, "verdict"] = stats.verdict(
                delta=r["delta"], ci_low=r["delta_ci_low"], ci_high=r["delta_ci_high"],
                p_ttest_adj=summary.loc[i, "p_adj"] if math.isfinite(r["delta_ci_low"]) else math.nan,
                p_signflip_adj=summary.loc[i, "p_signflip_adj"], n=int(r["n"]),
                rope=rope_for(r["metric"], opts.rope), alpha=opts.alpha,
                higher_is_better=higher_is_better(r["metric"]), sd=r["_sd_diff"])
    holm = opts.correction == "holm"
    for adjusted, named in (("p_adj", "p_holm"), ("p_signflip_adj", "p_signflip_holm"),
                            ("p_wilcoxon_adj", "p_wilcoxon_holm")):
        summary[named] = summary[adjusted] if holm else np.nan


def family_sizes(summary: pd.DataFrame, opts: ReportOptions) -> dict[str, int]:
    """Family label -> number of comparisons corrected together."""
    compared = summary[summary["verdict"] != "reference"]
    return {"/".join(str(k) for k in (key if isinstance(key, tuple) else (key,)) if k): len(g)
            for key, g in compared.groupby(_family_keys(opts))}


DIVERGED_NORMALISED = 0.0  # a diverged seed's normalised score: the worst end, whatever the metric


def _normalised(part: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Scores min-max normalised within each (dataset, context) over the runs that did not diverge, oriented so
    that 1 = the best such run and 0 = the worst, so data sets of different difficulty pool into one IQM
    (rliable's normalised scores) and a loss reads like an accuracy.

    The one diverged-seed rule (docs/statistics.md, "Diverged runs"): a diverged seed scores the worst end, 0,
    whatever the metric. It never sets the scale: a diverged accuracy of 0 would otherwise squeeze every other
    run of its data set towards 1 (and an infinite loss cannot set one at all).
    """
    sign = 1.0 if higher_is_better(metric) else -1.0
    diverged = part["diverged"].fillna(False).astype(bool) if "diverged" in part else pd.Series(False, part.index)

    def scale(v: pd.Series) -> pd.Series:
        o = v * sign
        bad = diverged.loc[v.index] | ~np.isfinite(o.fillna(0.0))
        healthy = o[~bad].dropna()
        low, high = (healthy.min(), healthy.max()) if len(healthy) else (0.0, 1.0)
        out = (o - low) / (high - low) if high > low else o * 0 + 0.5
        return out.where(~bad, DIVERGED_NORMALISED)

    return part.assign(value=part.groupby(["dataset", "context"])["value"].transform(scale))


def _contrast_differences(tidy: pd.DataFrame, contrasts) -> dict[str, list[np.ndarray]]:
    """Per contrast (anything with ``method`` and ``baseline``), the raw per-seed differences of each (dataset,
    context) of ``tidy`` with two or more paired seeds, where two or more such data sets exist. A normal model
    has no place for a diverged loss (an infinite difference): such a contrast is left out rather than given a
    posterior that quietly leaves its data set out."""
    wides = [g.pivot_table(index="seed", columns="method", values="value")
             for _, g in tidy.groupby(["dataset", "context"])]
    out = {}
    for c in contrasts:
        diffs = [d for d in ((w[c.method] - w[c.baseline]).dropna().to_numpy()
                             for w in wides if c.method in w and c.baseline in w) if len(d) >= 2]
        if len(diffs) >= 2 and all(np.isfinite(d).all() for d in diffs):
            out[f"{c.method} vs {c.baseline}"] = diffs
    return out


HIERARCHICAL_COLUMNS = ["contrast", "n_sets", "sigma0_bound", "prior_dominated", "p_worse", "p_rope", "p_better",
                        "p_worse_se", "p_rope_se", "p_better_se", "share_worse", "share_rope", "share_better",
                        "share_worse_se", "share_rope_se", "share_better_se"]


def hierarchical_table(tidy: pd.DataFrame, contrasts, *, rope: float, higher_is_better: bool = True,
                       random_state: int = 0) -> pd.DataFrame:
    """One row per contrast and bound on sigma_0: the default bound (1000 x the seeds' sd) alone, or each bound
    of ``SIGMA0_BOUNDS`` where fewer data sets than ``PRIOR_DOMINATED_BELOW`` leave the answer to the prior.
    ``p_*`` the predictive (posterior mean of the probability that a new data set's delta lands there),
    ``share_*`` the share of posterior draws in which that outcome is the most probable (baycomp's and IDSIA's
    number), each with its Monte Carlo standard error (``*_se``)."""
    rows = []
    for name, diffs in _contrast_differences(tidy, contrasts).items():
        bounds = SIGMA0_BOUNDS if len(diffs) < PRIOR_DOMINATED_BELOW else (SIGMA0_BOUND,)
        for p in prior_sensitivity(diffs, rope=rope, bounds=bounds, higher_is_better=higher_is_better,
                                   random_state=random_state).values():
            rows.append([name, p.n_sets, p.sigma0_bound, p.prior_dominated, *p.predictive, *p.predictive_se,
                         *p.most_probable, *p.most_probable_se])
    return pd.DataFrame(rows, columns=HIERARCHICAL_COLUMNS)


def across_datasets(tidy: pd.DataFrame, opts: ReportOptions, metric: str, *, min_sets_friedman: int = 5) -> dict:
    """Cross-data-set view of one metric, on normalised scores (``_normalised``: 1 = best run of the data set,
    a diverged seed 0): mean normalised delta per contrast (higher favours the method; stratified bootstrap),
    IQM per cell, and Friedman / Iman-Davenport with the Nemenyi CD with enough sets."""
    part = tidy[tidy["metric"] == metric].dropna(subset=["value"])
    norm = {k: g.pivot_table(index="seed", columns="method", values="value") for k, g in
            _normalised(part, metric).groupby(["dataset", "context"])}
    methods = sorted(set(part["method"]))
    out: dict = {"metric": metric, "n_sets": len(norm), "deltas": {}, "iqm": {}, "n_runs": {},
                 "diverged_score": DIVERGED_NORMALISED}
    if len(norm) < 2:  # one data set has no cross-data-set view (and its bootstrap would be thrown away)
        return out
    for method in methods:
        groups = [w[method].dropna().to_numpy() for w in norm.values() if method in w]
        if groups:
            low, high = stats.stratified_bootstrap_ci(groups, lambda gs: stats.iqm(np.concatenate(gs)),
                                                      n_boot=opts.n_boot, random_state=opts.random_state)
            out["iqm"][method] = {"iqm": stats.iqm(np.concatenate(groups)), "ci_low": low, "ci_high": high}
            out["n_runs"][method] = int(sum(len(g) for g in groups))
    for c in opts.plan.contrasts:
        pairs = {k: (w[c.method].to_numpy(), w[c.baseline].to_numpy()) for k, w in
                 ((k, w[[c.method, c.baseline]].dropna()) for k, w in norm.items()
                  if c.method in w and c.baseline in w) if len(w) > 0}
        if len(pairs) >= 2:
            out["deltas"][f"{c.method} vs {c.baseline}"] = stats.normalized_delta_across(
                pairs, n_boot=opts.n_boot, random_state=opts.random_state, relative=False)
    # one sampling per contrast (its bounds side by side): both answers, their errors and the prior sensitivity
    table = hierarchical_table(part, opts.plan.contrasts, rope=rope_for(metric, opts.rope),
                               higher_is_better=higher_is_better(metric), random_state=opts.random_state)
    out["hierarchical_table"] = table
    if len(norm) >= min_sets_friedman and len(methods) >= 3:
        means = pd.DataFrame({k: w.mean() for k, w in norm.items()}).T[methods].dropna()
        if len(means) >= min_sets_friedman:
            f = stats.friedman(means.to_numpy(), higher_is_better=True, alpha=opts.alpha)
            out["friedman"] = {**f, "methods": methods, "avg_ranks": dict(zip(methods, f["avg_ranks"]))}
    return out
