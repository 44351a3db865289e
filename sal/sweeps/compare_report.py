"""The protocol section of a `sal compare` report: the tuning budget each method got (read back from
Optuna), the configuration each method's best trial trained, tuning curves, evaluation seeds, the cost of
each method with its paired ratio to the treatment, and the sequential looks with why they stopped."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from ..core.names import TAG_KIND, TAG_TRIAL
from ..report.build import Analysis
from ..report.render import Section
from ..spec.config import apply_overrides, validate_run
from ..stats import inference as stats
from ..stats.selection import cell_of
from ..tracking.store import experiment_name, runs_frame
from .compare import CompareResult, looks_of, take_look

__all__ = ["protocol_section", "budget_table", "budget_curves", "tuning_curves", "cost_table"]


def budget_table(result: CompareResult, uri: str) -> pd.DataFrame:
    """Per method: trials by state, seeds per trial, sampler and pruner, and the training time spent."""
    t = result.spec.tuning
    rows = []
    for cell, study in result.studies.items():
        states = [tr.state for tr in study.get_trials(deepcopy=False)]
        runs = runs_frame(uri, [experiment_name("study", study.study_name)], f"tags.`{TAG_KIND}` = 'study'")
        spent = float(runs["metrics.time/train_s"].sum()) if "metrics.time/train_s" in runs else math.nan
        rows.append({"method": cell, "trials complete": states.count(TrialState.COMPLETE),
                     "pruned": states.count(TrialState.PRUNED), "failed": states.count(TrialState.FAIL),
                     "seeds / trial": len(t.seed_list), "sampler": t.sampler.name, "pruner": t.pruner.name,
                     "objective": f"{t.objective.aggregate}({t.objective.metric})",
                     "tuning train time (s)": round(spent, 1)})
    return pd.DataFrame(rows)


def best_table(result: CompareResult) -> pd.DataFrame:
    rows = []
    for cell, study in result.studies.items():
        best = study.best_trial
        rows.append({"method": cell, "best trial": best.number, "objective": round(best.value, 4),
                     "tuned values": ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                               for k, v in best.params.items())})
    return pd.DataFrame(rows)


def tuning_curves(studies: dict[str, optuna.Study]) -> plt.Figure:
    """Best-so-far objective against trials, one line per method (the same budget for each)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for cell, study in studies.items():
        done = sorted((tr for tr in study.get_trials(deepcopy=False) if tr.state == TrialState.COMPLETE),
                      key=lambda tr: tr.number)
        if not done:
            continue
        values = np.array([tr.value for tr in done], float)
        best = np.maximum.accumulate(values) if study.direction == optuna.study.StudyDirection.MAXIMIZE else \
            np.minimum.accumulate(values)
        ax.step([tr.number + 1 for tr in done], best, where="post", label=cell)
    ax.set(xlabel="trial", ylabel="best objective so far", title="Tuning curves (same budget per method)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def cost_table(analysis: Analysis, treatment: str | None) -> pd.DataFrame:
    """Per method on the evaluation seeds: mean train time and epochs, and the paired ratio of train time
    to the treatment's (geometric mean over seeds, 95% t-interval on the log ratios)."""
    runs = analysis.selection.runs
    if "metrics.time/train_s" not in runs:
        return pd.DataFrame()
    cell = cell_of(runs)
    frame = pd.DataFrame({"method": cell, "seed": runs["tags.seed"].astype(int),
                          "time": runs["metrics.time/train_s"].astype(float),
                          "epochs": pd.to_numeric(runs.get("params.train.epochs"), errors="coerce")})
    wide = frame.pivot_table(index="seed", columns="method", values="time")
    rows = []
    for method, g in frame.groupby("method"):
        row = {"method": method, "seeds": len(g), "train time (s)": round(g["time"].mean(), 2),
               "epochs": int(g["epochs"].mean()) if g["epochs"].notna().any() else ""}
        if treatment in wide and method != treatment:
            ratio = np.log((wide[method] / wide[treatment]).dropna().to_numpy())
            d = stats.describe(ratio)
            row[f"time / {treatment}"] = f"{math.exp(d['mean']):.3f}"
            row["95% CI"] = "" if math.isnan(d["ci_low"]) else f"[{math.exp(d['ci_low']):.3f}, " \
                                                                 f"{math.exp(d['ci_high']):.3f}]"
        rows.append(row)
    return pd.DataFrame(rows).fillna("")  # the treatment has no ratio to itself


def _trial_scores(study: optuna.Study, uri: str, test_metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Each complete tuning trial's objective value and the mean ``test_metric`` of its seed runs."""
    done = sorted((t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE),
                  key=lambda t: t.number)
    runs = runs_frame(uri, [experiment_name("study", study.study_name)], f"tags.`{TAG_KIND}` = 'study'")
    column, trial_tag = f"metrics.{test_metric}", f"tags.{TAG_TRIAL}"
    test = runs.groupby(runs[trial_tag].astype(int))[column].mean() if column in runs and trial_tag in runs \
        else pd.Series(dtype=float)
    return (np.array([t.value for t in done], float), np.array([test.get(t.number, np.nan) for t in done], float))


def budget_curves(result: CompareResult, uri: str, *, test_metric: str = "test/acc"
                  ) -> tuple[pd.DataFrame, str, plt.Figure | None]:
    """The answer at every tuning budget (Dodge et al. 2019), descriptive: per method the expected best
    validation score after n = 1..N of its complete trials and the expected test score of the trial chosen
    at n, and a sentence comparing the methods at one n, the fewest complete trials of any of them. No band
    and no verdict: the trials were drawn by an adaptive sampler and thinned by pruning, not drawn
    independently, so the curves describe the tuning runs (docs/statistics.md)."""
    higher = {cell: study.direction == optuna.study.StudyDirection.MAXIMIZE for cell, study in result.studies.items()}
    curves = {}
    for cell, study in result.studies.items():
        val, test = _trial_scores(study, uri, test_metric)
        if len(val) == 0:
            continue
        curves[cell] = (stats.expected_max_curve(val, higher_is_better=higher[cell]),
                        stats.expected_max_curve(val, higher_is_better=higher[cell], other=test))
    if not curves:
        return pd.DataFrame(), "", None
    common = min(len(curve) for curve, _ in curves.values())  # methods are compared at the same n only
    rows = []
    for cell, (curve, chosen) in curves.items():
        shown = sorted({1, *(2 ** k for k in range(1, 12) if 2 ** k < len(curve)), common, len(curve)})
        rows += [{"method": cell, "trials n": n, "E[best objective]": round(float(curve[n - 1]), 4),
                  f"E[{test_metric}] of the chosen trial": round(float(chosen[n - 1]), 4)} for n in shown]
    sentence = (f"at n = {common} trials, the fewest complete trials of any method: "
                + ", ".join(f"{cell} {curve[common - 1]:.4f}" for cell, (curve, _) in curves.items()))
    figure, ax = plt.subplots(figsize=(7, 4))
    for cell, (curve, _) in curves.items():
        ax.plot(np.arange(1, len(curve) + 1), curve, marker="o", label=cell)
    ax.axvline(common, color="grey", lw=0.8, ls=":")
    ax.set(xlabel="complete tuning trials n", ylabel="expected best objective",
           title="Expected best objective at n trials (descriptive, no band)")
    ax.legend()
    figure.tight_layout()
    return pd.DataFrame(rows), sentence, figure


def _looks_table(result: CompareResult, alpha: float) -> pd.DataFrame:
    looks = looks_of(result.spec.evaluation)
    rows = []
    for k, look in enumerate(result.looks):
        spent = stats.obrien_fleming_spending(look.seeds / looks[-1], alpha) if len(looks) > 1 else alpha
        decided = sum(v in ("better", "worse", "equivalent") for v in look.verdicts.values())
        rows.append({"look": k + 1, "seeds": look.seeds, "nominal p threshold": f"{look.threshold:.4g}",
                     "alpha spent so far": f"{spent:.4g}", "decided": f"{decided} of {len(look.verdicts)}"})
    return pd.DataFrame(rows)


def protocol_section(result: CompareResult, analysis: Analysis, uri: str) -> Section:
    spec = result.spec
    alpha = analysis.opts.plan.alpha if not spec.evaluation.sequential else (spec.analysis.alpha if spec.analysis
                                                                             else 0.05)
    tuning_seeds, eval_seeds = spec.tuning.seed_list, spec.evaluation.seed_list[:result.looks[-1].seeds]
    epochs = {cell: validate_run(apply_overrides(spec.base, over)).train.epochs for cell, over in spec.methods.items()}
    same = len(set(epochs.values())) == 1  # load_compare refuses unequal epochs; an older spec is named here
    budget = f" x {next(iter(epochs.values()))} epochs" if same else \
        " (epochs differ: " + ", ".join(f"{c} {e}" for c, e in epochs.items()) + ")"
    paragraphs = [
        f"Every method was tuned with {'the same budget' if same else 'this budget'}: {spec.tuning.trials} trials x "
        f"{len(tuning_seeds)} seeds{budget}, "
        f"sampler {spec.tuning.sampler.name} (seed {spec.tuning.sampler.seed}), pruner {spec.tuning.pruner.name}, "
        f"objective {spec.tuning.objective.aggregate}({spec.tuning.objective.metric}) on validation data, over "
        "each method's own knobs plus the shared optimizer knobs. Each method's best trial was then evaluated "
        "with the configuration that trial trained.",
        f"Tuning seeds {tuning_seeds}; evaluation seeds {eval_seeds[0]}..{eval_seeds[-1]} ({len(eval_seeds)} "
        f"seeds): they share {len(set(tuning_seeds) & set(eval_seeds))} seeds, so the verdicts are on fresh seeds.",
    ]
    if spec.evaluation.sequential:
        paragraphs.append(
            "Seeds were added until every contrast was decided (better, worse or equivalent), looking after "
            f"{', '.join(str(n) for n in looks_of(spec.evaluation))} seeds, with Lan-DeMets O'Brien-Fleming-type "
            f"alpha spending (alpha = {alpha}) combined with the family's correction: at each look a contrast is "
            "significant when its corrected p is below the look's nominal threshold, and equivalent when its "
            "repeated confidence interval (at 1 - threshold) lies inside the ROPE. The verdicts above are the "
            f"last look's. Stopped: {result.stop_reason}.")
    else:
        paragraphs.append(f"Fixed design: {result.stop_reason}.")
    tables = [("Tuning budget per method (counts read back from Optuna)", budget_table(result, uri)),
              ("Best configuration per method", best_table(result))]
    cost = cost_table(analysis, analysis.opts.plan.treatment)
    if not cost.empty:
        tables.append(("Cost per method on the evaluation seeds (paired ratio of train time to the treatment)",
                       cost))
    if spec.evaluation.sequential:
        tables.append(("Sequential looks", _looks_table(result, alpha)))
    test_metric = next((m for m in analysis.opts.plan.metrics if m.startswith("test/")), "test/acc")
    budget, at_common_n, budget_figure = budget_curves(result, uri, test_metric=test_metric)
    figures = {"Tuning curves (best so far against trials)": tuning_curves(result.studies)}
    if not budget.empty:
        paragraphs.append(
            "The answer at every tuning budget (Dodge et al. 2019), descriptive: each method's expected best "
            "objective after n of its complete trials, as if the trials it ran were drawn again with "
            f"replacement; {at_common_n}. The trials were proposed by the {result.spec.tuning.sampler.name} "
            "sampler one after another and thinned by pruning, not drawn independently, so these curves describe "
            "the tuning runs and carry no band and no verdict; the verdicts are the evaluation seeds' "
            "(docs/statistics.md).")
        tables.append(("Expected best objective at each tuning budget (descriptive), and the test score of the "
                       "trial chosen there", budget))
        figures["Expected best objective at n trials (descriptive)"] = budget_figure
    data = {"budget.csv": budget} if not budget.empty else {}
    return Section("Protocol: tuning, selection, evaluation", paragraphs, tables, figures, data=data)


def write_compare_report(result: CompareResult, uri: str, out_dir, *, draw_figures: bool = True):
    """The evaluation's report: the last look's own analysis (its seeds, its threshold, intervals at
    1 - threshold), so the report's verdicts are the ones the look counted, with the protocol section."""
    from ..report.build import write_report

    last = result.looks[-1]
    analysis = last.analysis if last.analysis is not None else \
        take_look(uri, result.spec.name, last.threshold, result.spec.evaluation.seed_list[:last.seeds]).analysis
    folder = write_report(analysis, out_dir, sections=[protocol_section(result, analysis, uri)],
                          draw_figures=draw_figures)
    return folder, analysis
