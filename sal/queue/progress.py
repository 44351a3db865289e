"""Progress of a sweep while its workers run: a thread polls the Optuna queue and reports snapshots
(done/total, running, failed, ETA, the latest result). It reads the storage only, so it sees the work
of every worker, local or remote; the CLI renders the snapshots (a bar on a terminal, lines otherwise).
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..core.names import ATTR_CELL, ATTR_CONTEXT, STATUS_FAILED, STATUS_FINISHED
from . import engine

__all__ = ["Snapshot", "watch", "snapshot"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    done: int  # finished units of work (ablation keys with a COMPLETE trial; study trials COMPLETE or PRUNED)
    total: int
    running: int
    failed: int  # crashed runs (not duplicates or re-queued trials of dead workers)
    elapsed_s: float
    eta_s: float  # nan until one unit finished in this session
    latest: str  # the most recently finished unit and its value, "" before any

    @property
    def finished(self) -> bool:
        return self.done >= self.total


def _describe(t: FrozenTrial, value_name: str) -> str:
    what = (f"{t.user_attrs[ATTR_CELL]} {t.user_attrs.get(ATTR_CONTEXT, '')} seed {t.user_attrs.get('seed')}"
            if ATTR_CELL in t.user_attrs else f"trial {t.number}")
    if t.state == TrialState.PRUNED:
        return f"{' '.join(what.split())}: pruned"
    values = t.values or []
    shown = f"{value_name} " * bool(value_name) + ", ".join(f"{v:.4g}" for v in values)
    status = t.user_attrs.get(engine.STATUS, STATUS_FINISHED)
    return f"{' '.join(what.split())}: {shown}" + (f" ({status})" if status not in (STATUS_FINISHED, "") else "")


def snapshot(study: optuna.Study, *, total: int, keys: set[str] | None, started: float, done_at_start: int,
             value_name: str = "") -> Snapshot:
    """Counts of ``study`` now. With ``keys`` (an ablation), work is counted per key, so duplicates and
    re-queued trials of dead workers never count twice."""
    trials = study.get_trials(deepcopy=False)
    finished_states = (TrialState.COMPLETE,) if keys is not None else (TrialState.COMPLETE, TrialState.PRUNED)
    finished = [t for t in trials if t.state in finished_states and (keys is None or t.user_attrs.get(engine.KEY)
                                                                     in keys)]
    done = len({t.user_attrs.get(engine.KEY) for t in finished}) if keys is not None else len(finished)
    crashed = [t for t in trials if t.state == TrialState.FAIL and t.user_attrs.get(engine.STATUS) == STATUS_FAILED]
    latest = max(finished, key=lambda t: t.datetime_complete or t.datetime_start, default=None)
    elapsed = time.time() - started
    new = done - done_at_start
    eta = elapsed / new * max(0, total - done) if new > 0 else math.nan
    return Snapshot(done=done, total=total, running=sum(t.state == TrialState.RUNNING for t in trials),
                    failed=len(crashed), elapsed_s=elapsed, eta_s=eta,
                    latest=_describe(latest, value_name) if latest else "")


@contextlib.contextmanager
def watch(ref: engine.StorageRef, study_name: str, *, total: int, on_change: Callable[[Snapshot], None],
          keys: set[str] | None = None, value_name: str = "", poll_s: float = 1.0) -> Iterator[None]:
    """Call ``on_change(snapshot)`` from a thread whenever the counts or the latest result change, and once
    more when the block ends."""
    stop = threading.Event()
    started = time.time()
    state: dict = {"last": None, "at_start": None, "study": None}

    def poll() -> None:
        if state["study"] is None:
            try:
                state["study"] = optuna.load_study(study_name=study_name, storage=ref.open())
            except KeyError:  # not created yet
                return
        snap = snapshot(state["study"], total=total, keys=keys, started=started,
                        done_at_start=state["at_start"] if state["at_start"] is not None else 0,
                        value_name=value_name)
        if state["at_start"] is None:
            state["at_start"] = snap.done
        key = (snap.done, snap.running, snap.failed, snap.latest)
        if key != state["last"]:
            state["last"] = key
            on_change(snap)

    def loop() -> None:
        while not stop.wait(poll_s):
            try:
                poll()
            except Exception as err:  # noqa: BLE001 - progress is a view; it never stops the sweep
                log.debug("progress poll failed: %s", err)

    thread = threading.Thread(target=loop, daemon=True, name="progress")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        with contextlib.suppress(Exception):
            state["last"] = None  # always report the final counts
            poll()
