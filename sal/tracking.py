"""The only module that imports mlflow: log one run per training run, read runs back into pandas.

Default store: ``sqlite:///<repo>/mlflow/mlflow.db`` (MLflow 3 refuses the old file store), artifacts
beside it in ``mlflow/artifacts``; ``MLFLOW_TRACKING_URI`` or ``--tracking-uri`` point elsewhere, a
tracking server included.
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from .config import RunSpec, config_hash, flatten, to_yaml
from .train import Result

__all__ = [
    "default_tracking_uri", "client_for", "ensure_experiment", "log_result", "runs_frame", "run_history",
    "experiment_name", "log_artifact_dir", "log_summary", "RUN_STATUS",
]

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[1]
# train() status -> MLflow run status
RUN_STATUS = {"finished": "FINISHED", "diverged": "FAILED", "pruned": "KILLED", "failed": "FAILED"}


def default_tracking_uri() -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    base = REPO_ROOT if (REPO_ROOT / "pyproject.toml").is_file() else Path.cwd()
    return f"sqlite:///{base / 'mlflow' / 'mlflow.db'}"


def _quiet_mlflow() -> None:
    # Alembic prints every migration of a new SQLite store at INFO; keep the CLI's output readable.
    for name in ("alembic", "mlflow.store.db.utils", "mlflow.tracking", "mlflow.store"):
        logging.getLogger(name).setLevel(logging.WARNING)


@lru_cache(maxsize=8)
def client_for(uri: str):
    """An MlflowClient for ``uri``, creating the SQLite file's folder if needed."""
    _quiet_mlflow()
    from mlflow.tracking import MlflowClient

    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri)


def _artifact_root(uri: str) -> str | None:
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").as_uri()
    return None  # a server or database store decides where artifacts go


def ensure_experiment(uri: str, name: str) -> str:
    """The id of experiment ``name``, created if missing (safe when several workers race)."""
    from mlflow.exceptions import MlflowException

    client = client_for(uri)
    exp = _retry(client.get_experiment_by_name, name)
    if exp is not None:
        return exp.experiment_id
    try:
        root = _artifact_root(uri)
        return _retry(client.create_experiment, name, artifact_location=f"{root}/{name}" if root else None)
    except MlflowException:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def experiment_name(kind: str, name: str | None = None) -> str:
    """``sal-train``, ``sal-ablation-<name>``, ``sal-study-<name>``: one experiment per sweep."""
    return f"sal-{kind}" if not name else f"sal-{kind}-{name}"


@lru_cache(maxsize=1)
def _git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_tags(spec: RunSpec, *, kind: str, extra: dict[str, Any] | None = None) -> dict[str, str]:
    tags = {
        "sal.kind": kind, "method": spec.method.name, "dataset": spec.data.display_name, "model": spec.model.name,
        "optimizer": spec.optim.name, "seed": str(spec.seed), "git_sha": _git_sha(),
        "config_hash": config_hash(spec),
    }
    tags.update({k: str(v) for k, v in (extra or {}).items()})
    return tags


