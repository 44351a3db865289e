"""Significance report of an ablation: summary.csv, report.md, a self-contained report.html, table.tex
and figures, written atomically to one folder and logged as a report run in MLflow."""

from __future__ import annotations

import base64
import logging
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from ..core.names import (
    METRIC_STRESS,
    RECORD_DEFINITION,
    RECORD_PLAN,
    RECORD_PLANS,
    STATUS_DIVERGED,
    STATUS_FINISHED,
    TAG_ABLATION,
    TAG_BASELINE,
    TAG_CONTEXT,
    TAG_KIND,
    TAG_PAPER_TABLE,
    TAG_PLAN_HASH,
    TAG_STATUS,
)
from ..core.redact import mask_url
from ..metrics.scoring import rope_for
from ..spec.analysis import Plan, legacy_plan, override_plan, plan_changes
from ..spec.config import SpecError
from ..spec.fidelity import paper_departures
from ..stats.attribution import dose_figure, dose_response, mark_by_construction
from ..stats.factorial import factorial
from ..stats.selection import Selection, cell_of, run_cell, select_runs, tidy_scores
from ..stats.summary import FAMILY_MODES, ReportOptions, across_datasets, family_sizes, summarize
from ..tracking.store import client_for, experiment_name, get_experiment_record, log_summary, run_history, runs_frame
from . import figures
from .event_sharpness import GRAD_NORM, event_sharpness_section
from .findings import interventions, notes
from .outputs import report_folder
from .render import Section, render_latex, report_document, to_html, to_markdown
from .secondary import class_section, cost_section, robustness_section

__all__ = ["load_runs", "analysed_histories", "analyse", "write_report", "build_report", "paper_numbers", "Analysis",
           "Section"]

log = logging.getLogger(__name__)


def load_runs(uri: str, name: str, *, filter_string: str = "") -> pd.DataFrame:
    """The training runs of ablation ``name`` (one row each), or a clear error naming the known ones."""
    exp = experiment_name("ablation", name)
    where = f"tags.`{TAG_KIND}` = 'ablation'" + (f" and {filter_string}" if filter_string else "")
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
        parts.append(h.assign(run_id=run["run_id"], method=run_cell(run), seed=int(run["tags.seed"]),
                              dataset=run["tags.dataset"], context=run.get(f"tags.{TAG_CONTEXT}", "") or ""))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def analysed_histories(uri: str, name: str) -> pd.DataFrame:
    """The per-epoch histories of the runs a report of ablation ``name`` analyses (its current definition),
    when they logged the grad norm (what event_sharpness reads); empty otherwise."""
    runs = load_runs(uri, name)
    definition = get_experiment_record(uri, experiment_name("ablation", name), RECORD_DEFINITION)
    runs = select_runs(runs, definition).runs
    return _histories(uri, runs) if f"metrics.{GRAD_NORM}" in runs else pd.DataFrame()


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
            method = "baseline" if m["method.name"] == "base" else m["method.name"]
            hit = paper[(paper["dataset"] == row["dataset"]) & (paper["model"] == m["model.name"]) &
                        (paper["optimizer"] == m["optim.name"]) & (paper["method"] == method) &
                        (paper["resolution"].astype(str) == str(m["data.resolution"] or 64))]
            if len(hit):
                value = float(hit.iloc[0][column[row["metric"]]]) / 100
        values.append(value)
    return pd.Series(values, index=summary.index)


