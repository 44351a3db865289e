"""From MLflow runs to the report's tables: a tidy frame of scores, then one summary row per
(dataset, context, metric, method) with the paired comparison to the baseline (DESIGN.md's columns).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import stats
from .config import SpecError

__all__ = ["ReportOptions", "tidy_scores", "summarize", "across_datasets", "higher_is_better", "SUMMARY_COLUMNS"]

SUMMARY_COLUMNS = ["dataset", "context", "metric", "method", "baseline", "n", "mean", "sd", "ci_low", "ci_high",
                   "delta", "delta_ci_low", "delta_ci_high", "boot_ci_low", "boot_ci_high", "p_ttest", "p_wilcoxon",
                   "p_holm", "p_wilcoxon_holm", "effect_dz", "cliffs_delta", "cliffs_magnitude", "win_rate",
                   "win_ci_low", "win_ci_high", "p_outperform", "corr", "mde", "verdict"]
BLOCK = ["dataset", "context", "metric"]


@dataclass
class ReportOptions:
    baseline: str
    metrics: list[str] = field(default_factory=lambda: ["test/acc"])
    rope: float = 0.002  # accuracies are fractions: 0.2 points
    alpha: float = 0.05
    correction: str = "holm"  # or bh (exploratory grids)
    family: str = "metric"  # metric: all comparisons of one metric; dataset: per (dataset, context, metric)
    allow_unpaired: bool = False
    n_boot: int = 2000
    random_state: int = 0


def higher_is_better(metric: str) -> bool:
    return not any(s in metric for s in ("loss", "time/", "mem/", "sharpness", "infer"))


def _uses_rope(metric: str) -> bool:
    return metric.endswith("acc") or metric.endswith("top5")


def tidy_scores(runs: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """One row per (run, metric): dataset, context, method, seed, metric, value, status, run_id.

    The method label is the ablation cell (or the method tag). If a (method, seed) ran more than once,
    the newest finished run counts. Runs without the metric (a diverged run has no test score) keep
    a NaN value, so pairing can say which seeds are missing.
    """
    if runs.empty:
        return pd.DataFrame(columns=["dataset", "context", "method", "seed", "metric", "value", "status", "run_id"])
    frame = pd.DataFrame({
        "dataset": runs["tags.dataset"],
        "context": runs.get("tags.sal.context", pd.Series("", index=runs.index)).fillna(""),
        "method": runs.get("tags.sal.cell", runs["tags.method"]).fillna(runs["tags.method"]),
        "seed": runs["tags.seed"].astype(int),
        "status": runs.get("tags.sal.status", pd.Series("finished", index=runs.index)),
        "run_id": runs["run_id"],
        "start": runs.get("start_time", pd.Series(0, index=runs.index)),
    })
    for col in ("params.model.name", "params.optim.name", "params.data.resolution"):
        frame[col.removeprefix("params.")] = runs.get(col)
    frame = frame.sort_values("start").drop_duplicates(["dataset", "context", "method", "seed"], keep="last")
    rows = []
    for metric in metrics:
        col = f"metrics.{metric}"
        part = frame.copy()
        part["metric"] = metric
        part["value"] = runs.loc[part.index, col] if col in runs else math.nan
        rows.append(part)
    return pd.concat(rows, ignore_index=True).drop(columns="start")


def _check_pairs(wide: pd.DataFrame, baseline: str, block: tuple, allow_unpaired: bool) -> None:
    missing = {m: sorted(int(s) for s in wide.index[wide[m].isna()]) for m in wide.columns}
    missing = {m: s for m, s in missing.items() if s}
    if missing and not allow_unpaired:
        where = "/".join(str(b) for b in block if b)
        detail = "; ".join(f"{m} has no value for seed(s) {', '.join(map(str, s))}" for m, s in missing.items())
        raise SpecError([f"{where}: seeds do not pair ({detail}); fix: finish or re-run them "
                         "(sal ablate FILE --retry-failed), or pass --allow-unpaired to compare on common seeds"])


def summarize(tidy: pd.DataFrame, opts: ReportOptions) -> pd.DataFrame:
    """The summary table: DESIGN.md's columns, one row per (dataset, context, metric, method)."""
    if opts.baseline not in set(tidy["method"]):
        raise SpecError([f"--baseline={opts.baseline!r} has no runs; fix: use one of {sorted(set(tidy['method']))}"])
    rows = []
    for block, g in tidy.groupby(BLOCK, sort=True):
        dataset, context, metric = block
        wide = g.pivot_table(index="seed", columns="method", values="value", aggfunc="first", dropna=False)
        wide = wide.reindex(sorted(set(g["seed"])))
        if opts.baseline not in wide:
            raise SpecError([f"{dataset}/{context}: the baseline {opts.baseline!r} has no runs there; fix: run it "
                             "or choose another --baseline"])
        _check_pairs(wide, opts.baseline, block, opts.allow_unpaired)
        for method in wide.columns:
            values = wide[method].dropna()
            row = {"dataset": dataset, "context": context, "metric": metric, "method": method,
                   "baseline": opts.baseline, **stats.describe(values)}
            if method == opts.baseline:
                row["verdict"] = "reference"
            else:
                pair = wide[[method, opts.baseline]].dropna()
                p = stats.paired(pair[method], pair[opts.baseline], n_boot=opts.n_boot, random_state=opts.random_state)
                row.update({k: p[k] for k in ("delta", "delta_ci_low", "delta_ci_high", "boot_ci_low", "boot_ci_high",
                                              "p_ttest", "p_wilcoxon", "effect_dz", "cliffs_delta", "win_rate",
                                              "win_ci_low", "win_ci_high", "p_outperform", "corr")})
                row["n"] = p["n"]
                row["cliffs_magnitude"] = stats.cliffs_magnitude(p["cliffs_delta"])
                row["_sd_diff"] = p["delta_sd"]
            rows.append(row)
    summary = pd.DataFrame(rows)
    _adjust(summary, opts)
    return summary.reindex(columns=SUMMARY_COLUMNS)


