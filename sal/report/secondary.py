"""The report's secondary measurements, each a family of its own (docs/statistics.md, "Secondary families"):
cost (training time, peak memory), F1 per class, accuracy on perturbed inputs. Each is the plan's contrasts,
paired on seed and corrected within its family, so adding them never changes the verdicts of the plan.
Sections appear only when the runs logged the metrics.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from ..core.names import TAG_DEVICE, TAG_SEEDS_PER_MODEL
from ..metrics.classmetrics import class_of_metric
from ..spec.analysis import Contrast, Plan
from ..stats.attribution import mark_by_construction
from ..stats.selection import cell_of, tidy_scores
from ..stats.summary import ReportOptions, summarize
from ..training.robustness import SUMMARIES
from .render import Section, format_p  # the report's one p-value format

__all__ = ["secondary_summary", "secondary_frame", "cost_section", "class_section", "robustness_section",
           "COST_METRICS"]

COST_METRICS = ("time/train_s", "mem/peak_mb")
SEED = 0  # of the figures' bootstrap bands


def secondary_summary(tidy: pd.DataFrame, plan: Plan, contrasts: list[Contrast], *, family: str,
                      level: float) -> pd.DataFrame:
    """The contrasts' rows for every metric of ``tidy``, Holm (the plan's correction) within ``family`` and
    metric. A run without the metric is left out, so the pairs are the seeds where both cells have it."""
    tidy = tidy.dropna(subset=["value"])
    wanted = {x for c in contrasts for x in (c.method, c.baseline)}
    tidy = tidy[tidy["method"].isin(wanted)]
    if tidy.empty or not contrasts:
        return pd.DataFrame()
    own = Plan([Contrast(family, c.method, c.baseline) for c in contrasts], sorted(tidy["metric"].unique()),
               alpha=plan.alpha, rope=plan.rope, correction=plan.correction, treatment=plan.treatment)
    summary = summarize(tidy, ReportOptions(plan=own, allow_unpaired=True, level=level))
    return summary[summary["verdict"] != "reference"].reset_index(drop=True)


def secondary_frame(summary: pd.DataFrame, *, digits: int = 4) -> pd.DataFrame:
    """The columns a reader of a secondary family needs, formatted."""
    correction = summary["correction"].iloc[0] if len(summary) else "holm"
    fmt = f"{{:+.{digits}f}}"
    out = pd.DataFrame({
        "dataset": summary["dataset"], "context": summary["context"], "metric": summary["metric"],
        "method": summary["method"], "vs": summary["baseline"], "n": summary["n"].astype(int),
        "mean": summary["mean"].map(lambda v: f"{v:.{digits}f}"),
        "delta": summary["delta"].map(lambda v: "" if math.isnan(v) else fmt.format(v)),
        "delta_ci": ["" if math.isnan(a) else f"[{fmt.format(a)}, {fmt.format(b)}]"
                     for a, b in zip(summary["delta_ci_low"], summary["delta_ci_high"])],
        f"p_{correction}": summary["p_adj"].map(format_p),
        "verdict": summary["verdict"],
    })
    return out.drop(columns="context") if (out["context"] == "").all() else out


# ------------------------------------------------------------------ cost


def _per_cell(runs: pd.DataFrame, column: str) -> dict[str, str]:
    if column not in runs:
        return {}
    cells = cell_of(runs)
    return {cell: ", ".join(sorted(set(runs.loc[cells == cell, column].dropna().astype(str))))
            for cell in sorted(set(cells))}


def cost_section(runs: pd.DataFrame, plan: Plan, *, level: float) -> list[Section]:
    """time/train_s and mem/peak_mb as paired contrasts (lower is better), with what they ran under."""
    tidy = tidy_scores(runs, list(COST_METRICS))
    summary = secondary_summary(tidy, plan, plan.contrasts, family="cost", level=level)
    if summary.empty:
        return []
    devices = _per_cell(runs, f"tags.{TAG_DEVICE}")
    packed = _per_cell(runs, f"tags.{TAG_SEEDS_PER_MODEL}")
    table = secondary_frame(summary, digits=2)
    if packed:
        table["seeds per model"] = [f"{packed.get(m, '?')} / {packed.get(b, '?')}"
                                    for m, b in zip(summary["method"], summary["baseline"])]
    text = [f"Training time and peak memory of each contrast, paired on seed (lower is better), Holm within this "
            f"family. Devices: {'; '.join(f'{c}: {d}' for c, d in devices.items()) or 'not recorded'}."]
    if packed and any(v != "1" for v in packed.values()):
        text.append("Seeds trained as one packed model share its time: a cell packed with k seeds reports the pack's "
                    "time for each seed, so a contrast is a like-for-like time only where both cells have the same "
                    "seeds per model (the column).")
    if any(str(d).startswith("cpu") for d in devices.values()):
        text.append("On the CPU, mem/peak_mb is the process's peak resident memory since it started, so a run trained "
                    "after a larger one in the same process reads the larger one's peak; compare memory on CUDA, "
                    "where each run's peak is reset. Other processes sharing the device are not recorded: a time "
                    "measured with other runs beside it is slower by their share.")
    return [Section("Cost: training time and memory", text, [("Paired cost contrasts", table)],
                    data={"cost.csv": summary})]


# ------------------------------------------------------------------ per class


def class_section(runs: pd.DataFrame, plan: Plan, *, level: float) -> list[Section]:
    """F1 per class (test/class<k>/f1) of the treatment against the first baseline, paired on seed and
    corrected across the classes of each data set (a family of its own per data set)."""
    columns = [c.removeprefix("metrics.") for c in runs.columns
               if c.startswith("metrics.") and class_of_metric(c.removeprefix("metrics.")) is not None]
    contrast = next((c for c in plan.contrasts if c.method == plan.treatment), plan.contrasts[0] if plan.contrasts
                    else None)
    if not columns or contrast is None:
        return []
    tidy = tidy_scores(runs, columns)
    relabelled = [f"{ctx} class {class_of_metric(m)}".strip() for ctx, m in zip(tidy["context"], tidy["metric"])]
    run_context = dict(zip(relabelled, tidy["context"]))  # each class's row -> the runs' own context
    tidy = tidy.assign(context=relabelled, metric="test/class_f1")
    parts = [secondary_summary(part, plan, [contrast], family=f"per-class F1, {dataset}", level=level)
             for dataset, part in tidy.groupby("dataset")]
    parts = [p for p in parts if not p.empty]
    if not parts:
        return []
    summary = pd.concat(parts, ignore_index=True)
    # identical trainings have identical classes: their rows say so instead of "inconclusive, delta 0"
    summary = mark_by_construction(summary.assign(_runs_context=summary["context"].map(run_context)), runs,
                                   context="_runs_context").drop(columns="_runs_context")
    summary["_class"] = [int(c.rsplit(" ", 1)[1]) for c in summary["context"]]
    summary = summary.sort_values(["dataset", "_class"]).drop(columns="_class")
    table = secondary_frame(summary).rename(columns={"context": "class"})
    text = [f"F1 per class of {contrast.method} against {contrast.baseline} on the test split, paired on seed, "
            "corrected across the classes of each data set (one family per data set). The paper's Table 5 "
            "gives per-class numbers for single runs; its values are not in sal's reference data, so no paper "
            "column is shown."]
    return [Section("Per-class F1 (paper Table 5)", text, [("Paired difference in F1 per class", table)],
                    data={"per_class_f1.csv": summary})]


# ------------------------------------------------------------------ robustness


def _robust_columns(runs: pd.DataFrame) -> list[str]:
    return [c.removeprefix("metrics.") for c in runs.columns if c.startswith("metrics.test/robust/")]


def robustness_figure(tidy: pd.DataFrame) -> plt.Figure:
    """Accuracy against severity per perturbation kind, one line per cell (median, IQR band over seeds)."""
    t = tidy[~tidy["label"].isin(SUMMARIES)].copy()
    t["kind"] = t["label"].str.rsplit("_", n=1).str[0]
    t["severity"] = t["label"].str.rsplit("_", n=1).str[1].astype(float)
    kinds = sorted(t["kind"].unique())
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 3.6), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        sns.lineplot(data=t[t["kind"] == kind], x="severity", y="value", hue="method", estimator="median",
                     errorbar=("pi", 50), marker="o", ax=ax, seed=SEED)
        ax.set(title=f"{kind}", xlabel="std (input units)" if kind == "noise" else "severity (1-5)",
               ylabel="test accuracy")
        ax.legend(fontsize=7)
    fig.suptitle("Accuracy on perturbed test inputs (median and interquartile band over seeds)")
    fig.tight_layout()
    return fig


def robustness_section(runs: pd.DataFrame, plan: Plan, *, level: float, draw_figures: bool) -> list[Section]:
    """The plan's contrasts on the mean and worst accuracy over perturbations, and on each perturbation,
    one family; a figure of accuracy against severity."""
    columns = _robust_columns(runs)
    if not columns:
        return []
    tidy = tidy_scores(runs, columns)
    summaries = [metric for metric in columns if metric.split("/")[2] in SUMMARIES]
    summary = secondary_summary(tidy[tidy["metric"].isin(summaries)], plan, plan.contrasts, family="robustness",
                                level=level)
    per = secondary_summary(tidy[~tidy["metric"].isin(summaries)], plan, plan.contrasts,
                            family="robustness, per perturbation", level=level)
    # identical trainings score alike on every perturbed input: those rows say so, not "inconclusive"
    summary, per = (mark_by_construction(s, runs) if not s.empty else s for s in (summary, per))
    text = ["Every final model scored on the same perturbed test inputs (sal.training.robustness: Gaussian noise in "
            "units of the input's std; blur, contrast and translation at severities 1-5 for images). The mean and the "
            "worst over perturbations form one family; each perturbation another."]
    tables = [(caption, secondary_frame(s)) for caption, s in (("Mean and worst over perturbations", summary),
                                                               ("Each perturbation", per)) if not s.empty]
    figures = {}
    if draw_figures:
        labelled = tidy.assign(label=tidy["metric"].str.split("/").str[2])
        if (~labelled["label"].isin(SUMMARIES)).any():
            figures["Accuracy against perturbation severity"] = robustness_figure(labelled.dropna(subset=["value"]))
    return [Section("Robustness to perturbed inputs", text, tables, figures,
                    data={"robustness.csv": pd.concat([summary, per], ignore_index=True)})]
