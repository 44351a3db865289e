"""Significance report of an ablation: summary.csv, report.md, a self-contained report.html, table.tex
and figures, written atomically to one folder and logged as a report run in MLflow."""

from __future__ import annotations

import base64
import logging
import math
import shutil
import tempfile
from importlib import resources
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from . import figures, stats
from .compare import ReportOptions, across_datasets, family_sizes, summarize, tidy_scores
from .config import SpecError
from .render import render_html, render_latex, render_markdown
from .tracking import client_for, experiment_name, log_summary, run_history, runs_frame

__all__ = ["load_runs", "build_report", "paper_numbers"]

log = logging.getLogger(__name__)


def load_runs(uri: str, name: str, *, filter_string: str = "") -> pd.DataFrame:
    """The training runs of ablation ``name`` (one row each), or a clear error naming the known ones."""
    exp = experiment_name("ablation", name)
    where = "tags.`sal.kind` = 'ablation'" + (f" and {filter_string}" if filter_string else "")
    runs = runs_frame(uri, [exp], filter_string=where)
    if runs.empty:
        known = sorted(e.name.removeprefix("sal-ablation-") for e in client_for(uri).search_experiments()
                       if e.name.startswith("sal-ablation-"))
        raise SpecError([f"no runs of ablation {name!r} in {uri}; fix: run `sal ablate` first, or use one of "
                         f"{known or 'none yet'} (or --tracking-uri)"])
    return runs


def _histories(uri: str, runs: pd.DataFrame) -> pd.DataFrame:
    parts = []
    for _, run in runs.iterrows():
        try:
            h = run_history(uri, run["run_id"])
        except Exception as err:  # noqa: BLE001 - a missing artifact costs a curve, not the report
            log.warning("no history for run %s: %s", run["run_id"], err)
            continue
        parts.append(h.assign(method=run.get("tags.sal.cell", run["tags.method"]), seed=int(run["tags.seed"]),
                              dataset=run["tags.dataset"], context=run.get("tags.sal.context", "") or ""))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def paper_numbers(summary: pd.DataFrame, tidy: pd.DataFrame, table: int) -> pd.Series:
    """The paper's single-run number beside each (dataset, context, method) row, as a fraction."""
    paper = pd.read_csv(resources.files("sal") / "reference" / "paper_results.csv")
    paper = paper[paper["table"] == table]
    meta = tidy.drop_duplicates(["dataset", "context", "method"]).set_index(["dataset", "context", "method"])
    column = {"test/acc": "top1", "test/top5": "top5"}
    values = []
    for _, row in summary.iterrows():
        value = math.nan
        if row["metric"] in column and (row["dataset"], row["context"], row["method"]) in meta.index:
            m = meta.loc[(row["dataset"], row["context"], row["method"])]
            method = "baseline" if row["method"] == row["baseline"] else row["method"]
            hit = paper[(paper["dataset"] == row["dataset"]) & (paper["model"] == m["model.name"]) &
                        (paper["optimizer"] == m["optim.name"]) & (paper["method"] == method) &
                        (paper["resolution"].astype(str) == str(m["data.resolution"] or 64))]
            if len(hit):
                value = float(hit.iloc[0][column[row["metric"]]]) / 100
        values.append(value)
    return pd.Series(values, index=summary.index)


def _notes(summary: pd.DataFrame, opts: ReportOptions) -> list[str]:
    """Warnings a reader must see before the numbers: too few seeds, exploratory results."""
    notes = []
    for family, m in family_sizes(summary, opts).items():
        n = int(summary[(summary["verdict"] != "reference")]["n"].min())
        if stats.too_few_seeds(n, alpha=opts.alpha, m=m):
            need = next(k for k in range(n, 64) if not stats.too_few_seeds(k, alpha=opts.alpha, m=m))
            notes.append(f"Family {family}: with {n} seeds, exact tests (Wilcoxon, sign-flip) cannot go below "
                         f"p = 2/2^{n} = {stats.exact_p_floor(n):.4g} > alpha/m = {opts.alpha / m:.4g}: they cannot "
                         f"reach significance after correction; {need} seeds are needed.")
    n_min = int(summary["n"].min())
    if 3 <= n_min <= 5:
        notes.append(f"{n_min} seeds per cell: results are exploratory. Use 10 or more seeds for claims.")
    return notes


