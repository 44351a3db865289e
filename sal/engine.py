"""The only place that talks to Optuna storage: open it, queue work, claim it, reap dead workers, spawn
workers. Optuna is the work queue for studies and ablations alike (an ablation is a study whose trials
are enqueued grid cells); nothing here schedules on its own.

Storages (``--storage``):
- default: a journal file ``optuna/<kind>-<name>.journal`` under the repository (kind: ablation or
  study), right for one or many local processes and readable by Optuna's CLI and optuna-dashboard;
- ``sqlite:///file.db``: one process at a time;
- ``postgresql://...``: several machines; heartbeats fail a killed worker's trial after a grace
  period and Optuna's RetryHeartbeatStaleTrialCallback queues it again.
A local worker that died (its pid is gone on this host) is reaped the same way on any storage.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing as mp
import os
import signal
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from . import interrupts
from .config import SpecError
from .redact import MaskingFormatter, mask_url, quiet_library_tracebacks

__all__ = [
    "StorageRef", "open_study", "worker_id", "reap_dead_workers", "enqueue_missing", "claim_next", "finish",
    "claim_batch", "give_back", "wait_or_stop", "heartbeat", "spawn_workers", "exit_with_launcher",
    "trials_by_state", "KEY", "WORKER", "STATUS", "RUN", "REPLACES", "MLFLOW_RUNS",
]

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[1]
KEY, WORKER, STATUS = "sal.key", "sal.worker", "sal.status"  # trial user attrs
RUN = "sal.mlflow_run"  # the MLflow run of a finished trial
REPLACES = "sal.replaces"  # finished trials whose MLflow run is gone from the store; this one redoes them
MLFLOW_RUNS = "sal.mlflow_runs"  # the trial's MLflow run ids, set as soon as each is created (for the reaper)
MAX_RETRY = 3


@dataclass(frozen=True)
class StorageRef:
    """A picklable description of a storage, reopened in each worker process."""

    url: str
    heartbeat_s: int = 20

    @classmethod
    def resolve(cls, url: str | None, name: str, kind: str, *, heartbeat_s: int = 20) -> StorageRef:
        if url is None:
            base = REPO_ROOT if (REPO_ROOT / "pyproject.toml").is_file() else Path.cwd()
            return cls(str(base / "optuna" / f"{kind}-{name}.journal"), heartbeat_s)
        if url.startswith(("sqlite:", "postgresql", "mysql")) or url.endswith(".journal") or "://" not in url:
            return cls(url, heartbeat_s)
        raise SpecError([f"--storage={url!r} is not a storage Optuna can share; fix: give a .journal file, "
                         "sqlite:///file.db or postgresql://user@host/db"])

    @property
    def is_journal(self) -> bool:
        return "://" not in self.url

    def open(self) -> optuna.storages.BaseStorage:
        if self.is_journal:
            Path(self.url).parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(self.url))
        if self.url.startswith("sqlite:///"):
            Path(self.url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return RDBStorage(
            self.url, heartbeat_interval=self.heartbeat_s, grace_period=3 * self.heartbeat_s,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
            engine_kwargs={"pool_pre_ping": True} if not self.url.startswith("sqlite") else None,
        )


def open_study(ref: StorageRef, name: str, *, kind: str | None = None,
               **create_kwargs: Any) -> tuple[optuna.Study, Any]:
    """Create or load study ``name``; returns it with its storage (for claiming by trial id).

    With ``kind`` (ablation or study), a study of that name that is of the other kind is an error:
    an ablation and a study may share a name but not a storage.
    """
    storage = ref.open()
    study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True, **create_kwargs)
    wanted = create_kwargs.get("direction")
    if wanted is not None and len(study.directions) == 1 and study.direction.name.lower() != wanted:
        # Optuna cannot change a stored study's direction; values stay right, only Optuna's "best" flips.
        log.warning("study %s in %s was created to %s; its values are to %s, so optuna-dashboard's 'best' is "
                    "the worst trial (a new storage or name fixes it)", name, ref.url,
                    study.direction.name.lower(), wanted)
    if kind is not None:
        found = study.user_attrs.get("sal.kind")
        if found is not None and found != kind:
            raise SpecError([f"{mask_url(ref.url)} already holds the {found} {name!r}; fix: give this {kind} another "
                             "name or another --storage"])
        if found is None:
            study.set_user_attr("sal.kind", kind)
    return study, storage


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _trial_id(study: optuna.Study, storage, number: int) -> int:
    study_id = storage.get_study_id_from_name(study.study_name)
    return storage.get_trial_id_from_study_id_trial_number(study_id, number)


def reap_dead_workers(study: optuna.Study, storage, *,
                      on_reaped: Callable[[list[str]], Any] | None = None) -> list[int]:
    """Fail RUNNING trials whose worker is gone and queue them again; returns their numbers.

    Heartbeat storages: Optuna's fail_stale_trials (after the grace period). Any storage: a worker of
    this host whose pid no longer exists. ``on_reaped`` gets the MLflow run ids of every trial failed
    here (``MLFLOW_RUNS``), so the tracking side can end them KILLED.
    """
    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    stale = [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)) if t.number in running]
    host = socket.gethostname()
    reaped = []
    for t in study.get_trials(deepcopy=True, states=(TrialState.RUNNING,)):
        who = str(t.user_attrs.get(WORKER, ""))
        w_host, _, pid = who.rpartition(":")
        if w_host != host or not pid.isdigit() or _alive(int(pid)):
            continue
        tid = _trial_id(study, storage, t.number)
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):  # another reaper was first
            storage.set_trial_user_attr(tid, STATUS, "worker died")  # attrs are frozen once it fails
            if storage.set_trial_state_values(tid, TrialState.FAIL):
                RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)(study, t)
                reaped.append(t.number)
    if reaped:
        log.warning("re-queued trials %s of %s: their worker died", reaped, study.study_name)
    if on_reaped is not None and (reaped or stale):
        dead = set(reaped) | {t.number for t in stale}
        run_ids = [r for t in study.get_trials(deepcopy=False) if t.number in dead
                   for r in t.user_attrs.get(MLFLOW_RUNS, [])]
        if run_ids:
            on_reaped(run_ids)
    return reaped


def trials_by_state(study: optuna.Study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


def enqueue_missing(study: optuna.Study, items: dict[str, dict[str, Any]], *, retry_failed: bool,
                    present_runs: set[str] | None = None) -> dict[str, list]:
    """Queue every key of ``items`` that has no COMPLETE, WAITING or RUNNING trial.

    Keys whose only trials failed (an exception, not a dead worker) are queued again only with
    ``retry_failed``. With ``present_runs`` (the MLflow run ids of the current store), a COMPLETE trial
    whose run is not there counts as not done: its key is queued again, and the new trial names the
    stale ones it replaces (``sal.replaces``) so it is not closed as their duplicate. Returns the keys
    by what happened to them (``missing_run``: queued again for that reason).
    """
    states: dict[str, set[TrialState]] = {}
    stale: dict[str, list[int]] = {}
    for t in study.get_trials(deepcopy=False):
        key = t.user_attrs.get(KEY)
        if key is None:
            continue
        state = t.state
        if state == TrialState.COMPLETE and present_runs is not None and t.user_attrs.get(RUN) not in present_runs:
            stale.setdefault(key, []).append(t.number)
            continue
        states.setdefault(key, set()).add(state)
    report: dict[str, list] = {"done": [], "pending": [], "queued": [], "failed": [], "missing_run": []}
    live = {TrialState.WAITING, TrialState.RUNNING}
    for key, attrs in items.items():
        seen = states.get(key, set())
        if TrialState.COMPLETE in seen:
            report["done"].append(key)
        elif seen & live:
            report["pending"].append(key)
        elif TrialState.FAIL in seen and not retry_failed and key not in stale:
            report["failed"].append(key)
        else:
            extra = {REPLACES: stale[key]} if key in stale else {}
            study.enqueue_trial({}, user_attrs={**attrs, **extra, KEY: key}, skip_if_exists=False)
            report["missing_run" if key in stale else "queued"].append(key)
    return report


def claim_next(study: optuna.Study, storage, *,
               where: Callable[[FrozenTrial], bool] | None = None) -> tuple[int, FrozenTrial] | None:
    """Take the oldest WAITING trial for this worker: (trial id, trial), or None when the queue is empty.

    The storage moves a trial WAITING -> RUNNING for one caller only. A trial whose key an older live
    or finished trial already holds (two launchers queued the same cell) is closed as a duplicate,
    so no cell trains twice. ``where``: only trials it accepts.
    """
    for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        if where is not None and not where(t):
            continue
        tid = _trial_id(study, storage, t.number)
        try:
            if not storage.set_trial_state_values(tid, TrialState.RUNNING):
                continue  # another worker got it first
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker got it and has already finished it (a journal storage raises)
        storage.set_trial_user_attr(tid, WORKER, worker_id())
        key = t.user_attrs.get(KEY)
        replaced = set(t.user_attrs.get(REPLACES, []))
        older = [o.number for o in study.get_trials(deepcopy=False) if key is not None and o.number < t.number
                 and o.user_attrs.get(KEY) == key and o.state != TrialState.FAIL and o.number not in replaced]
        if older:
            storage.set_trial_user_attr(tid, STATUS, f"duplicate of trial {older[0]}")
            storage.set_trial_state_values(tid, TrialState.FAIL)
            continue
        return tid, storage.get_trial(tid)
    return None


def claim_batch(study: optuna.Study, storage, *, same_as: FrozenTrial, group: Callable[[FrozenTrial], Any],
                limit: int | None = None) -> list[tuple[int, FrozenTrial]]:
    """Claim the WAITING trials in the group of ``same_as`` (``group(t) == group(same_as)``; e.g. the other
    seeds of one ablation cell, to train them together as one packed model), at most ``limit`` of them."""
    wanted = group(same_as)
    same = lambda t: group(t) == wanted  # noqa: E731
    claimed: list[tuple[int, FrozenTrial]] = []
    while limit is None or len(claimed) < limit:
        got = claim_next(study, storage, where=same)
        if got is None:
            break
        claimed.append(got)
    return claimed


def finish(study: optuna.Study, storage, trial_id: int, trial: FrozenTrial, *, value: float | None,
           attrs: dict[str, Any], state: TrialState = TrialState.COMPLETE) -> None:
    """Record attrs and close a claimed trial (COMPLETE with its value, or FAIL)."""
    for k, v in attrs.items():
        storage.set_trial_user_attr(trial_id, k, v)
    if state == TrialState.COMPLETE:
        study.tell(trial.number, value)
    else:
        study.tell(trial.number, state=state)


def give_back(study: optuna.Study, storage, trial_id: int, trial: FrozenTrial, reason: str) -> None:
    """Close a claimed trial that did not run to its end (Ctrl-C) and queue it again."""
    storage.set_trial_user_attr(trial_id, STATUS, reason)
    study.tell(trial.number, state=TrialState.FAIL)
    RetryHeartbeatStaleTrialCallback(max_retry=None)(study, trial)


@contextlib.contextmanager
def heartbeat(storage, trial_id: int) -> Iterator[None]:
    """Beat for a claimed trial on storages that watch heartbeats (study.optimize does this itself)."""
    interval = storage.get_heartbeat_interval() if hasattr(storage, "get_heartbeat_interval") else None
    if not interval:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            storage.record_heartbeat(trial_id)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def exit_with_launcher(launcher_pid: int, poll_s: float = 1.0) -> None:
    """Stop this worker process when its launcher dies, so no orphan keeps training.

    Linux: the kernel sends SIGTERM when the parent dies (prctl PR_SET_PDEATHSIG). Everywhere: a daemon
    thread sees the parent pid change (the orphan is re-parented) and exits. The trial it held stays
    RUNNING and is reaped as a dead worker's by the next launcher, its MLflow run marked KILLED.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    def watch() -> None:
        while os.getppid() == launcher_pid:
            time.sleep(poll_s)
        log.warning("launcher %d is gone; worker %d stops", launcher_pid, os.getpid())
        os._exit(1)

    if os.getppid() != launcher_pid:  # it died before we got here
        os._exit(1)
    threading.Thread(target=watch, daemon=True, name="launcher-watch").start()


