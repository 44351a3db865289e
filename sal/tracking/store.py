"""The only module that imports mlflow: log one run per training run, read runs back into pandas.

Default store: ``sqlite:///<repo>/mlflow/mlflow.db`` (MLflow 3 refuses the old file store), artifacts
beside it in ``mlflow/artifacts``; ``MLFLOW_TRACKING_URI`` or ``--tracking-uri`` point elsewhere, a
tracking server included.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import subprocess
import threading
import time
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..core.names import (
    ARTIFACT_HISTORY,
    ARTIFACT_PER_CLASS,
    ARTIFACT_SPEC,
    ARTIFACT_TRAJECTORY,
    ARTIFACT_WEIGHTS,
    STATUS_DIVERGED,
    STATUS_FAILED,
    STATUS_FINISHED,
    STATUS_KILLED,
    STATUS_PRUNED,
    STATUS_RUNNING,
    TAG_COMPARE,
    TAG_DEVICE,
    TAG_GROUP,
    TAG_KIND,
    TAG_MESSAGE,
    TAG_N_PARAMS,
    TAG_STAGE,
    TAG_STATUS,
)
from ..core.paths import REPO_ROOT, default_base
from ..core.storelock import store_creation_lock
from ..spec.config import RunSpec, SpecError, config_hash, flatten, to_yaml

if TYPE_CHECKING:  # annotations only: tracking sits below training and never imports it
    from ..training.run import Result

__all__ = [
    "default_tracking_uri", "client_for", "ensure_experiment", "log_result", "runs_frame", "run_history",
    "experiment_name", "log_summary", "RUN_STATUS", "LiveRun", "kill_runs", "kill_duplicates", "runs_with_tag",
    "start_parent", "end_parent", "compare_parent", "end_compare_parents",
    "annotate_run", "dataset_input", "PARENT_TAG", "PARENT_KEY", "EXPERIMENT_KIND", "ARTIFACT_ENV", "artifact_root",
    "default_local_artifacts",
    "set_experiment_record", "get_experiment_record", "run_ids", "check_filter",
    "WEIGHTS_ARTIFACT", "TRAJECTORY_ARTIFACT", "run_tensors", "run_spec_yaml", "log_run_metrics", "log_run_figure",
]

log = logging.getLogger(__name__)
# train() status -> MLflow run status
RUN_STATUS = {STATUS_FINISHED: "FINISHED", STATUS_DIVERGED: "FAILED", STATUS_PRUNED: "KILLED", STATUS_FAILED: "FAILED"}
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own nesting tag: the UI groups children under their parent
PARENT_KEY = TAG_GROUP  # names the group a parent run stands for (ablation cell or study trial)
# MLflow 3 picks an experiment's view by this tag; without it a new experiment may open in the GenAI
# (traces) view. "custom_model_development" is the UI's model-training view (runs table, charts).
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def default_tracking_uri() -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    base = default_base()
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
        # First use creates the store's tables: serialise it across launchers that start together.
        with store_creation_lock(uri.removeprefix("sqlite:///")):
            client = MlflowClient(tracking_uri=uri)
            _retry(client.search_experiments, max_results=1)
        return client
    return MlflowClient(tracking_uri=uri)


ARTIFACT_ENV = "SAL_ARTIFACT_ROOT"  # where new experiments keep their artifacts: a folder or s3://, gs://, ...
_DATABASE_SCHEMES = ("postgresql", "mysql", "mssql", "oracle")


def artifact_root(uri: str) -> str | None:
    """Where a new experiment of store ``uri`` keeps its artifacts: ``$SAL_ARTIFACT_ROOT``, else beside a
    SQLite file (``mlflow/artifacts``), else for a database store the repository's ``mlflow/artifacts``
    (MLflow's own default is ``./mlruns`` of whatever folder a command runs in). None for a tracking
    server: it decides (``mlflow/server.sh --artifacts``)."""
    env = os.environ.get(ARTIFACT_ENV)
    if env:
        return env if "://" in env else Path(env).expanduser().absolute().as_uri()
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).expanduser().absolute().parent / "artifacts").as_uri()
    if uri.split("://", 1)[0].split("+", 1)[0] in _DATABASE_SCHEMES:
        base = default_base()
        return (base / "mlflow" / "artifacts").as_uri()
    return None


def default_local_artifacts(uri: str) -> str | None:
    """The local folder a database store's artifacts would default to (no $SAL_ARTIFACT_ROOT), else None:
    on a sweep over several machines each would write its own copy of that folder."""
    if os.environ.get(ARTIFACT_ENV) or uri.split("://", 1)[0].split("+", 1)[0] not in _DATABASE_SCHEMES:
        return None
    return artifact_root(uri)


def ensure_experiment(uri: str, name: str) -> str:
    """The id of experiment ``name``, created if missing (safe when several workers race)."""
    from mlflow.exceptions import MlflowException

    client = client_for(uri)
    exp = _retry(client.get_experiment_by_name, name)
    if exp is not None:
        if EXPERIMENT_KIND[0] not in exp.tags:  # an experiment of an older sal: open it in the training view too
            _retry(client.set_experiment_tag, exp.experiment_id, *EXPERIMENT_KIND)
        return exp.experiment_id
    try:
        root = artifact_root(uri)
        return _retry(client.create_experiment, name, artifact_location=f"{root}/{name}" if root else None,
                      tags=dict([EXPERIMENT_KIND]))
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
        TAG_KIND: kind, "method": spec.method.name, "dataset": spec.data.display_name, "model": spec.model.name,
        "optimizer": spec.optim.name, "seed": str(spec.seed), "git_sha": _git_sha(),
        "config_hash": config_hash(spec),
    }
    tags.update({k: str(v) for k, v in (extra or {}).items()})
    return tags


# Races another process may win: SQLite locked by its write, or (on a tracking server's PostgreSQL store)
# its insert of the same tag landing between MLflow's check and ours; a retry then sees its row.
_RACES = ("locked", "duplicate key", "unique constraint")


def _retry(call, *args, attempts: int = 8, **kwargs):
    """Run one MLflow client call, retrying while it loses a race with another worker's write."""
    for attempt in range(attempts):
        try:
            return call(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - MlflowException or SQLAlchemy's OperationalError
            message = str(err).lower()
            if not any(race in message for race in _RACES) or attempt == attempts - 1:
                raise
            time.sleep(0.1 * 2**attempt)


def _chunks(items: list, n: int):
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _metrics(rows: list[dict[str, float]]):
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, int(row["epoch"])) for row in rows for k, v in row.items() if k != "epoch"]