def _adjust(summary: pd.DataFrame, opts: ReportOptions) -> None:
    """Holm (or BH) over each family; then the minimum detectable effect and the verdict."""
    keys = ["metric"] if opts.family == "metric" else BLOCK
    summary["p_holm"] = np.nan
    summary["p_wilcoxon_holm"] = np.nan
    compared = summary["verdict"] != "reference"
    for _, idx in summary[compared].groupby(keys).groups.items():
        summary.loc[idx, "p_holm"] = stats.adjust(summary.loc[idx, "p_ttest"], opts.correction)
        summary.loc[idx, "p_wilcoxon_holm"] = stats.adjust(summary.loc[idx, "p_wilcoxon"], opts.correction)
        m = len(idx)
        for i in idx:
            summary.loc[i, "mde"] = stats.min_detectable_effect(int(summary.loc[i, "n"]), summary.loc[i, "_sd_diff"],
                                                                alpha=opts.alpha, m=m)
            metric = summary.loc[i, "metric"]
            summary.loc[i, "verdict"] = stats.verdict(
                summary.loc[i, "p_holm"], summary.loc[i, "delta_ci_low"], summary.loc[i, "delta_ci_high"],
                rope=opts.rope if _uses_rope(metric) else 0.0, alpha=opts.alpha,
                higher_is_better=higher_is_better(metric))


def family_sizes(summary: pd.DataFrame, opts: ReportOptions) -> dict[str, int]:
    keys = ["metric"] if opts.family == "metric" else BLOCK
    compared = summary[summary["verdict"] != "reference"]
    return {"/".join(str(k) for k in (key if isinstance(key, tuple) else (key,))): len(g)
            for key, g in compared.groupby(keys)}


def across_datasets(tidy: pd.DataFrame, opts: ReportOptions, metric: str, *, min_sets_friedman: int = 5) -> dict:
    """Cross-data-set view of one metric: normalised mean delta per method (stratified bootstrap),
    IQM per method, and Friedman / Iman-Davenport with the Nemenyi CD when there are enough sets."""
    part = tidy[tidy["metric"] == metric].dropna(subset=["value"])
    blocks = {k: g.pivot_table(index="seed", columns="method", values="value") for k, g in
              part.groupby(["dataset", "context"])}
    methods = sorted(set(part["method"]))
    out: dict = {"metric": metric, "n_sets": len(blocks), "deltas": {}, "iqm": {}}
    for method in methods:
        groups = [w[method].dropna().to_numpy() for w in blocks.values() if method in w]
        if groups:
            low, high = stats.stratified_bootstrap_ci(groups, lambda gs: stats.iqm(np.concatenate(gs)),
                                                      n_boot=opts.n_boot, random_state=opts.random_state)
            out["iqm"][method] = {"iqm": stats.iqm(np.concatenate(groups)), "ci_low": low, "ci_high": high}
        if method == opts.baseline:
            continue
        pairs = {k: (w[method].to_numpy(), w[opts.baseline].to_numpy()) for k, w in
                 ((k, w[[method, opts.baseline]].dropna()) for k, w in blocks.items()
                  if method in w and opts.baseline in w) if len(w) > 0}
        if len(pairs) >= 2:
            out["deltas"][method] = stats.normalized_delta_across(pairs, n_boot=opts.n_boot,
                                                                  random_state=opts.random_state)
    if len(blocks) >= min_sets_friedman and len(methods) >= 3:
        means = pd.DataFrame({k: w.mean() for k, w in blocks.items()}).T[methods].dropna()
        if len(means) >= min_sets_friedman:
            f = stats.friedman(means.to_numpy(), higher_is_better=higher_is_better(metric), alpha=opts.alpha)
            out["friedman"] = {**f, "methods": methods, "avg_ranks": dict(zip(methods, f["avg_ranks"]))}
    return out