def _retry(call, *args, attempts: int = 8, **kwargs):
    """Run one MLflow client call, retrying while SQLite is locked by another worker's write."""
    for attempt in range(attempts):
        try:
            return call(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - MlflowException or SQLAlchemy's OperationalError
            if "locked" not in str(err).lower() or attempt == attempts - 1:
                raise
            time.sleep(0.1 * 2**attempt)


def _chunks(items: list, n: int):
    for i in range(0, len(items), n):
        yield items[i:i + n]


def log_result(result: Result, *, uri: str, experiment: str, kind: str, tags: dict[str, Any] | None = None,
               run_name: str | None = None) -> str:
    """Log one training run: tags, flattened spec as params, per-epoch and final metrics, artifacts."""
    from mlflow.entities import Metric, Param, RunTag

    client = client_for(uri)
    all_tags = run_tags(result.spec, kind=kind, extra=tags)
    all_tags.update({"sal.status": result.status, "sal.message": result.message[:4000],
                     "sal.device": result.device, "sal.n_params": str(result.n_params)})
    run = _retry(client.create_run, ensure_experiment(uri, experiment), run_name=run_name)
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, int(row["epoch"])) for row in result.history
               for k, v in row.items() if k != "epoch"]
    last_step = int(result.history[-1]["epoch"]) if result.history else 0
    metrics += [Metric(k, float(v), now, last_step) for k, v in result.final.items()]
    params = [Param(k, "" if v is None else str(v)) for k, v in flatten(result.spec).items()]
    tag_list = [RunTag(k, v) for k, v in all_tags.items()]
    for i, chunk in enumerate(_chunks(metrics, 1000)):
        _retry(client.log_batch, run_id, metrics=chunk, params=params if i == 0 else [],
               tags=tag_list if i == 0 else [])
    if not metrics:
        _retry(client.log_batch, run_id, params=params, tags=tag_list)
    client.log_text(run_id, to_yaml(result.spec), "spec.yaml")
    client.log_text(run_id, pd.DataFrame(result.history).to_csv(index=False), "history.csv")
    _retry(client.set_terminated, run_id, RUN_STATUS.get(result.status, "FAILED"))
    return run_id


def log_artifact_dir(uri: str, run_id: str, folder: Path) -> None:
    client_for(uri).log_artifacts(run_id, str(folder))


def runs_frame(uri: str, experiments: list[str] | None = None, filter_string: str = "") -> pd.DataFrame:
    """Runs as one row each: run_id, status, ``tags.*``, ``params.*`` and final ``metrics.*`` columns."""
    client = client_for(uri)
    if experiments is None:
        exp_ids = [e.experiment_id for e in client.search_experiments()]
    else:
        exps = [client.get_experiment_by_name(n) for n in experiments]
        exp_ids = [e.experiment_id for e in exps if e is not None]
    if not exp_ids:
        return pd.DataFrame(columns=["run_id", "status", "experiment_id"])
    rows, token = [], None
    while True:
        page = client.search_runs(exp_ids, filter_string=filter_string, max_results=1000, page_token=token)
        for r in page:
            row = {"run_id": r.info.run_id, "status": r.info.status, "experiment_id": r.info.experiment_id,
                   "start_time": r.info.start_time}
            row.update({f"tags.{k}": v for k, v in r.data.tags.items() if not k.startswith("mlflow.")})
            row.update({f"params.{k}": v for k, v in r.data.params.items()})
            row.update({f"metrics.{k}": v for k, v in r.data.metrics.items()})
            rows.append(row)
        token = page.token
        if not token:
            break
    return pd.DataFrame(rows)


def run_history(uri: str, run_id: str) -> pd.DataFrame:
    """The per-epoch history a run logged as ``history.csv``."""
    from mlflow.artifacts import download_artifacts

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per run floods the CLI
    path = download_artifacts(run_id=run_id, artifact_path="history.csv", tracking_uri=uri)
    return pd.read_csv(io.StringIO(Path(path).read_text()))


def log_summary(uri: str, experiment: str, *, run_name: str, tags: dict[str, Any], params: dict[str, Any],
                metrics: dict[str, float], folder: Path | None = None) -> str:
    """One run that is not a training run (a study's summary, a report): params, metrics, a folder."""
    from mlflow.entities import Metric, Param, RunTag

    client = client_for(uri)
    run = client.create_run(ensure_experiment(uri, experiment), run_name=run_name)
    now = int(time.time() * 1000)
    client.log_batch(
        run.info.run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
        params=[Param(k[:250], str(v)[:6000]) for k, v in params.items()],
        tags=[RunTag(k, str(v)) for k, v in {**tags, "git_sha": _git_sha()}.items()],
    )
    if folder is not None:
        client.log_artifacts(run.info.run_id, str(folder))
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id
