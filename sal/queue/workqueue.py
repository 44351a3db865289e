"""One Optuna study seen as a work queue by one worker, and the one work loop of studies and ablations.

``Queue`` holds the study, its storage and this worker's id, opened once per worker: claim, ask, finish,
give back, reap. ``work`` is the loop every worker runs, local or joined from another machine (``sal
worker``): check for Ctrl-C, reap dead workers, claim, beat while the job runs, give back on Ctrl-C. What
a unit of work is (an ablation's (cell, seed), a packed cell, a study trial) is the job's business.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from ..core import interrupts
from ..core.names import ATTR_QUEUE_KIND, ATTR_TRACKING_URI
from ..core.redact import mask_url
from ..spec.config import SpecError
from .engine import (
    KEY,
    MAX_RETRY,
    MLFLOW_RUNS,
    REPLACES,
    RUN,
    STATUS,
    WORKER,
    QueueLost,
    StorageRef,
    alive,
    worker_id,
)

__all__ = ["Queue", "Claimed", "Superseded", "Job", "work", "trials_by_state", "worker_record", "TRACKING_URI",
           "QueueLost"]

log = logging.getLogger(__name__)


class Superseded(BaseException):
    """This worker's trial was failed as stale and queued again while the worker still ran it (its heartbeats
    stopped: the process was suspended, its VM paused, a long stall), so another worker trains it. The worker
    must not finish it: it stops, its MLflow runs end KILLED as duplicates, and it goes on with the queue.
    A BaseException, as KeyboardInterrupt is, so no ``except Exception`` on the way out (a run's crash handler,
    Optuna's ``catch``) takes it for a failure of the run itself."""


@dataclass
class Claimed:
    """Trials this worker holds (RUNNING): one, or the seeds of one packed cell."""

    trials: list[tuple[int, FrozenTrial]]  # (storage trial id, the trial as claimed)
    trial: optuna.Trial | None = field(default=None)  # a study's asked trial (report, should_prune)

    @property
    def numbers(self) -> list[int]:
        return [t.number for _, t in self.trials]


class Queue:
    """The study ``name`` in ``ref`` as this worker's queue (created if missing)."""

    def __init__(self, ref: StorageRef, name: str, *, kind: str | None = None, metric_names: list[str] | None = None,
                 **create_kwargs: Any):
        self.ref, self.name, self.worker = ref, name, worker_id()
        self.storage = ref.open()
        self.study = self._load(create_kwargs) or \
            optuna.create_study(study_name=name, storage=self.storage, load_if_exists=True, **create_kwargs)
        self._check_direction(create_kwargs.get("direction"))
        if kind is not None:
            self._check_kind(kind)
        if metric_names and self.study.metric_names != metric_names:
            self._name_values(metric_names)

    def _name_values(self, metric_names: list[str]) -> None:
        """Name the objective values (optuna-dashboard and Optuna's plots show the name instead of "Objective 0")."""
        with warnings.catch_warnings():  # experimental in Optuna since 3.2, and stable in use since
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.study.set_metric_names(metric_names)

    # ------------------------------------------------------------------ opening
    def _load(self, create_kwargs: dict[str, Any]) -> optuna.Study | None:
        """The study if it exists, opened without a write (create_study(load_if_exists=True) appends a
        create-study line to a journal on every open, also for a command then refused)."""
        try:
            self.storage.get_study_id_from_name(self.name)
        except KeyError:
            return None
        return optuna.load_study(study_name=self.name, storage=self.storage, sampler=create_kwargs.get("sampler"),
                                 pruner=create_kwargs.get("pruner"))

    def _check_direction(self, wanted: str | None) -> None:
        study = self.study
        if wanted is not None and len(study.directions) == 1 and study.direction.name.lower() != wanted:
            # Optuna cannot change a stored study's direction; values stay right, only Optuna's "best" flips.
            log.warning("study %s in %s was created to %s; its values are to %s, so optuna-dashboard's 'best' is "
                        "the worst trial (a new storage or name fixes it)", self.name, mask_url(self.ref.url),
                        study.direction.name.lower(), wanted)

    def _check_kind(self, kind: str) -> None:
        """An ablation and a study may share a name but not a storage."""
        found = self.study.user_attrs.get(ATTR_QUEUE_KIND)
        if found is not None and found != kind:
            raise SpecError([f"{mask_url(self.ref.url)} already holds the {found} {self.name!r}; fix: give this "
                             f"{kind} another name or another --storage"])
        if found is None:
            self.study.set_user_attr(ATTR_QUEUE_KIND, kind)

    # ------------------------------------------------------------------ reading
    def trials(self, *states: TrialState) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False, states=states or None)

    def counts(self) -> dict[str, int]:
        return trials_by_state(self.study)

    def trial_id(self, number: int) -> int:
        study_id = self.storage.get_study_id_from_name(self.name)
        return self.storage.get_trial_id_from_study_id_trial_number(study_id, number)

    # ------------------------------------------------------------------ queueing
    def enqueue_missing(self, items: dict[str, dict[str, Any]], *, retry_failed: bool,
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
        for t in self.trials():
            key = t.user_attrs.get(KEY)
            if key is None:
                continue
            if t.state == TrialState.COMPLETE and present_runs is not None and \
                    t.user_attrs.get(RUN) not in present_runs:
                stale.setdefault(key, []).append(t.number)
                continue
            states.setdefault(key, set()).add(t.state)
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
                self.study.enqueue_trial({}, user_attrs={**attrs, **extra, KEY: key}, skip_if_exists=False)
                report["missing_run" if key in stale else "queued"].append(key)
        return report

    # ------------------------------------------------------------------ claiming
    def claim(self, *, where: Callable[[FrozenTrial], bool] | None = None) -> Claimed | None:
        """Take the oldest WAITING trial (that ``where`` accepts), or None when there is none.

        The storage moves a trial WAITING -> RUNNING for one caller only. A trial whose key an older live
        or finished trial already holds (two launchers queued the same cell) is closed as a duplicate,
        so no cell trains twice.
        """
        for t in self.trials(TrialState.WAITING):
            if where is not None and not where(t):
                continue
            tid = self.trial_id(t.number)
            try:
                if not self.storage.set_trial_state_values(tid, TrialState.RUNNING):
                    continue  # another worker got it first
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # another worker got it and has already finished it (a journal storage raises)
            self.storage.set_trial_user_attr(tid, WORKER, self.worker)
            duplicate_of = self._older_holder(t)
            if duplicate_of is not None:
                self.storage.set_trial_user_attr(tid, STATUS, f"duplicate of trial {duplicate_of}")
                self.storage.set_trial_state_values(tid, TrialState.FAIL)
                continue
            return Claimed([(tid, self.storage.get_trial(tid))])
        return None

    def _older_holder(self, t: FrozenTrial) -> int | None:
        key = t.user_attrs.get(KEY)
        if key is None:
            return None
        replaced = set(t.user_attrs.get(REPLACES, []))
        older = [o.number for o in self.trials() if o.number < t.number and o.user_attrs.get(KEY) == key
                 and o.state != TrialState.FAIL and o.number not in replaced]
        return older[0] if older else None

    def claim_more(self, claimed: Claimed, *, group: Callable[[FrozenTrial], Any], limit: int | None = None) -> int:
        """Add to ``claimed`` the WAITING trials in its first trial's group (e.g. the other seeds of one
        ablation cell, to train them as one packed model), at most ``limit``; returns how many."""
        wanted = group(claimed.trials[0][1])
        added = 0
        while limit is None or added < limit:
            got = self.claim(where=lambda t: group(t) == wanted)
            if got is None:
                break
            claimed.trials.extend(got.trials)
            added += 1
        return added

    def ask(self) -> Claimed:
        """A study's next trial: a WAITING one (enqueued or retried) first, else a new one from the sampler."""
        trial = self.study.ask()
        tid = self.trial_id(trial.number)
        self.storage.set_trial_user_attr(tid, WORKER, self.worker)
        return Claimed([(tid, self.storage.get_trial(tid))], trial=trial)

    @contextlib.contextmanager
    def beating(self, claimed: Claimed) -> Iterator[None]:
        """Optuna's own heartbeat thread for each claimed trial (the one study.optimize runs), on storages
        that watch heartbeats; a no-op on the others."""
        from optuna.storages._heartbeat import get_heartbeat_thread  # no public name; optimize uses this one

        with contextlib.ExitStack() as stack:
            for tid, _ in claimed.trials:
                stack.enter_context(get_heartbeat_thread(tid, self.storage))
            yield

    # ------------------------------------------------------------------ holding
    def ensure_held(self, trial_id: int, number: int) -> None:
        """Raise Superseded unless this worker still holds the trial (RUNNING, in its name). One read of the
        storage: cheap enough for every epoch, and due before a run is ended FINISHED."""
        t = self.storage.get_trial(trial_id)
        if t.state != TrialState.RUNNING or t.user_attrs.get(WORKER) != self.worker:
            raise Superseded(f"trial {number} was failed as stale while this worker ({self.worker}) ran it (its "
                             "heartbeats stopped: suspended or stalled) and queued again for another worker; this "
                             "duplicate is stopped and its runs end KILLED")

    def retried_elsewhere(self, trial: FrozenTrial, run_ids: list[str]) -> bool:
        """A later trial of ``trial``'s key trains runs of its own (not ``run_ids``, which it would reuse)."""
        key = trial.user_attrs.get(KEY)
        return key is not None and any(
            t.number > trial.number and t.user_attrs.get(KEY) == key and t.state != TrialState.FAIL
            and set(t.user_attrs.get(MLFLOW_RUNS, [])) - set(run_ids) for t in self.trials())

    # ------------------------------------------------------------------ closing
    def finish(self, trial_id: int, trial: FrozenTrial, *, value: float | list[float] | None,
               attrs: dict[str, Any] | None = None, state: TrialState = TrialState.COMPLETE) -> bool:
        """Record attrs and close a claimed trial (COMPLETE with its value, PRUNED or FAIL); False when it
        had been failed as stale in the meantime (it stays failed; its retry decides)."""
        try:
            for k, v in (attrs or {}).items():
                self.storage.set_trial_user_attr(trial_id, k, v)
            if state == TrialState.COMPLETE:
                self.study.tell(trial.number, value)
            else:
                self.study.tell(trial.number, state=state)
            return True
        except optuna.exceptions.UpdateFinishedTrialError:
            # Failed as stale between this worker's last check and its close: a retry not yet started finds
            # this run in MLflow and closes with it; one that trains its own makes this run a duplicate.
            log.warning("trial %d was failed as stale while this worker closed it", trial.number)
            return False

    def give_back(self, claimed: Claimed, reason: str) -> list[int]:
        """Close the claimed trials that are still RUNNING (they did not run to their end: Ctrl-C) and queue
        each again; returns their numbers."""
        back = []
        for tid, trial in claimed.trials:
            if self.storage.get_trial(tid).state != TrialState.RUNNING:
                continue  # finished before the interrupt
            self.storage.set_trial_user_attr(tid, STATUS, reason)
            self.study.tell(trial.number, state=TrialState.FAIL)
            RetryHeartbeatStaleTrialCallback(max_retry=None)(self.study, trial)
            back.append(trial.number)
        return back

    def reap(self, *, on_reaped: Callable[[list[str]], Any] | None = None) -> list[int]:
        """Fail RUNNING trials whose worker is gone and queue them again; returns their numbers.

        Heartbeat storages: Optuna's fail_stale_trials (after the grace period). Any storage: a worker of
        this host whose pid no longer exists. ``on_reaped`` gets the MLflow run ids of every trial failed
        here (``MLFLOW_RUNS``), so the tracking side can end them KILLED.
        """
        running = {t.number for t in self.trials(TrialState.RUNNING)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(self.study)
        stale = [t for t in self.trials(TrialState.FAIL) if t.number in running]
        reaped = [t.number for t in self.study.get_trials(deepcopy=True, states=(TrialState.RUNNING,))
                  if self._dead_here(t) and self._fail_and_retry(t)]
        if reaped:
            log.warning("re-queued trials %s of %s: their worker died", reaped, self.name)
        if on_reaped is not None and (reaped or stale):
            dead = set(reaped) | {t.number for t in stale}
            run_ids = [r for t in self.trials() if t.number in dead for r in t.user_attrs.get(MLFLOW_RUNS, [])]
            if run_ids:
                on_reaped(run_ids)
        return reaped

    # claim() is two writes (the state, then the worker's name) with nothing between them: a live claimer
    # writes its name within milliseconds, so a queued trial RUNNING without one after this long was claimed
    # by a worker killed between the two, and nothing else would ever close it. (A study trial Optuna's own
    # loop asks for has no queue key; its sampler may run between the two, so it is left to heartbeats.)
    orphan_grace_s = 30.0

    def _dead_here(self, t: FrozenTrial) -> bool:
        """Its worker ran on this host and its pid is gone (other hosts: only heartbeats can tell), or it
        was claimed by a worker that died before it wrote its name."""
        worker = str(t.user_attrs.get(WORKER, ""))
        if not worker:
            started = t.datetime_start
            return KEY in t.user_attrs and started is not None and \
                (datetime.now() - started).total_seconds() >= self.orphan_grace_s
        host, _, pid = worker.rpartition(":")
        return host == socket.gethostname() and pid.isdigit() and not alive(int(pid))

    def _fail_and_retry(self, t: FrozenTrial) -> bool:
        tid = self.trial_id(t.number)
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):  # another reaper was first
            self.storage.set_trial_user_attr(tid, STATUS, "worker died")  # attrs are frozen once it fails
            if self.storage.set_trial_state_values(tid, TrialState.FAIL):
                RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)(self.study, t)
                return True
        return False

    def others_running(self) -> bool:
        """RUNNING trials of other workers may still come back to the queue (worth waiting for)."""
        return bool(self.trials(TrialState.RUNNING))