def dataset_input(spec: RunSpec):
    """The run's data set as an MLflow input: its name, a digest of its DataSpec and where it comes from."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    data = spec.data.model_dump(mode="json")
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
    source = {"uri": spec.data.root or f"sal://{spec.data.name}"}
    dataset = Dataset(name=spec.data.display_name, digest=digest, source_type="local", source=json.dumps(source),
                      profile=json.dumps({k: v for k, v in data.items() if v is not None}))
    return DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "training")])


class LiveRun:
    """One training run in MLflow while it trains: created RUNNING with its tags, params and data set,
    per-epoch metrics streamed by a background thread, ended with the result's status.

    ``log_epoch(epoch, row)`` has the shape of ``train(on_epoch=...)`` and only appends to a buffer:
    a thread writes the buffer every ``flush_s`` seconds in one batch, so an epoch never waits for
    the store. Used as a context manager, an exception ends the run FAILED (KILLED on Ctrl-C).
    """

    def __init__(self, uri: str, experiment: str, *, kind: str, tags: dict[str, Any] | None = None,
                 run_name: str | None = None, parent_run_id: str | None = None, flush_s: float = 2.0):
        self.uri, self.experiment, self.kind, self.run_name = uri, experiment, kind, run_name
        self.tags = dict(tags or {})
        if parent_run_id:
            self.tags[PARENT_TAG] = parent_run_id
        self.flush_s = flush_s
        self.run_id: str | None = None
        self._buffer: list = []
        self._streamed: set[int] = set()  # epochs handed to the buffer (a resumed run streams only its new ones)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, spec: RunSpec) -> str:
        from mlflow.entities import Param, RunTag

        client = client_for(self.uri)
        tags = run_tags(spec, kind=self.kind, extra={**self.tags, TAG_STATUS: STATUS_RUNNING})
        run = _retry(client.create_run, ensure_experiment(self.uri, self.experiment), run_name=self.run_name,
                     tags=tags)
        self.run_id = run.info.run_id
        parent = self.tags.get(PARENT_TAG)
        if parent and _retry(client.get_run, parent).info.status == "SCHEDULED":  # its first seed starts
            _retry(client.update_run, parent, status="RUNNING")
        params = [Param(k, "" if v is None else str(v)) for k, v in flatten(spec).items()]
        _retry(client.log_batch, self.run_id, params=params, tags=[RunTag(TAG_DEVICE, spec.train.device)])
        try:
            _retry(client.log_inputs, self.run_id, datasets=[dataset_input(spec)])
        except Exception as err:  # noqa: BLE001 - a store without dataset support still gets the run
            log.warning("data set input not logged: %s", err)
        self._thread = threading.Thread(target=self._flush_loop, daemon=True, name=f"mlflow-{self.run_id[:8]}")
        self._thread.start()
        return self.run_id

    def log_epoch(self, epoch: int, row: dict[str, float]) -> None:
        """Queue one epoch's row (step = epoch); the background thread writes it."""
        metrics = _metrics([{**row, "epoch": epoch}])
        with self._lock:
            self._buffer.extend(metrics)
        self._streamed.add(epoch)

    def _flush(self) -> None:
        with self._lock:
            pending, self._buffer = self._buffer, []
        for chunk in _chunks(pending, 1000):
            _retry(self.client.log_batch, self.run_id, metrics=chunk)

    @property
    def client(self):
        return client_for(self.uri)

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.flush_s):
            try:
                self._flush()
            except Exception as err:  # noqa: BLE001 - a lost batch costs a curve point, never the run
                log.warning("epoch metrics of run %s not written: %s", self.run_id, err)

    def _stop_streaming(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._flush()

    def finish(self, result: Result) -> str:
        """Epochs not streamed yet, final metrics, artifacts, then FINISHED/FAILED/KILLED by the result."""
        from mlflow.entities import Metric, RunTag

        self._stop_streaming()
        client = self.client
        now = int(time.time() * 1000)
        metrics = _metrics([row for row in result.history if int(row["epoch"]) not in self._streamed])
        last_step = int(result.history[-1]["epoch"]) if result.history else 0
        metrics += [Metric(k, float(v), now, last_step) for k, v in result.final.items()]
        tags = [RunTag(k, str(v)) for k, v in {TAG_STATUS: result.status, TAG_MESSAGE: result.message[:4000],
                                               TAG_DEVICE: result.device,
                                               TAG_N_PARAMS: result.n_params, **result.tags}.items()]
        for i, chunk in enumerate(_chunks(metrics, 1000) if metrics else [[]]):
            _retry(client.log_batch, self.run_id, metrics=chunk, tags=tags if i == 0 else [])
        client.log_text(self.run_id, to_yaml(result.spec), ARTIFACT_SPEC)
        client.log_text(self.run_id, pd.DataFrame(result.history).to_csv(index=False), ARTIFACT_HISTORY)
        if result.per_class:
            client.log_text(self.run_id, pd.DataFrame(result.per_class).to_csv(index=False), ARTIFACT_PER_CLASS)
        _log_analysis(client, self.run_id, result.analysis)  # weights.pt / trajectory.pt when enabled
        _retry(client.set_terminated, self.run_id, RUN_STATUS.get(result.status, "FAILED"))
        return self.run_id

    def __enter__(self) -> LiveRun:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None or self.run_id is None:
            return
        self._stop_streaming()
        # Ctrl-C, or a trial this worker no longer holds (sal.queue.workqueue.Superseded): stopped, not failed
        status = "FAILED" if issubclass(exc_type, Exception) else "KILLED"
        _retry(self.client.set_tag, self.run_id, TAG_STATUS, STATUS_KILLED if status == "KILLED" else STATUS_FAILED)
        if status == "KILLED" and str(exc):
            _retry(self.client.set_tag, self.run_id, TAG_MESSAGE, str(exc)[:4000])
        _retry(self.client.set_terminated, self.run_id, status)


def log_result(result: Result, *, uri: str, experiment: str, kind: str, tags: dict[str, Any] | None = None,
               run_name: str | None = None, parent_run_id: str | None = None) -> str:
    """Log a run that has already trained (``sal train``): the same run a LiveRun leaves."""
    live = LiveRun(uri, experiment, kind=kind, tags=tags, run_name=run_name, parent_run_id=parent_run_id)
    live.start(result.spec)
    return live.finish(result)


def kill_runs(uri: str, run_ids: list[str], reason: str = "worker died") -> list[str]:
    """End the RUNNING ones of ``run_ids`` as KILLED (their worker is gone); returns those it ended."""
    client = client_for(uri)
    killed = []
    for run_id in run_ids:
        try:
            run = _retry(client.get_run, run_id)
        except Exception as err:  # noqa: BLE001 - a run another store holds, or deleted by the user
            log.warning("run %s not found: %s", run_id, err)
            continue
        if run.info.status == "RUNNING":
            _retry(client.set_tag, run_id, TAG_STATUS, STATUS_KILLED)
            _retry(client.set_tag, run_id, TAG_MESSAGE, reason)
            _retry(client.set_terminated, run_id, "KILLED")
            killed.append(run_id)
    if killed:
        log.warning("marked %d MLflow run(s) KILLED: %s", len(killed), reason)
    return killed


def kill_duplicates(uri: str, run_ids: list[str], reason: str) -> None:
    """End ``run_ids`` KILLED whatever their status: runs a stalled worker finished after its trial had been
    queued again and trained by another worker (the one result of that seed is the other run)."""
    client = client_for(uri)
    for run_id in run_ids:
        _retry(client.set_tag, run_id, TAG_STATUS, STATUS_KILLED)
        _retry(client.set_tag, run_id, TAG_MESSAGE, reason)
        _retry(client.set_terminated, run_id, "KILLED")
    log.warning("marked %d MLflow run(s) KILLED: %s", len(run_ids), reason)


def runs_with_tag(uri: str, experiment: str, key: str, value: str) -> list:
    """Runs of ``experiment`` whose tag ``key`` equals ``value``, newest first (MLflow Run objects)."""
    client = client_for(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    escaped = value.replace("'", "\\'")
    return list(_retry(client.search_runs, [exp.experiment_id], filter_string=f"tags.`{key}` = '{escaped}'",
                       max_results=1000, order_by=["attributes.start_time DESC"]))


def start_parent(uri: str, experiment: str, *, kind: str, key: str, run_name: str, tags: dict[str, Any],
                 params: dict[str, Any] | None = None, spec: RunSpec | None = None, scheduled: bool = False) -> str:
    """The parent run that groups the seeds of one ablation cell or study trial: the existing one of
    ``key`` (set RUNNING again when a sweep resumes) or a new one. Runs of a `sal compare` (tag
    ``sal.compare``) nest one level higher, under the compare's own parent run in this experiment."""
    from mlflow.entities import Param

    # ``scheduled``: the parent waits as SCHEDULED and its first seed's run sets it RUNNING (LiveRun.start), so
    # the runs table shows RUNNING only for cells that train.
    status = "SCHEDULED" if scheduled else "RUNNING"
    client = client_for(uri)
    found = runs_with_tag(uri, experiment, PARENT_KEY, key)
    if found:
        run_id = found[0].info.run_id
        if found[0].info.status not in ("RUNNING", status):
            _retry(client.update_run, run_id, status=status)
        return run_id
    all_tags = {TAG_KIND: kind, PARENT_KEY: key, "git_sha": _git_sha(), **{k: str(v) for k, v in tags.items()}}
    if kind != "compare" and TAG_COMPARE in tags:
        all_tags[PARENT_TAG] = compare_parent(uri, experiment, str(tags[TAG_COMPARE]), str(tags.get(TAG_STAGE)))
    run = _retry(client.create_run, ensure_experiment(uri, experiment), run_name=run_name, tags=all_tags)
    if scheduled:
        _retry(client.update_run, run.info.run_id, status="SCHEDULED")
    if params:
        _retry(client.log_batch, run.info.run_id,
               params=[Param(k[:250], "" if v is None else str(v)[:6000]) for k, v in params.items()])
    if spec is not None:  # fills the runs table's Dataset column, one of the few it shows by default
        with contextlib.suppress(Exception):
            _retry(client.log_inputs, run.info.run_id, datasets=[dataset_input(spec)])
    return run.info.run_id


def compare_parent(uri: str, experiment: str, name: str, stage: str) -> str:
    """The run of one `sal compare` stage (tune|evaluate) in one experiment, parent of its cells or trials."""
    return start_parent(uri, experiment, kind="compare", key=f"compare|{name}|{stage}",
                        run_name=f"compare {name}: {stage}", tags={TAG_COMPARE: name, TAG_STAGE: stage})


def end_compare_parents(uri: str, experiments: list[str], name: str) -> None:
    """A compare is over: its stage runs end FINISHED."""
    for experiment in experiments:
        for run in runs_with_tag(uri, experiment, TAG_COMPARE, name):
            if run.data.tags.get(TAG_KIND) == "compare" and run.info.status == "RUNNING":
                _retry(client_for(uri).set_terminated, run.info.run_id, "FINISHED")


def annotate_run(uri: str, run_id: str, *, metrics: dict[str, float], step: int = 0,
                 tags: dict[str, Any] | None = None) -> None:
    """Metrics and tags known only after a run ended (a study trial's aggregate over its seeds)."""
    from mlflow.entities import Metric, RunTag

    now = int(time.time() * 1000)
    _retry(client_for(uri).log_batch, run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()],
           tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()])