def _save(fig: plt.Figure, folder: Path, name: str) -> str:
    fig.savefig(folder / name, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return name


def _draw(tidy, summary, history, opts, cross, folder: Path) -> dict[str, str]:
    """Every figure that the data supports: {title: file name}."""
    out, primary = {}, opts.metrics[0]
    level = f"{opts.level * 100:g}%"
    out[f"Per-seed scores with mean and {level} CI"] = _save(figures.strip(tidy, summary, primary, opts.level), folder,
                                                             "strip.png")
    paired = opts.reference is not None
    if paired:
        out["Paired by seed"] = _save(figures.slopes(tidy, primary, opts.reference), folder, "slopes.png")
        out["Forest plot of paired differences"] = _save(figures.forest(summary, primary, opts.rope, opts.level),
                                                         folder,
                                                         "forest.png")
    if not history.empty:
        if "val/acc" in history:
            out["Learning curves"] = _save(figures.learning_curves(history), folder, "learning_curves.png")
        if "val/acc" in history and paired:
            out["Accuracy gap to the baseline per epoch (paper Fig. 10)"] = _save(
                figures.accuracy_gap(history, opts.reference), folder, "accuracy_gap.png")
        sal_like = [m for m in figures.SAL_FAMILY if m in set(history["method"])]
        if sal_like and METRIC_STRESS in history:
            out["Stress trace with interventions (paper Fig. 5)"] = _save(
                figures.stress_trace(history, sal_like[0]), folder, "stress_trace.png")
            sal_hist = history[history["method"].isin(sal_like + ([opts.reference] if paired else []))]
            out["Training loss vs stress (paper Fig. 6)"] = _save(figures.loss_vs_stress(sal_hist), folder,
                                                                 "loss_vs_stress.png")
            out["Stress histogram (paper Fig. 9)"] = _save(figures.stress_histogram(sal_hist), folder,
                                                          "stress_histogram.png")
    for metric in ("sharpness/trace", "sharpness/eig"):  # measured during training (the analysis section)
        if not history.empty and metric in history and history[metric].notna().any():
            from .landscape_plots import sharpness_figure

            out[f"{metric} per epoch with plastic events (paper Fig. 7)"] = _save(
                sharpness_figure(history, metric), folder, f"{metric.replace('/', '_')}.png")
            break
    fr = (cross.get(primary) or {}).get("friedman")
    if fr:
        out["Critical difference diagram"] = _save(figures.cd_diagram(fr["avg_ranks"], fr["cd"]), folder, "cd.png")
    return out


def _plan_hashes(runs: pd.DataFrame) -> list[str]:
    """The plan hashes the runs were launched with, in the order they first appear (oldest run first)."""
    if f"tags.{TAG_PLAN_HASH}" not in runs:
        return []
    ordered = runs.sort_values("start_time") if "start_time" in runs else runs
    return list(dict.fromkeys(ordered[f"tags.{TAG_PLAN_HASH}"].dropna()))


def _plan_in_force(uri: str, name: str, runs: pd.DataFrame) -> tuple[Plan | None, list[str]]:
    """The plan in force is the one the runs were launched with (the oldest run's plan hash); every later
    plan, on later runs or stored by a later launch, is a departure (docs/statistics.md, "The plan")."""
    experiment = experiment_name("ablation", name)
    latest = get_experiment_record(uri, experiment, RECORD_PLAN)
    plans = {h: Plan.from_json(p) for h, p in (get_experiment_record(uri, experiment, RECORD_PLANS) or {}).items()}
    if latest is not None:
        plans.setdefault(Plan.from_json(latest).hash, Plan.from_json(latest))
    latest = Plan.from_json(latest) if latest is not None else None
    launched = [h for h in _plan_hashes(runs) if h]
    if not launched or latest is None:
        return latest, []
    if launched[0] not in plans:
        return latest, [f"the runs were launched with plan {launched[0]}, which is not stored (a later launch "
                        f"replaced it); the analysis uses the stored plan {latest.hash}"]
    plan, departures = plans[launched[0]], []
    later = [h for h in launched[1:]] + ([latest.hash] if latest.hash not in launched else [])
    for h in later:
        changes = plan_changes(plan, plans[h]) if h in plans else ["not stored"]
        if not changes:
            continue
        where = "runs were launched under" if h in launched else "a later launch stored"
        departures.append(f"plan in force: hash {plan.hash} (the runs' first launch); {where} plan {h}: "
                          + "; ".join(changes) + " (the analysis keeps the plan in force)")
    return plan, departures


def _plan_for(uri: str, name: str, selection: Selection, *, baseline: str | None, metrics: list[str] | None,
              rope: float | None, alpha: float | None, correction: str | None) -> tuple[Plan, list[str]]:
    """The plan in force (see _plan_in_force), with the command line's overrides applied."""
    runs = selection.runs
    cells = sorted(set(cell_of(runs)))
    plan, departures = _plan_in_force(uri, name, runs)
    if plan is None:
        tagged = runs.get(f"tags.{TAG_BASELINE}", pd.Series(dtype=object)).dropna()
        legacy_baseline = baseline or (tagged.iloc[0] if len(tagged) else None)
        if not legacy_baseline:
            raise SpecError([f"ablation {name!r} has no stored analysis plan and declares no baseline; fix: "
                             f"re-launch it with `sal ablate FILE` or pass --baseline with one of {cells}"])
        plan = legacy_plan(cells, legacy_baseline, metrics or ["test/acc"])
    plan, overrides = override_plan(plan, cells=cells, baseline=baseline, metrics=metrics, rope=rope, alpha=alpha,
                                    correction=correction)
    if plan.seeds is not None:
        extra = sorted({int(s) for s in runs["tags.seed"]} - set(plan.seeds))
        if extra:
            departures.append(f"{len(extra)} seed(s) analysed that the plan in force does not declare (it has "
                              f"{len(plan.seeds)}): seeds {', '.join(map(str, extra))}")
    return plan, departures + overrides


def _filtered_out(all_runs: Selection, kept: Selection, plan: Plan) -> str | None:
    """The runs of planned contrasts' cells that a --filter removed, as a departure (None: none removed)."""
    def keys(sel: Selection) -> dict[tuple, bool]:
        r = sel.runs
        if r.empty:
            return {}
        cell = cell_of(r)
        diverged = r.get(f"tags.{TAG_STATUS}", pd.Series(STATUS_FINISHED, index=r.index)) == STATUS_DIVERGED
        return {(c, d, x, int(s)): bool(v) for c, d, x, s, v in zip(
            cell, r["tags.dataset"], r.get(f"tags.{TAG_CONTEXT}", pd.Series("", index=r.index)).fillna(""),
            r["tags.seed"], diverged)}

    planned = {x for c in plan.contrasts for x in (c.method, c.baseline)}
    before, after = keys(all_runs), keys(kept)
    removed = sorted(k for k in before if k not in after and k[0] in planned)
    if not removed:
        return None
    several = len({(d, x) for _, d, x, _ in removed}) > 1
    groups: dict[str, list[str]] = {}
    for cell, dataset, context, seed in removed:
        label = f"{cell} ({dataset}{' ' + context if context else ''})" if several else cell
        groups.setdefault(label, []).append(f"{seed}{' (diverged)' if before[(cell, dataset, context, seed)] else ''}")
    return (f"--filter removed {len(removed)} run(s) of planned contrasts: "
            + "; ".join(f"{label} seed {', '.join(seeds)}" for label, seeds in groups.items()))


def _restrict(plan: Plan, selection: Selection, filter_string: str, departures: list[str]) -> Plan:
    """Contrasts whose cells have no runs: dropped (and said) when a --filter removed them, else an error."""
    runs = selection.runs
    cells = set(cell_of(runs))
    dropped = [c for c in plan.contrasts if c.method not in cells or c.baseline not in cells]
    if not dropped:
        return plan
    missing = sorted({x for c in dropped for x in (c.method, c.baseline)} - cells)
    if not filter_string:
        raise SpecError([f"the analysis plan names cell(s) {missing} that have no runs; fix: run them (sal ablate "
                         f"FILE), or compare the cells that exist ({sorted(cells)}) with --baseline"])
    departures.append(f"contrasts dropped because --filter left no runs of {missing}: "
                      + ", ".join(f"{c.method} vs {c.baseline}" for c in dropped))
    kept = [c for c in plan.contrasts if c not in dropped]
    if plan.contrasts and not kept:
        raise SpecError([f"--filter={filter_string!r} leaves no contrast of the plan; fix: loosen the filter"])
    return Plan(kept, plan.metrics, plan.alpha, plan.rope, plan.correction, plan.treatment, plan.source)


def _check_metrics(runs: pd.DataFrame, metrics: list[str]) -> None:
    known = sorted(c.removeprefix("metrics.") for c in runs.columns if c.startswith("metrics."))
    unknown = [m for m in metrics if f"metrics.{m}" not in runs]
    if unknown:
        raise SpecError([f"--metric={m!r}: no run of this ablation logged it; fix: use one of {known}"
                         for m in unknown])


@dataclass
class Analysis:
    """Everything a report says, computed in memory (sal compare looks at it between sequential looks)."""

    name: str
    uri: str
    opts: ReportOptions
    selection: Selection
    tidy: pd.DataFrame
    summary: pd.DataFrame
    departures: list[str]
    factorial: pd.DataFrame
    interventions: pd.DataFrame
    cross: dict


def analyse(uri: str, name: str, *, baseline: str | None = None, metrics: list[str] | None = None,
            rope: float | None = None, alpha: float | None = None, correction: str | None = None,
            family: str = "plan", allow_unpaired: bool = False, random_state: int = 0, n_boot: int = 2000,
            level: float = 0.95, filter_string: str = "", seeds: list[int] | None = None) -> Analysis:
    """The analysis plan in force of ablation ``name`` run on its current results; each argument left None
    keeps the plan's value, and every departure from the plan is listed. ``seeds``: analyse only these
    (a sequential look of `sal compare`: a look never analyses more seeds than it is labelled with)."""
    if family not in FAMILY_MODES:
        raise SpecError([f"--family={family!r} is not a family layout; fix: use one of {list(FAMILY_MODES)}"])
    runs = load_runs(uri, name, filter_string=filter_string)
    if seeds is not None:
        runs = runs[runs["tags.seed"].astype(int).isin(seeds)]
    definition = get_experiment_record(uri, experiment_name("ablation", name), RECORD_DEFINITION)
    selection = select_runs(runs, definition)
    if selection.runs.empty:
        raise SpecError([f"ablation {name!r} has runs, but none of its current definition; fix: run `sal ablate "
                         "FILE` to train them"])
    plan, departures = _plan_for(uri, name, selection, baseline=baseline, metrics=metrics, rope=rope, alpha=alpha,
                                 correction=correction)
    if family != "plan":
        departures.append(f"correction families: per {family} (--family {family}) instead of the plan's families")
    plan = _restrict(plan, selection, filter_string, departures)
    if filter_string:  # a filter that removes runs of planned contrasts is a departure naming them
        unfiltered = load_runs(uri, name)
        if seeds is not None:
            unfiltered = unfiltered[unfiltered["tags.seed"].astype(int).isin(seeds)]
        removed = _filtered_out(select_runs(unfiltered, definition), selection, plan)
        if removed:
            departures.append(removed)
    _check_metrics(selection.runs, plan.metrics)
    opts = ReportOptions(plan=plan, family=family, allow_unpaired=allow_unpaired, n_boot=n_boot,
                         random_state=random_state, level=level)
    tidy = tidy_scores(selection.runs, opts.metrics)
    summary = mark_by_construction(summarize(tidy, opts), selection.runs)  # identical trainings: no verdict
    table = selection.runs.get(f"tags.{TAG_PAPER_TABLE}", pd.Series(dtype=object)).dropna()
    if len(table):
        summary["paper"] = paper_numbers(summary, tidy, int(table.iloc[0]))
    cross = {m: across_datasets(tidy, opts, m) for m in opts.metrics}
    return Analysis(name, uri, opts, selection, tidy, summary, departures, factorial(tidy, opts),
                    interventions(selection.runs), {m: c for m, c in cross.items() if c["n_sets"] >= 2})


def write_report(a: Analysis, out_dir: Path, *, sections: list[Section] = (), draw_figures: bool = True) -> Path:
    """Write the analysis as summary.csv, report.md, report.html, table.tex and figures; log it to MLflow."""
    from .flatness_report import flatness_sections  # ---- the flatness section when runs carry sharpness

    runs, plan, level = a.selection.runs, a.opts.plan, a.opts.level
    # the per-epoch histories: for the figures, and for the grad norm around plastic events when runs logged it
    wants_history = draw_figures or f"metrics.{GRAD_NORM}" in runs
    history = _histories(a.uri, runs) if wants_history else pd.DataFrame()
    sections = [*sections, *flatness_sections(runs, reference=a.opts.reference, contrasts=plan.contrasts,
                                              correction=a.opts.correction, level=level),
                *dose_sections(a.summary, runs, rope=a.opts.rope, draw_figures=draw_figures),
                *event_sharpness_section(history, plan, level=level, draw_figures=draw_figures),
                *robustness_section(runs, plan, level=level, draw_figures=draw_figures),
                *class_section(runs, plan, level=level), *cost_section(runs, plan, level=level)]
    if "paper" in a.summary:  # beside the paper's numbers: how these runs' setup differs from the paper's
        sections.append(Section("Departures from the paper's setup", paper_departures(a.selection.runs)))
    context = dict(name=a.name, summary=a.summary, opts=a.opts, cross=a.cross, n_runs=len(a.selection.runs),
                   notes=notes(a.summary, a.opts, a.selection, a.interventions), uri=mask_url(a.uri),
                   families=family_sizes(a.summary, a.opts), departures=a.departures, factorial=a.factorial,
                   interventions=a.interventions)
    # Writing: only sal's own files, staged and moved into place (sal.report.outputs); never a user's files.
    with report_folder(out_dir) as staging:
        (staging / "figures").mkdir()
        figs = _draw(a.tidy, a.summary, history, a.opts, a.cross, staging / "figures") if draw_figures else {}
        extra = [(sec, {title: _save(fig, staging / "figures", f"{_slug(sec.title)}-{i}.png")
                        for i, (title, fig) in enumerate(sec.figures.items())}) for sec in sections]
        a.summary.to_csv(staging / "summary.csv", index=False)
        # the hierarchical model's numbers as the report states them (both answers, errors, prior sensitivity)
        hierarchical = [c["hierarchical_table"].assign(metric=m) for m, c in a.cross.items()
                        if len(c.get("hierarchical_table", ()))]
        if hierarchical:
            pd.concat(hierarchical).to_csv(staging / "hierarchical.csv", index=False)
        for sec in sections:
            for file, frame in sec.data.items():
                frame.to_csv(staging / file, index=False)
        if not a.factorial.empty:
            a.factorial.to_csv(staging / "factorial.csv", index=False)
        doc = report_document(figures=figs, sections=extra, **context)
        (staging / "report.md").write_text(to_markdown(doc))
        files = list(figs.values()) + [f for _, names in extra for f in names.values()]
        images = {f: base64.b64encode((staging / "figures" / f).read_bytes()).decode() for f in files}
        (staging / "report.html").write_text(to_html(doc, images=images))
        (staging / "table.tex").write_text(render_latex(a.summary, a.opts))
    out_dir = Path(out_dir).expanduser().absolute()
    opts = a.opts
    log_summary(a.uri, experiment_name("ablation", a.name), run_name="report",
                tags={TAG_KIND: "report", TAG_ABLATION: a.name, TAG_PLAN_HASH: opts.plan.hash},
                params={"metrics": ",".join(opts.metrics), "rope": opts.rope, "alpha": opts.alpha,
                        "correction": opts.correction, "family": opts.family, "as_planned": not a.departures},
                metrics={"report/comparisons": float((a.summary["verdict"] != "reference").sum())}, folder=out_dir)
    return out_dir


def dose_sections(summary: pd.DataFrame, runs: pd.DataFrame, *, rope: float, draw_figures: bool) -> list[Section]:
    """The noise dose-response (sal.stats.attribution) as a report section, when the cells form a dose series."""
    table = dose_response(summary, runs)
    if table.empty:
        return []
    figures = {f"Dose-response, {m}": dose_figure(table, m, rope=rope_for(m, rope))
               for m in table["metric"].unique()} if draw_figures else {}
    text = ("Cells of one method that differ only in the noise scale (method.delta, method.lambda), each against "
            "its baseline: the paired difference against the dose, the noise std at the yield point (Delta + "
            "lambda * S_yield); noise_std_max is the largest std a seed injected (median over seeds).")
    shown = table.assign(dose=table["dose"].map("{:.3g}".format),
                         noise_std_max=table["noise_std_max"].map("{:.3g}".format),
                         delta=table["delta"].map("{:+.4f}".format),
                         ci=[f"[{lo:+.4f}, {hi:+.4f}]"
                             for lo, hi in zip(table["delta_ci_low"], table["delta_ci_high"])])
    shown = shown.drop(columns=["delta_ci_low", "delta_ci_high"])
    return [Section("Noise dose-response", [text], [("Paired effect by noise dose", shown)], figures)]


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_")[:40]


def build_report(uri: str, name: str, out_dir: Path, *, draw_figures: bool = True, sections: list[Section] = (),
                 **analysis_options) -> tuple[Path, pd.DataFrame]:
    """Analyse ablation ``name`` (see analyse) and write its report to ``out_dir``; returns it and the summary."""
    a = analyse(uri, name, **analysis_options)
    return write_report(a, out_dir, sections=sections, draw_figures=draw_figures), a.summary
