"""What a script calls: ``sal.train``, ``sal.run_ablation``, ``sal.run_study``, ``sal.build_report``.

Each takes the thing it works on first and everything else by keyword, accepts a spec object, a dict or
a YAML path, and runs the checks of the CLI before any compute (sal/sweeps/launch.py: plug-ins, workers, devices,
data folders, the queue and the MLflow store, the queue's recorded store, the artifact root). Heavy modules
(mlflow, optuna) are imported inside the functions, so ``import sal`` stays light.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .spec.config import RunSpec, SpecError, load_yaml, validate_run
from .sweeps.launch import ablation_specs, check_specs, check_stores, compare_specs, parse_gpus, study_specs
from .training.checkpoints import default_directory
from .training.plugin_check import check_plugins
from .training.plugins import register
from .training.run import EpochCallback, Result
from .training.run import train as _train
from .training.splits import DataBundle

if TYPE_CHECKING:
    import optuna
    import pandas as pd

__all__ = ["train", "run_ablation", "run_study", "build_report", "compare"]


def _run_spec(spec: RunSpec | dict | str | Path) -> RunSpec:
    if isinstance(spec, RunSpec):
        return spec
    if isinstance(spec, (str, Path)):
        return validate_run(load_yaml(spec))
    if isinstance(spec, dict):
        return validate_run(spec)
    raise SpecError([f"spec is a {type(spec).__name__}; fix: pass a RunSpec, a dict of settings or a YAML path"])


def train(spec: RunSpec | dict | str | Path, *, model: Callable | None = None,
          data: Callable | DataBundle | None = None, on_epoch: EpochCallback | None = None,
          checkpoint_dir: str | Path | None = None) -> Result:
    """Train one run; ``model`` / ``data`` may be a builder / loader function (see sal/training/plugins.py).

    >>> result = sal.train({"data": {"name": "digits"}, "method": {"name": "sal"}}, model=my_build)
    >>> result.final["test/acc"]

    A callable takes the place of ``model.name`` / ``data.name`` (recorded as ``module:qualname``) with
    ``model.args`` / ``data.args`` passed to it; a DataBundle is used as it is. Nothing is logged to MLflow.
    With ``train.checkpoint_every`` and a ``checkpoint_dir``, a run started again resumes where it stopped.
    """
    spec = _run_spec(spec)
    if model is not None:
        spec = spec.model_copy(update={"model": spec.model.model_copy(
            update={"name": register(model, section="model")})})
    bundle = data if isinstance(data, DataBundle) else None
    if data is not None and bundle is None:
        spec = spec.model_copy(update={"data": spec.data.model_copy(
            update={"name": register(data, section="data")})})
    if bundle is None:
        check_plugins([spec])
    return _train(spec, on_epoch=on_epoch, data=bundle, checkpoint_dir=checkpoint_dir)


def run_ablation(path: str | Path, *, seeds: int | None = None, overrides: dict[str, Any] | None = None,
                 storage: str | None = None, tracking_uri: str | None = None, workers: int = 1,
                 gpus: list[str] | None = None, retry_failed: bool = False, wait: bool = True,
                 checkpoint_dir: str | Path | None = None, new_tracking_store: bool = False) -> dict[str, Any]:
    """Run (or resume) the ablation in a YAML file, like ``sal ablate``; returns the queue report.

    >>> sal.run_ablation("ablations/quick.yaml", seeds=3, overrides={"train.epochs": 5})
    """
    from .queue.engine import StorageRef
    from .sweeps import ablation
    from .tracking.store import default_tracking_uri

    spec, items = ablation.load_ablation(path, overrides or {}, seeds=seeds)
    gpus = parse_gpus(gpus)
    check_specs(ablation_specs(items), workers=workers, gpus=gpus)
    ref, uri = StorageRef.resolve(storage, spec.name, "ablation"), tracking_uri or default_tracking_uri()
    check_stores(ref, spec.name, uri, new_store=new_tracking_store)
    return ablation.run_ablation(spec, items, ref=ref, uri=uri, workers=workers, gpus=gpus, retry_failed=retry_failed,
                                 wait=wait, checkpoint_dir=str(checkpoint_dir or default_directory()))


def run_study(path: str | Path, *, n_trials: int | None = None, timeout: float | None = None,
              seeds: int | None = None, overrides: dict[str, Any] | None = None, storage: str | None = None,
              tracking_uri: str | None = None, workers: int = 1, gpus: list[str] | None = None,
              force_new: bool = False, checkpoint_dir: str | Path | None = None,
              new_tracking_store: bool = False) -> optuna.Study:
    """Run (or resume) the Optuna study in a YAML file, like ``sal study run``; returns the study.

    >>> study = sal.run_study("studies/quick.yaml", n_trials=10)
    >>> study.best_trial.params
    """
    from .queue.engine import StorageRef
    from .spec.study_spec import load_study_spec
    from .sweeps import study as studies
    from .tracking.store import default_tracking_uri

    spec = load_study_spec(path, overrides or {}, n_trials=n_trials, timeout=timeout, seeds=seeds)
    gpus = parse_gpus(gpus)
    check_specs(study_specs(spec), workers=workers, gpus=gpus)
    ref, uri = StorageRef.resolve(storage, spec.name, "study"), tracking_uri or default_tracking_uri()
    check_stores(ref, spec.name, uri, new_store=new_tracking_store)
    return studies.run_study(spec, ref=ref, uri=uri, workers=workers, gpus=gpus, force_new=force_new,
                             checkpoint_dir=str(checkpoint_dir or default_directory()))


def build_report(name: str, *, out: str | Path | None = None, tracking_uri: str | None = None,
                 **options: Any) -> tuple[Path, pd.DataFrame]:
    """Write the significance report of ablation ``name`` (like ``sal report``); returns its folder and
    the summary table. ``options``: draw_figures and the analysis options of sal.report.build.analyse.

    >>> folder, summary = sal.build_report("quick", metrics=["test/acc"])
    """
    from .report import build as report
    from .tracking.store import default_tracking_uri

    folder = Path(out) if out is not None else Path("reports") / name
    return report.build_report(tracking_uri or default_tracking_uri(), name, folder, **options)


def compare(path: str | Path, *, overrides: dict[str, Any] | None = None, storage: str | None = None,
            tracking_uri: str | None = None, workers: int = 1, gpus: list[str] | None = None,
            out: str | Path | None = None, draw_figures: bool = True, checkpoint_dir: str | Path | None = None
            ) -> tuple[Path, pd.DataFrame]:
    """Run the fair protocol of a compare YAML, like ``sal compare``: tune every method with one budget,
    evaluate the best of each on fresh seeds (until decided), write the report; returns its folder and the
    summary table.

    >>> folder, summary = sal.compare("compare/quick.yaml")
    """
    from .queue.engine import StorageRef
    from .report.outputs import check_output_folder
    from .sweeps.compare import load_compare, run_compare
    from .sweeps.compare_report import write_compare_report
    from .tracking.store import default_tracking_uri

    spec = load_compare(path, overrides or {})
    gpus = parse_gpus(gpus)
    check_specs(compare_specs(spec), workers=workers, gpus=gpus)
    folder = Path(out) if out is not None else Path("reports") / spec.name
    check_output_folder(folder)
    ref, uri = StorageRef.resolve(storage, spec.name, "compare"), tracking_uri or default_tracking_uri()
    check_stores(ref, spec.name, uri, recorded=False)
    result = run_compare(spec, ref=ref, uri=uri, workers=workers, gpus=gpus,
                         checkpoint_dir=str(checkpoint_dir or default_directory()))
    folder, analysis = write_compare_report(result, uri, folder, draw_figures=draw_figures)
    return folder, analysis.summary
