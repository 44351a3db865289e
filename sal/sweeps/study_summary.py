"""A study's summary: best trial, parameter importances and Optuna's plots, written to a folder and
logged as one MLflow run beside the study's training runs."""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ..core.names import ATTR_PER_SEED, TAG_KIND, TAG_STUDY, TAG_SUMMARY
from ..spec.config import to_yaml
from ..tracking.store import experiment_name, log_summary
from .study import best_spec, best_trial

__all__ = ["write_summary", "log_study_summary"]

log = logging.getLogger(__name__)


def _plots(study: optuna.Study, folder: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    multi = len(study.directions) > 1
    target = (lambda t: t.values[0]) if multi else None
    kw = {"target": target, "target_name": "objective 0" if multi else "Objective Value"}
    plots = {
        "optimization_history.png": lambda: ovm.plot_optimization_history(study, **kw),
        "parallel_coordinate.png": lambda: ovm.plot_parallel_coordinate(study, **kw),
        "param_importances.png": lambda: ovm.plot_param_importances(study, **kw),
    }
    if multi:
        plots["pareto_front.png"] = lambda: ovm.plot_pareto_front(study)
    written = []
    for filename, draw in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = draw()
            fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            fig.savefig(folder / filename, dpi=110, bbox_inches="tight")
            plt.close(fig)
            written.append(filename)
        except (ValueError, RuntimeError, IndexError) as err:  # too few trials for this plot
            log.info("skipped %s: %s", filename, err)
    return written


def write_summary(study: optuna.Study, folder: Path) -> dict:
    """best.yaml, importances.json, trials.csv and the plots; returns the summary as a dict."""
    folder.mkdir(parents=True, exist_ok=True)
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    summary: dict = {"study": study.study_name, "trials": {s.name: 0 for s in TrialState}}
    for t in study.get_trials(deepcopy=False):
        summary["trials"][t.state.name] += 1
    if not finished:
        return summary
    best = best_trial(study)
    summary.update({"best_trial": best.number, "best_values": best.values, "best_params": best.params,
                    "best_user_attrs": {k: v for k, v in best.user_attrs.items() if k.startswith(ATTR_PER_SEED)}})
    (folder / "best.yaml").write_text(to_yaml(best_spec(study)))
    if len(finished) >= 2 and study.best_trials:
        try:
            target = (lambda t: t.values[0]) if len(study.directions) > 1 else None
            with warnings.catch_warnings():  # "few trials per regime": a caveat of small studies, not news
                warnings.simplefilter("ignore")
                summary["importances"] = optuna.importance.get_param_importances(study, target=target)
        except (ValueError, RuntimeError) as err:
            log.info("no importances: %s", err)
    study.trials_dataframe().to_csv(folder / "trials.csv", index=False)
    summary["plots"] = _plots(study, folder)
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def log_study_summary(study: optuna.Study, uri: str) -> tuple[str, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        summary = write_summary(study, Path(tmp))
        metrics = {f"best/objective_{i}": v for i, v in enumerate(summary.get("best_values") or [])}
        metrics.update({f"importance/{k}": v for k, v in (summary.get("importances") or {}).items()})
        metrics.update({f"trials/{k.lower()}": v for k, v in summary["trials"].items()})
        run_id = log_summary(uri, experiment_name("study", study.study_name), run_name="summary",
                             tags={TAG_KIND: "study", TAG_STUDY: study.study_name, TAG_SUMMARY: "true"},
                             params=summary.get("best_params") or {}, metrics=metrics, folder=Path(tmp))
    return run_id, summary