TRACKING_URI = ATTR_TRACKING_URI  # study user attr: where the launcher's workers log (no password: see below)


def worker_record(uri: str | None) -> dict[str, str]:
    """What the launcher stores with the queue so `sal worker` elsewhere logs to the same MLflow store: the
    tracking URI, with its password masked (sal never stores one; such a worker must pass --tracking-uri)."""
    from ..tracking.storeuri import canonical_store_uri

    return {} if uri is None else {TRACKING_URI: mask_url(canonical_store_uri(uri))}


def trials_by_state(study: optuna.Study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


class Job(Protocol):
    """What a worker does with the queue: claim the next unit (None: nothing to take now) and run it (train,
    log and close every claimed trial). ``wait``: whether to wait for other workers' running trials, which
    may come back to the queue, when nothing is left to claim."""

    wait: bool

    def claim(self, queue: Queue) -> Claimed | None: ...

    def run(self, queue: Queue, claimed: Claimed) -> None: ...


def work(queue: Queue, job: Job, *, poll_s: float = 5.0,
         on_reaped: Callable[[list[str]], Any] | None = None) -> int:
    """The worker loop of studies and ablations; returns how many trials this worker ran."""
    done = 0
    with database_guard(queue.ref.url):
        while True:
            interrupts.check()  # never claim new work after a Ctrl-C, even one a library swallowed
            queue.reap(on_reaped=on_reaped)
            claimed = job.claim(queue)
            if claimed is None:
                if job.wait and queue.others_running():
                    time.sleep(poll_s)
                    continue
                return done
            try:
                with queue.beating(claimed):
                    try:
                        job.run(queue, claimed)
                    except Exception as err:
                        interrupts.raise_if_requested(err)
                        raise
            except KeyboardInterrupt:
                back = queue.give_back(claimed, "interrupted")
                log.warning("interrupted: trials %s given back to the queue", back)
                raise
            except Superseded as lost:  # another worker trains it now; the other claimed seeds go back
                back = queue.give_back(claimed, "its worker stalled")
                log.warning("%s%s", lost, f"; trials {back} given back to the queue" if back else "")
                continue
            done += len(claimed.trials) or 1  # a study's slot is one trial


@contextlib.contextmanager
def database_guard(queue_url: str) -> Iterator[None]:
    """A database error from the queue's storage (it restarted, the network dropped) becomes QueueLost: one
    clear line for the user instead of SQLAlchemy's traceback."""
    from sqlalchemy.exc import DBAPIError

    try:
        yield
    except DBAPIError as err:
        first = str(err.orig if getattr(err, "orig", None) else err).strip().splitlines()[0][:200]
        raise QueueLost(f"lost the queue's database {mask_url(queue_url)} ({first})") from None
