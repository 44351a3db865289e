"""Whether a report's contrasts between SAL and its controls can say anything, and what the noise dose does.

- Same by construction: two cells of SAL's family (the base optimizer, SAL, and its parts and controls
  that act only between epochs: they differ only in which parts may fire) that share every setting but the
  switch between them, made the same interventions at the same epochs and ended with the same final metrics
  on every seed trained the same run (the part the contrast removes never fired: e.g. recovery at the paper's
  constants). No test can tell them apart, so the row says so instead of giving a verdict. A method that
  changes every step (SAM, SWA) never trains its base optimizer's run, events or not.
- Noise under the dtype's resolution: a cell whose largest noise std is below the spacing of the compute
  dtype at the weights' median magnitude cannot change a forward pass (bf16 rounds it away).
- Dose-response: cells of one method that differ only in the noise scale (Delta, lambda) give the paired
  effect against the dose (the noise std at the yield point), with CIs: can the noise ever matter?

Pure functions on the report's frames (the runs frame of an ablation and its summary).
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..core.names import TAG_CONTEXT
from ..methods import METHODS, STRESS_AWARE, names_with_role
from ..metrics.events import DTYPE_TAG, EVENTS_TAG, MEDIAN_ABS_WEIGHT, NOISE_STD_MAX, resolution
from .selection import cell_of

__all__ = ["BY_CONSTRUCTION", "mark_by_construction", "attribution_notes", "dose_response", "dose_figure",
           "DOSE_KNOBS", "can_train_the_same_runs"]

BY_CONSTRUCTION = "same by construction"  # the verdict of a contrast between two identical trainings
# What may differ between two cells whose runs are still the same training when their events agree: the
# method's name (which parts it has) and the switches of parts that never fired.
_SWITCHES = {"params.method.name", "params.method.recovery", "params.method.reset_at_yield"}
DOSE_KNOBS = ("params.method.delta", "params.method.lambda")
# Final metrics that no two runs share even when they trained alike (wall clock, process memory).
_UNSHARED_METRICS = ("metrics.time/", "metrics.mem/")


def can_train_the_same_runs(method: str) -> bool:
    """Whether a cell of ``method`` can train its base optimizer's runs: the base optimizer itself, and SAL
    and its parts and controls (roles treatment and ablation) that act only between epochs, so that one which
    never acted ran as the base optimizer. SAM (another step) and SWA (averaged weights) never can."""
    info = METHODS.get(method)
    return info is not None and method in names_with_role("base", "treatment", "ablation") and (
        info.role == "base" or method in STRESS_AWARE)


def _place(runs: pd.DataFrame) -> pd.DataFrame:
    context = runs[f"tags.{TAG_CONTEXT}"].fillna("") if f"tags.{TAG_CONTEXT}" in runs else ""
    return runs.assign(_cell=cell_of(runs), _context=context, _seed=runs["tags.seed"].astype(int))


def _settings(g: pd.DataFrame) -> dict:
    row = g.iloc[0]
    return {c: row[c] for c in g.columns if c.startswith("params.") and c not in ("params.seed",)
            and isinstance(row[c], str)}


def _same_final_metrics(a: pd.DataFrame, b: pd.DataFrame, seeds: pd.Index) -> bool:
    """Every final metric both cells logged equal on every shared seed (at least one compared): two runs of
    one training end alike, so a single differing digit says they were not the same training."""
    compared = 0
    for column in a.columns.intersection(b.columns):
        if not column.startswith("metrics.") or column.startswith(_UNSHARED_METRICS):
            continue
        va = pd.to_numeric(a.set_index("_seed")[column], errors="coerce").reindex(seeds)
        vb = pd.to_numeric(b.set_index("_seed")[column], errors="coerce").reindex(seeds)
        both = va.notna() & vb.notna()  # a metric only one method logs (sal/stress) is not compared
        if both.any():
            if not np.array_equal(va[both].to_numpy(), vb[both].to_numpy()):
                return False
            compared += 1
    return compared > 0


def _same_training(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    """Both cells of SAL's family, every shared setting but the part switches equal, and on every shared seed
    the same event signature and the same final metrics."""
    methods = set(a.get("params.method.name", pd.Series(dtype=object))) | \
        set(b.get("params.method.name", pd.Series(dtype=object)))
    if not methods or not all(isinstance(m, str) and can_train_the_same_runs(m) for m in methods):
        return False
    if EVENTS_TAG not in a or EVENTS_TAG not in b or a[EVENTS_TAG].isna().any() or b[EVENTS_TAG].isna().any():
        return False
    sa, sb = _settings(a), _settings(b)
    shared = (sa.keys() & sb.keys()) - _SWITCHES
    if any(sa[k] != sb[k] for k in shared):
        return False
    # settings only one cell has must be the method's own knobs (a base cell has none of SAL's)
    if any(not k.startswith("params.method.") for k in sa.keys() ^ sb.keys()):
        return False
    ea, eb = a.set_index("_seed")[EVENTS_TAG], b.set_index("_seed")[EVENTS_TAG]
    seeds = ea.index.intersection(eb.index)
    return len(seeds) > 0 and bool((ea[seeds] == eb[seeds]).all()) and _same_final_metrics(a, b, seeds)


def mark_by_construction(summary: pd.DataFrame, runs: pd.DataFrame, *, context: str = "context") -> pd.DataFrame:
    """The summary with ``verdict`` = same by construction on contrasts between identical trainings (and a
    ``by_construction`` column); every other row unchanged. ``context``: the summary column holding the runs'
    context (a secondary family that relabels its rows, e.g. one row per class, keeps the runs' own there)."""
    out = summary.copy()
    out["by_construction"] = False
    if runs.empty or "baseline" not in out or f"tags.{EVENTS_TAG}" not in runs:
        return out
    frame = _place(runs.rename(columns={f"tags.{EVENTS_TAG}": EVENTS_TAG}))
    frame = frame[frame["status"] == "FINISHED"] if "status" in frame else frame
    groups = {key: g for key, g in frame.groupby(["_cell", "tags.dataset", "_context"])}
    for i, r in out.iterrows():
        if r.get("verdict") == "reference" or not isinstance(r.get("baseline"), str):
            continue
        where = r.get(context, "") or ""
        a = groups.get((r["method"], r["dataset"], where))
        b = groups.get((r["baseline"], r["dataset"], where))
        if a is not None and b is not None and _same_training(a, b):
            out.loc[i, ["verdict", "by_construction"]] = [BY_CONSTRUCTION, True]
    return out


def _deform_gaps(signature: str) -> list[int]:
    part = dict(p.split("=", 1) for p in signature.split(";") if "=" in p).get("deform", "")
    epochs = [int(e) for e in part.split(",") if e]
    return [b - a for a, b in zip(epochs, epochs[1:])]


def _construction_notes(summary: pd.DataFrame, runs: pd.DataFrame) -> list[str]:
    if "by_construction" not in summary:
        return []
    rows = summary[summary["by_construction"]].drop_duplicates(["dataset", "context", "method", "baseline"])
    out = []
    frame = _place(runs) if len(rows) else runs
    for r in rows.itertuples():
        text = (f"{r.method} vs {r.baseline} ({r.dataset}{' ' + r.context if r.context else ''}): both made the same "
                "interventions at the same epochs and ended with the same final metrics on every seed, with the "
                "same settings otherwise, so they trained the same runs; the contrast is the same by "
                "construction, not evidence of no effect.")
        cells = frame[frame["_cell"].isin([r.method, r.baseline]) & (frame["tags.dataset"] == r.dataset)]
        recovery = cells.get("params.method.recovery_patience")
        names = set(cells.get("params.method.name", pd.Series(dtype=str)))
        if recovery is not None and "sal_no_recovery" in names and f"tags.{EVENTS_TAG}" in cells:
            gaps = [g for s in cells[f"tags.{EVENTS_TAG}"].dropna() for g in _deform_gaps(s)]
            patience = recovery.dropna().astype(int)
            if len(gaps) and len(patience) and patience.min() >= min(gaps):
                text += (f" Recovery never fired: method.recovery_patience={patience.min()} is not below the "
                         f"epochs between deformations (as few as {min(gaps)}), so each new deformation replaced "
                         "the watched one before its patience ran out. Set method.recovery_patience below that "
                         "interval (e.g. 1 at the paper's constants) to test recovery.")
        out.append(text)
    return out


def _resolution_notes(runs: pd.DataFrame) -> list[str]:
    cols = (f"metrics.{NOISE_STD_MAX}", f"metrics.{MEDIAN_ABS_WEIGHT}", f"tags.{DTYPE_TAG}", "params.method.name")
    if not all(c in runs for c in cols):
        return []
    out = []
    frame = _place(runs)
    for (cell, dataset), g in frame.groupby(["_cell", "tags.dataset"]):
        method = g["params.method.name"].iloc[0]
        if "noise" not in STRESS_AWARE.get(method, ()):
            continue
        largest = g[cols[0]].max()
        magnitude = g[cols[1]].median()
        dtype = g[cols[2]].dropna().iloc[0] if g[cols[2]].notna().any() else ""
        step = resolution(dtype, magnitude)
        if largest > 0 and math.isfinite(step) and largest < step:
            out.append(f"{cell} ({method}, {dataset}): its largest noise std, {largest:.3g}, is below the {dtype} "
                       f"resolution at the median weight magnitude {magnitude:.3g} ({step:.3g}): the noise cannot "
                       "change a forward pass, so any effect it shows is the schedule's, not the noise's. Raise "
                       "method.delta / method.lambda, or train in float32 (train.amp=false).")
    return out


def attribution_notes(summary: pd.DataFrame, runs: pd.DataFrame) -> list[str]:
    """Sentences for the report's notes: identical trainings, noise too small to matter."""
    return _construction_notes(summary, runs) + _resolution_notes(runs)


def dose_response(summary: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per cell of a dose series (3+ cells of one method that differ only in Delta and lambda), with
    its dose (noise std at the yield point, Delta + lambda * S_yield), the largest std it injected (median
    over seeds) and its contrast's paired delta, CI and verdict."""
    if runs.empty or not all(k in runs for k in (*DOSE_KNOBS, "params.method.s_yield")):
        return pd.DataFrame()
    frame = _place(runs)
    firsts = frame.groupby(["_cell", "tags.dataset", "_context"]).first().reset_index()
    settings = [c for c in firsts.columns if c.startswith("params.") and c not in (*DOSE_KNOBS, "params.seed")]
    firsts = firsts.assign(_rest=firsts[settings].map(str).agg("|".join, axis=1))
    rows = []
    contrasts = summary[summary["verdict"] != "reference"]
    for _, series in firsts.groupby(["tags.dataset", "_context", "_rest"]):
        if len(series) < 3 or series["params.method.name"].iloc[0] not in STRESS_AWARE:
            continue
        for _, r in series.iterrows():
            dose = float(r[DOSE_KNOBS[0]]) + float(r[DOSE_KNOBS[1]]) * float(r["params.method.s_yield"])
            cell, dataset = r["_cell"], r["tags.dataset"]
            seeds = frame[(frame["_cell"] == cell) & (frame["tags.dataset"] == dataset)]
            achieved = seeds[f"metrics.{NOISE_STD_MAX}"].median() if f"metrics.{NOISE_STD_MAX}" in seeds else math.nan
            for _, c in contrasts[(contrasts["method"] == cell) & (contrasts["dataset"] == dataset)].iterrows():
                rows.append({"dataset": dataset, "context": r["_context"], "metric": c["metric"], "cell": cell,
                             "baseline": c["baseline"], "dose": dose, "noise_std_max": achieved, "n": c["n"],
                             **{k: c[k] for k in ("delta", "delta_ci_low", "delta_ci_high", "verdict")}})
    return pd.DataFrame(rows).sort_values(["dataset", "metric", "dose"]) if rows else pd.DataFrame()


def dose_figure(table: pd.DataFrame, metric: str, *, rope: float = 0.0) -> plt.Figure:
    """The paired effect of each dose against its baseline, with its CI, on a log dose axis."""
    part = table[table["metric"] == metric]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for (dataset, baseline), g in part.groupby(["dataset", "baseline"]):
        yerr = np.vstack([g["delta"] - g["delta_ci_low"], g["delta_ci_high"] - g["delta"]])
        ax.errorbar(g["dose"], g["delta"], yerr=np.nan_to_num(yerr), marker="o", capsize=3,
                    label=f"{dataset}: vs {baseline}")
    if rope > 0:
        ax.axhspan(-rope, rope, color="tab:green", alpha=0.15, label="ROPE")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("noise std at the yield point (Delta + lambda * S_yield)")
    ax.set_ylabel(f"paired difference in {metric}")
    ax.legend(fontsize=8)
    ax.set_title("Noise dose-response")
    fig.tight_layout()
    return fig
