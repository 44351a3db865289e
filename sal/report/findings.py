"""What a reader must know before the numbers: too few seeds, exploratory verdicts, ignored runs,
diverged seeds, a ROPE finer than one test sample, stress-aware cells that never intervened.

Pure functions on the report's frames; each returns sentences.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..methods import STRESS_AWARE
from ..metrics.scoring import is_bounded_fraction, worst_value
from ..stats import inference as stats
from ..stats.attribution import attribution_notes
from ..stats.selection import Selection, cell_of
from ..stats.summary import ReportOptions, family_sizes

__all__ = ["notes", "interventions", "STRESS_AWARE"]



def _seed_notes(summary: pd.DataFrame, opts: ReportOptions) -> list[str]:
    out = []
    compared = summary[summary["verdict"] != "reference"]
    if compared.empty:
        return out
    for family, m in family_sizes(summary, opts).items():
        n = int(compared["n"].min())
        if stats.too_few_seeds(n, alpha=opts.alpha, m=m):
            need = next(k for k in range(n, 64) if not stats.too_few_seeds(k, alpha=opts.alpha, m=m))
            out.append(f"Family {family}: with {n} seeds, exact tests (sign-flip, Wilcoxon) cannot go below "
                       f"p = 2/2^{n} = {stats.exact_p_floor(n):.4g} > alpha/m = {opts.alpha / m:.4g}: they cannot "
                       f"reach significance after correction; {need} seeds are needed.")
    n_min = int(compared["n"].min())
    if stats.exploratory(n_min):
        out.append(f"Verdicts on {stats.EXPLORATORY_MAX_SEEDS} seeds or fewer are exploratory (here as few as "
                   f"{n_min}); they are marked so. Use 10 or more seeds for claims.")
    if n_min < stats.SEEDS_FOR_T_ALONE:
        out.append(f"With fewer than {stats.SEEDS_FOR_T_ALONE} seeds, better/worse also needs the exact "
                   "sign-flip test to be significant after the same correction.")
    flat = compared[(compared["delta"] == 0) & compared["p_ttest"].isna()]
    for r in flat.itertuples():
        out.append(f"{r.method} and {r.baseline} ({r.dataset} {r.context} {r.metric}) score the same on every "
                   "seed: with no spread the difference is known exactly (0), so there is no t-test and no "
                   "interval; it stays in its family with p = 1, and within the ROPE it is equivalent."
                   .replace("  ", " "))
    return out


def _ignored_notes(selection: Selection) -> list[str]:
    out = []
    if selection.superseded:
        out.append(f"{selection.superseded} run(s) of superseded configurations (settings changed since; another "
                   "config_hash than the ablation's latest definition) were ignored.")
    if selection.left_out:
        shown = ", ".join(f"{cell} seed {seed} ({state})" for cell, seed, state in selection.left_out[:20])
        more = f" and {len(selection.left_out) - 20} more" if len(selection.left_out) > 20 else ""
        out.append(f"{len(selection.left_out)} run(s) are not results and were left out (only finished runs, and "
                   f"diverged ones scored as diverged, count): {shown}{more}.")
    if selection.duplicates:
        out.append(f"{selection.duplicates} repeated run(s) of a (cell, seed) already counted were ignored (each "
                   "trial counts once; the newest run is used).")
    return out


def _diverged_notes(summary: pd.DataFrame) -> list[str]:
    """The one diverged-seed rule (docs/statistics.md) in the words of each metric, and a note wherever a
    rank-based test stands in for a mean (an infinite difference has no mean, t-test or interval)."""
    out = []
    rows = summary[summary["n_diverged"].fillna(0) > 0].drop_duplicates(["dataset", "context", "metric", "method"])
    for r in rows.itertuples():
        worst = worst_value(r.metric)
        scored = f"{worst:g}, the lowest {r.metric}" if math.isfinite(worst) else \
            f"{'+' if worst > 0 else '-'}inf, the worst {r.metric}"
        out.append(f"{r.method} diverged on seed(s) {r.diverged_seeds} ({r.dataset} {r.context}, {r.metric}); those "
                   f"seeds count with the metric's worst score ({scored}).".replace("  ", " "))
    compared = summary[summary["verdict"] != "reference"]
    for r in compared[~np.isfinite(compared["delta"].astype(float)) & compared["delta"].notna()].itertuples():
        out.append(f"{r.method} vs {r.baseline} ({r.dataset} {r.context}, {r.metric}): a diverged seed makes the "
                   "difference infinite, so there is no mean difference, t-test or interval; the exact sign test "
                   "(rank-based: which cell did better on each seed) decides, and enters the family with its "
                   "p-value.".replace("  ", " "))
    return out


def _unpaired_notes(summary: pd.DataFrame) -> list[str]:
    if "unpaired_seeds" not in summary:
        return []
    rows = summary[summary["unpaired_seeds"].fillna("").astype(str) != ""]
    return [f"{r.method} vs {r.baseline} ({r.dataset} {r.context}, {r.metric}) is compared on the {int(r.n)} seed(s) "
            f"both cells have (--allow-unpaired; left out: seed(s) {r.unpaired_seeds}); its mean and CI are over "
            "the same seeds.".replace("  ", " ") for r in rows.itertuples()]


def _rope_notes(runs: pd.DataFrame, opts: ReportOptions) -> list[str]:
    col = "metrics.test/n_samples"
    if col not in runs or not any(is_bounded_fraction(m) for m in opts.metrics) or opts.rope <= 0:
        return []
    out = []
    for dataset, n in runs.groupby("tags.dataset")[col].max().items():
        if n == n and opts.rope < 1 / n:
            out.append(f"{dataset}: the ROPE of +-{opts.rope:g} is below one test sample (1/{int(n)} = "
                       f"{1 / n:.4g}): a seed's difference is 0 or at least {1 / n:.4g}, beyond the ROPE, so "
                       "`equivalent` (the interval of the mean inside the ROPE) needs most seeds to tie exactly; "
                       "pass a wider --rope or use a larger test set for a finer answer.")
    return out


def interventions(runs: pd.DataFrame) -> pd.DataFrame:
    """Per stress-aware cell: mean interventions per seed and the seeds with none of the ones it has."""
    cols = {e: f"metrics.sal/n_{e}" for e in ("noise", "deform", "revert")}
    if "params.method.name" not in runs or not all(c in runs for c in cols.values()):
        return pd.DataFrame()
    rows = []
    cell = cell_of(runs)
    for (name, dataset, method), g in runs.assign(_cell=cell).groupby(["_cell", "tags.dataset", "params.method.name"]):
        if method not in STRESS_AWARE:
            continue
        acted = sum(g[cols[e]].fillna(0) for e in STRESS_AWARE[method])
        idle = sorted(int(s) for s in g.loc[acted == 0, "tags.seed"])
        rows.append({"cell": name, "dataset": dataset, "method": method, "seeds": len(g),
                     **{f"{e}_per_seed": float(g[c].mean()) for e, c in cols.items()},
                     "idle_seeds": ",".join(map(str, idle))})
    return pd.DataFrame(rows)


def notes(summary: pd.DataFrame, opts: ReportOptions, selection: Selection,
          intervention_table: pd.DataFrame) -> list[str]:
    out = _seed_notes(summary, opts) + _ignored_notes(selection) + _diverged_notes(summary)
    out += _unpaired_notes(summary)
    out += _rope_notes(selection.runs, opts) + attribution_notes(summary, selection.runs)
    for r in intervention_table.itertuples() if not intervention_table.empty else []:
        if r.idle_seeds:
            n_idle = len(r.idle_seeds.split(","))
            out.append(f"{r.cell} ({r.method}, {r.dataset}) never intervened on {n_idle} of {r.seeds} seed(s) "
                       f"({r.idle_seeds}): there it ran as its base optimizer (warm-up too long, or stress never "
                       "reached its thresholds).")
    return out