def _child(target: Callable[..., None], index: int, gpu: str | None, threads: int, kwargs: dict,
           launcher_pid: int) -> None:
    exit_with_launcher(launcher_pid)
    interrupts.install()
    import torch

    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    quiet_library_tracebacks()
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    handler = logging.StreamHandler()  # worker log lines mask URL passwords as the CLI's do
    handler.setFormatter(MaskingFormatter(f"%(asctime)s worker{index} %(message)s", "%H:%M:%S"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    logging.getLogger("sal").setLevel(logging.INFO)
    try:
        target(worker_index=index, device=f"cuda:{gpu}" if gpu is not None else None, **kwargs)
    except KeyboardInterrupt:
        pass


def spawn_workers(target: Callable[..., None], n: int, *, gpus: list[str] | None = None, **kwargs: Any) -> int:
    """Run ``target(worker_index=i, device=..., **kwargs)`` in n processes; returns how many failed.

    ``gpus`` pins worker i to ``cuda:gpus[i % len(gpus)]``. Torch threads are split between workers.
    Ctrl-C reaches every worker; each gives its claimed trial back to the queue and stops.
    """
    ctx = mp.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // n)
    procs = [ctx.Process(target=_child, args=(target, i, gpus[i % len(gpus)] if gpus else None, threads, kwargs,
                                              os.getpid())) for i in range(n)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:
            p.join(timeout=60)
        raise
    return sum(p.exitcode != 0 for p in procs)


def wait_or_stop(study: optuna.Study, poll_s: float) -> bool:
    """True when RUNNING trials of other workers may still come back to the queue (so wait)."""
    if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        return False
    time.sleep(poll_s)
    return True
