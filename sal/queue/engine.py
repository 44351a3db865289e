"""Where the work queue lives and who works it: Optuna storages (``StorageRef``), worker identities and
local worker processes. Optuna is the work queue for studies and ablations alike (an ablation is a study
whose trials are enqueued grid cells); sal/queue/workqueue.py claims and closes its trials.

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
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend

from ..core import interrupts
from ..core.diskfull import disk_full
from ..core.names import ATTR_KEY, ATTR_MLFLOW_RUNS, ATTR_REPLACES, ATTR_RUN, ATTR_STATUS, ATTR_WORKER
from ..core.paths import default_base
from ..core.redact import MaskingFormatter, mask_url, quiet_library_tracebacks
from ..spec.config import SpecError
from .journal import repair_cut_tail

__all__ = [
    "StorageRef", "QueueLost", "worker_id", "alive", "spawn_workers", "exit_with_launcher",
    "KEY", "WORKER", "STATUS", "RUN", "REPLACES", "MLFLOW_RUNS",
]

log = logging.getLogger(__name__)
KEY, WORKER, STATUS = ATTR_KEY, ATTR_WORKER, ATTR_STATUS  # trial user attrs
RUN = ATTR_RUN  # the MLflow run of a finished trial
REPLACES = ATTR_REPLACES  # finished trials whose MLflow run is gone from the store; this one redoes them
MLFLOW_RUNS = ATTR_MLFLOW_RUNS  # the trial's MLflow run ids, set as soon as each is created (for the reaper)
MAX_RETRY = 3


class QueueLost(RuntimeError):
    """The queue's database went away under a worker (a restart, a network cut). The worker stops; the
    trials it held are reaped (its pid is gone, or its heartbeat goes stale) and a re-run finishes them."""


@dataclass(frozen=True)
class StorageRef:
    """A picklable description of a storage, reopened in each worker process."""

    url: str
    heartbeat_s: int = 20

    @classmethod
    def resolve(cls, url: str | None, name: str, kind: str, *, heartbeat_s: int | None = None) -> StorageRef:
        heartbeat_s = heartbeat_s or heartbeat_from_env()
        if url is None:
            base = default_base()
            return cls(str(base / "optuna" / f"{kind}-{name}.journal"), heartbeat_s)
        if url.startswith(("sqlite:", "postgresql", "mysql")) or url.endswith(".journal") or "://" not in url:
            return cls(url, heartbeat_s)
        raise SpecError([f"--storage={mask_url(url)!r} is not a storage Optuna can share; fix: give a .journal file, "
                         "sqlite:///file.db or postgresql://user@host/db"])

    @property
    def is_journal(self) -> bool:
        return "://" not in self.url

    def open(self) -> optuna.storages.BaseStorage:
        if self.is_journal:
            Path(self.url).parent.mkdir(parents=True, exist_ok=True)
            repair_cut_tail(self.url)  # a crash mid-append: Optuna would append after the cut line
            return JournalStorage(JournalFileBackend(self.url))
        if self.url.startswith("sqlite:///"):
            Path(self.url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return RDBStorage(
            self.url, heartbeat_interval=self.heartbeat_s, grace_period=3 * self.heartbeat_s,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
            engine_kwargs={"pool_pre_ping": True} if not self.url.startswith("sqlite") else None,
        )


HEARTBEAT_ENV = "SAL_HEARTBEAT_S"  # seconds between a worker's heartbeats; a trial is stale after 3 of them


def heartbeat_from_env(default: int = 20) -> int:
    """The heartbeat interval of PostgreSQL queues: ``$SAL_HEARTBEAT_S``, else 20 s. Every worker and launcher of
    one queue should use the same: a silent worker's trial goes back to the queue after 3 intervals."""
    raw = os.environ.get(HEARTBEAT_ENV, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise SpecError([f"{HEARTBEAT_ENV}={raw!r} is not a whole number of seconds >= 1; fix: e.g. "
                         f"{HEARTBEAT_ENV}=20, or unset it"])
    return int(raw)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def alive(pid: int) -> bool:
    """The process runs. A zombie does not: a worker SIGKILLed (e.g. by the OOM killer) stays a zombie
    until its launcher joins it, and its trial must be reaped before then."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no /proc (macOS): signal 0 is all we can ask
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"  # the field after "(comm)" is the state


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
    except QueueLost as err:  # the queue's database went away: one line, exit 1
        logging.getLogger("sal").error("%s; re-run the same command to resume", err)
        sys.exit(1)
    except Exception as err:  # noqa: BLE001 - one line, as the CLI's own errors (a full store, a server's error)
        first = (str(err).strip().splitlines() or [""])[0][:300]
        cause = "the disk is full (fix: free space, then re-run)" if disk_full(err) else type(err).__name__
        logging.getLogger("sal").error("worker %d stopped: %s: %s", index, cause, first)
        sys.exit(1)


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