def _save(fig: plt.Figure, folder: Path, name: str) -> str:
    fig.savefig(folder / name, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return name


def _draw(tidy, summary, history, opts, cross, folder: Path) -> dict[str, str]:
    """Every figure that the data supports: {title: file name}."""
    out, primary = {}, opts.metrics[0]
    out["Per-seed scores with mean and 95% CI"] = _save(figures.strip(tidy, summary, primary), folder, "strip.png")
    out["Paired by seed"] = _save(figures.slopes(tidy, primary, opts.baseline), folder, "slopes.png")
    out["Forest plot of paired differences"] = _save(figures.forest(summary, primary, opts.rope), folder, "forest.png")
    if not history.empty:
        if "val/acc" in history:
            out["Learning curves"] = _save(figures.learning_curves(history), folder, "learning_curves.png")
            out["Accuracy gap to the baseline per epoch (paper Fig. 10)"] = _save(
                figures.accuracy_gap(history, opts.baseline), folder, "accuracy_gap.png")
        sal_like = [m for m in figures.SAL_FAMILY if m in set(history["method"])]
        if sal_like and "sal/stress" in history:
            out["Stress trace with interventions (paper Fig. 5)"] = _save(
                figures.stress_trace(history, sal_like[0]), folder, "stress_trace.png")
            sal_hist = history[history["method"].isin(sal_like + [opts.baseline])]
            out["Training loss vs stress (paper Fig. 6)"] = _save(figures.loss_vs_stress(sal_hist), folder,
                                                                 "loss_vs_stress.png")
            out["Stress histogram (paper Fig. 9)"] = _save(figures.stress_histogram(sal_hist), folder,
                                                          "stress_histogram.png")
    fr = (cross.get(primary) or {}).get("friedman")
    if fr:
        out["Critical difference diagram"] = _save(figures.cd_diagram(fr["avg_ranks"], fr["cd"]), folder, "cd.png")
    return out


def build_report(uri: str, name: str, out_dir: Path, *, opts: ReportOptions | None = None, baseline: str | None = None,
                 filter_string: str = "", draw_figures: bool = True, **option_kwargs) -> tuple[Path, pd.DataFrame]:
    """Write the report of ablation ``name`` to ``out_dir`` (replaced atomically); returns it and the summary."""
    runs = load_runs(uri, name, filter_string=filter_string)
    if opts is None:
        tagged = runs.get("tags.sal.baseline", pd.Series(dtype=object)).dropna()
        baseline = baseline or (tagged.iloc[0] if len(tagged) else None)
        if not baseline:
            raise SpecError([f"ablation {name!r} declares no baseline; fix: pass --baseline with one of "
                             f"{sorted(set(runs.get('tags.sal.cell', runs['tags.method'])))}"])
        opts = ReportOptions(baseline=baseline, **option_kwargs)
    tidy = tidy_scores(runs, opts.metrics)
    summary = summarize(tidy, opts)
    table = runs.get("tags.sal.paper_table", pd.Series(dtype=object)).dropna()
    if len(table):
        summary["paper"] = paper_numbers(summary, tidy, int(table.iloc[0]))
    cross = {m: across_datasets(tidy, opts, m) for m in opts.metrics}
    cross = {m: c for m, c in cross.items() if c["n_sets"] >= 2}
    notes = _notes(summary, opts)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        (staging / "figures").mkdir()
        figs = _draw(tidy, summary, _histories(uri, runs) if draw_figures else pd.DataFrame(), opts, cross,
                     staging / "figures") if draw_figures else {}
        context = dict(name=name, summary=summary, opts=opts, notes=notes, cross=cross, figures=figs,
                       n_runs=len(runs), families=family_sizes(summary, opts), uri=uri)
        summary.to_csv(staging / "summary.csv", index=False)
        (staging / "report.md").write_text(render_markdown(**context))
        images = {f: base64.b64encode((staging / "figures" / f).read_bytes()).decode() for f in figs.values()}
        (staging / "report.html").write_text(render_html(images=images, **context))
        (staging / "table.tex").write_text(render_latex(summary, opts))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log_summary(uri, experiment_name("ablation", name), run_name="report",
                tags={"sal.kind": "report", "sal.ablation": name, "sal.baseline": opts.baseline},
                params={"metrics": ",".join(opts.metrics), "rope": opts.rope, "alpha": opts.alpha,
                        "correction": opts.correction, "family": opts.family},
                metrics={"report/comparisons": float((summary["verdict"] != "reference").sum())}, folder=out_dir)
    return out_dir, summary