def end_parent(uri: str, run_id: str, *, status: str, metrics: dict[str, float] | None = None,
               run_name: str | None = None) -> None:
    """Key metrics of the group (e.g. the mean over seeds) and its end status (FINISHED/FAILED/KILLED).

    ``run_name`` may carry the group's result: MLflow 3.17's runs table shows no metric column until a
    user picks one (by default: name, created, dataset, duration, source, models), but it shows names.
    """
    from mlflow.entities import Metric

    client = client_for(uri)
    if _retry(client.get_run, run_id).info.status != "RUNNING":
        return  # ended already (by the worker that ran its last seed); its end time stays
    if run_name:
        _retry(client.update_run, run_id, name=run_name)
    now = int(time.time() * 1000)
    if metrics:
        _retry(client.log_batch, run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
    _retry(client.set_terminated, run_id, status)


_TAG_CHUNK = 15000  # below MLflow's 20000-character limit on an experiment tag's value


def set_experiment_record(uri: str, experiment: str, name: str, value: Any) -> None:
    """Store a JSON value on the experiment as tags ``name.0``, ``name.1``, ... (and ``name.chunks``), so a
    report reads what a launch declared (the ablation's definition, its analysis plan) from MLflow alone."""
    import json

    client = client_for(uri)
    exp_id = ensure_experiment(uri, experiment)
    text = json.dumps(value, sort_keys=True)
    chunks = [text[i:i + _TAG_CHUNK] for i in range(0, len(text), _TAG_CHUNK)] or [""]
    for i, chunk in enumerate(chunks):
        _retry(client.set_experiment_tag, exp_id, f"{name}.{i}", chunk)
    _retry(client.set_experiment_tag, exp_id, f"{name}.chunks", str(len(chunks)))


def get_experiment_record(uri: str, experiment: str, name: str) -> Any:
    """The JSON value set_experiment_record stored, or None."""
    import json

    exp = client_for(uri).get_experiment_by_name(experiment)
    if exp is None or f"{name}.chunks" not in exp.tags:
        return None
    return json.loads("".join(exp.tags[f"{name}.{i}"] for i in range(int(exp.tags[f"{name}.chunks"]))))


def run_ids(uri: str, experiment: str) -> set[str]:
    """The ids of the experiment's active runs (deleted runs are gone for sal too)."""
    runs = runs_frame(uri, [experiment])
    return set(runs["run_id"]) if len(runs) else set()


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


def check_filter(filter_string: str) -> None:
    """A malformed ``--filter`` as a SpecError (MLflow's parse error), before anything is read or written."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.search_utils import SearchUtils

    try:
        SearchUtils.parse_search_filter(filter_string)
    except MlflowException as err:
        raise SpecError([f"--filter={filter_string!r}: {err.message}; fix: write MLflow search syntax, e.g. "
                         "--filter \"tags.dataset = 'digits'\" or \"params.`optim.lr` = '0.003'\""]) from None


def run_history(uri: str, run_id: str) -> pd.DataFrame:
    """The per-epoch history a run logged as ``history.csv``."""
    from mlflow.artifacts import download_artifacts

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per run floods the CLI
    path = download_artifacts(run_id=run_id, artifact_path=ARTIFACT_HISTORY, tracking_uri=uri)
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


# ---------------------------------------------------------------- landscape artifacts

WEIGHTS_ARTIFACT = ARTIFACT_WEIGHTS  # the final state_dict; torch.load(..., weights_only=True)
TRAJECTORY_ARTIFACT = ARTIFACT_TRAJECTORY  # {"epochs": (T,), "weights": (T, d)} snapshots


def _log_analysis(client, run_id: str, analysis: dict) -> None:
    import tempfile

    import torch

    parts = {WEIGHTS_ARTIFACT: analysis.get("weights"), TRAJECTORY_ARTIFACT: analysis.get("trajectory")}
    parts = {name: obj for name, obj in parts.items() if obj is not None}
    if not parts:
        return
    with tempfile.TemporaryDirectory() as tmp:
        for name, obj in parts.items():
            torch.save(obj, Path(tmp) / name)
            _retry(client.log_artifact, run_id, str(Path(tmp) / name))


def _download(uri: str, run_id: str, artifact: str) -> Path | None:
    """A run's artifact as a local file, or None if the run has none of that name."""
    from mlflow.artifacts import download_artifacts

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    names = {f.path for f in client_for(uri).list_artifacts(run_id)}
    if artifact not in names:
        return None
    return Path(download_artifacts(run_id=run_id, artifact_path=artifact, tracking_uri=uri))


def run_tensors(uri: str, run_id: str, artifact: str = WEIGHTS_ARTIFACT):
    """A tensor artifact (``weights.pt``, ``trajectory.pt``) of a run, loaded with weights_only=True; None
    if the run did not save it."""
    import torch

    path = _download(uri, run_id, artifact)
    return None if path is None else torch.load(path, map_location="cpu", weights_only=True)


def run_spec_yaml(uri: str, run_id: str) -> str | None:
    """The resolved spec a run logged as ``spec.yaml``."""
    path = _download(uri, run_id, ARTIFACT_SPEC)
    return None if path is None else path.read_text()


def log_run_metrics(uri: str, run_id: str, metrics: dict[str, float], *, step: int = 0) -> None:
    """Add metrics to an existing (finished) run, e.g. sharpness measured after the fact."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
    for chunk in _chunks(batch, 1000):
        _retry(client_for(uri).log_batch, run_id, metrics=chunk)


def log_run_figure(uri: str, run_id: str, fig, name: str) -> None:
    """A matplotlib Figure as a PNG artifact ``name`` of a run."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        fig.savefig(Path(tmp) / name, dpi=110, bbox_inches="tight")
        _retry(client_for(uri).log_artifact, run_id, str(Path(tmp) / name))


def metric_histories(uri: str, run_id: str, names: list[str]) -> dict[str, dict[int, float]]:
    """Per metric name: step -> value of one run (a yoked control reads its partner's events)."""
    client = client_for(uri)
    return {name: {int(m.step): float(m.value) for m in _retry(client.get_metric_history, run_id, name)}
            for name in names}
