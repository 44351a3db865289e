"""The worker side of ablations: claim queued (cell, seed) trials, train them (the seeds of one cell packed
into one model when they can be), log each as a live MLflow run and close its trial exactly once.

It reads everything it needs from the queue (each trial carries its resolved spec, tags and parent run),
so a worker on another machine (``sal worker``) needs only the storage and the tracking URI.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import statistics
import traceback
from pathlib import Path

from optuna.trial import FrozenTrial, TrialState

from ..core import interrupts
from ..core.gridkey import GridKey
from ..core.names import (
    ATTR_CELL,
    ATTR_CONTEXT,
    ATTR_MESSAGE,
    ATTR_PARENT_RUN,
    ATTR_REUSED,
    ATTR_TAGS,
    ATTR_TRIAL_SPEC,
    RESULT_STATUSES,
    STATUS_FAILED,
    STATUS_FINISHED,
    TAG_ABLATION,
    TAG_CELL,
    TAG_CONTEXT,
    TAG_KEY,
    TAG_MESSAGE,
    TAG_STATUS,
    TAG_TRIAL,
)
from ..core.redact import mask_text
from ..metrics import scoring
from ..queue import engine
from ..queue.workqueue import Claimed, Queue, work
from ..spec.config import RunSpec, config_hash, configuration, nest, validate_run
from ..tracking.store import LiveRun, end_parent, experiment_name, kill_duplicates, kill_runs, runs_with_tag
from ..training.run import Result, train
from ..training.seeds import should_pack, start_seeds
from .yoke import YokeFailed, settled_filter, with_partner_events

__all__ = ["AblationJob", "ablation_worker", "close_group", "group_name", "PARENT_RUN", "EXIT_AFTER_LOG_ENV"]

log = logging.getLogger(__name__)
# Test hook: a worker exits right after its MLflow run ends and before its Optuna trial is closed, the
# one moment at which a crash used to leave a finished run that a retry trained and logged again.
EXIT_AFTER_LOG_ENV = "SAL_TEST_EXIT_AFTER_LOG"
PARENT_RUN = ATTR_PARENT_RUN  # trial user attr: the MLflow run grouping the trial's cell


def ablation_worker(*, worker_index: int, device: str | None, ref: engine.StorageRef, study_name: str, uri: str,
                    metric: str, wait: bool = True, poll_s: float = 5.0, checkpoint_dir: str | None = None) -> int:
    """Claim and run queued (cell, seed) trials until none is left; returns how many it ran."""
    queue = Queue(ref, study_name)
    job = AblationJob(uri=uri, metric=metric, device=device, wait=wait, checkpoint_dir=checkpoint_dir)
    return work(queue, job, poll_s=poll_s, on_reaped=lambda ids: kill_runs(uri, ids))


class AblationJob:
    """One unit of ablation work: a claimed (cell, seed), or the waiting seeds of its cell packed with it."""

    def __init__(self, *, uri: str, metric: str, device: str | None = None, wait: bool = True,
                 checkpoint_dir: str | Path | None = None):
        self.uri, self.metric, self.device, self.wait = uri, metric, device, wait
        self.checkpoint_dir = checkpoint_dir

    def claim(self, queue: Queue) -> Claimed | None:
        settled = settled_filter(queue.trials())  # a yoked control waits for its partner's seed
        claimed = queue.claim(where=settled)
        if claimed is not None and should_pack([self._spec(claimed.trials[0][1])] * 2):
            # the cell's other waiting (and settled) seeds train with it
            queue.claim_more(claimed, group=lambda t: _cell_config(t) if settled(t) else None)
        return claimed

    def run(self, queue: Queue, claimed: Claimed) -> None:
        experiment = experiment_name("ablation", queue.name)
        todo = []
        for tid, trial in claimed.trials:
            spec = self._spec(trial)
            try:
                spec = with_partner_events(spec, trial, uri=self.uri, experiment=experiment)
            except YokeFailed as err:
                log.error("trial %d: cell %s seed %d: %s", trial.number, trial.user_attrs[ATTR_CELL], spec.seed, err)
                self._close(queue, tid, trial, value=scoring.worst_value(self.metric),
                            attrs={engine.STATUS: STATUS_FAILED, ATTR_MESSAGE: str(err)[:500]}, state=TrialState.FAIL)
                continue
            reused = _logged_before(self.uri, experiment, trial.user_attrs[engine.KEY], spec, self.metric)
            if reused is not None:  # logged by a worker killed before it closed the trial: not trained again
                log.info("trial %d: cell %s seed %d already logged as run %s; not trained again", trial.number,
                         trial.user_attrs[ATTR_CELL], spec.seed, reused[1][engine.RUN])
                self._close(queue, tid, trial, value=reused[0], attrs=reused[1])
            else:
                todo.append((tid, trial, spec))
        if len(todo) == 1:
            self._run_one(queue, experiment, *todo[0])
        elif todo:
            self._run_packed(queue, experiment, todo)

    def _spec(self, trial: FrozenTrial) -> RunSpec:
        spec = validate_run(nest(trial.user_attrs[ATTR_TRIAL_SPEC]))
        if self.device:
            spec = spec.model_copy(update={"train": spec.train.model_copy(update={"device": self.device})})
        return spec

    def _run_one(self, queue: Queue, experiment: str, tid: int, trial: FrozenTrial, spec: RunSpec) -> None:
        log.info("trial %d: cell %s %s seed %d", trial.number, trial.user_attrs[ATTR_CELL],
                 trial.user_attrs.get(ATTR_CONTEXT, ""), spec.seed)
        live = _live_for(self.uri, experiment, queue.name, trial, spec)
        held = _holding(queue, [(tid, trial)])
        with live:
            # The run id is on the trial from the first epoch on, so a reaper can end the run KILLED.
            queue.storage.set_trial_user_attr(tid, engine.MLFLOW_RUNS, [live.start(spec)])
            result = _train_or_fail(spec, _checked(live.log_epoch, held), checkpoint_dir=self.checkpoint_dir)
            held()  # a stalled worker whose trial another worker now trains ends its run KILLED, not FINISHED
            live.finish(result)
        if os.environ.get(EXIT_AFTER_LOG_ENV):  # tests: a worker killed after MLflow, before Optuna
            os._exit(3)
        self._close_trained(queue, tid, trial, live, result)

    def _run_packed(self, queue: Queue, experiment: str, todo: list[tuple[int, FrozenTrial, RunSpec]]) -> None:
        """Train the claimed seeds of one cell together (one live MLflow run per seed), then close each."""
        log.info("trials %s: cell %s seeds %s together (one packed model when they can be)",
                 [t.number for _, t, _ in todo], todo[0][1].user_attrs[ATTR_CELL], [s.seed for _, _, s in todo])
        lives = [_live_for(self.uri, experiment, queue.name, trial, spec) for _, trial, spec in todo]
        held = _holding(queue, [(tid, trial) for tid, trial, _ in todo])
        with contextlib.ExitStack() as stack:
            for (tid, _, spec), live in zip(todo, lives):
                stack.enter_context(live)
                queue.storage.set_trial_user_attr(tid, engine.MLFLOW_RUNS, [live.start(spec)])
            results = _train_group_logged([s for _, _, s in todo], lives, held)
            held()
            for live, result in zip(lives, results):
                live.finish(result)
        if os.environ.get(EXIT_AFTER_LOG_ENV):
            os._exit(3)
        for (tid, trial, _), live, result in zip(todo, lives, results):
            self._close_trained(queue, tid, trial, live, result)

    def _close_trained(self, queue: Queue, tid: int, trial: FrozenTrial, live: LiveRun, result: Result) -> None:
        attrs = {engine.STATUS: result.status, engine.RUN: live.run_id, ATTR_MESSAGE: result.message[:500]}
        state = TrialState.FAIL if result.status == STATUS_FAILED else TrialState.COMPLETE
        closed = self._close(queue, tid, trial, attrs=attrs, state=state,
                             value=_trial_value(result.status, result.metric(self.metric), self.metric))
        if not closed and queue.retried_elsewhere(trial, [live.run_id]):
            # failed as stale between the last check and the close, and its retry trains a run of its own
            kill_duplicates(self.uri, [live.run_id], f"duplicate: trial {trial.number} was queued again while its "
                                                     "worker stalled, and another worker trains it")

    def _close(self, queue: Queue, tid: int, trial: FrozenTrial, *, value: float, attrs: dict,
               state: TrialState = TrialState.COMPLETE) -> bool:
        closed = queue.finish(tid, trial, value=value, attrs=attrs, state=state)
        _close_group_of(queue, self.uri, trial, self.metric)
        return closed


def _trial_value(status: str, value: float, metric: str) -> float:
    value = scoring.score(value, status=status, metric=metric)
    # a metric this run does not have (val/acc without a validation split): Optuna fails NaN trials
    return scoring.worst_value(metric) if value != value else value


def _logged_before(uri: str, experiment: str, key: str, spec: RunSpec, metric: str) -> tuple[float, dict] | None:
    """A run of this trial's key and configuration that a killed worker logged but could not record in
    Optuna: its value and attrs, so the retried trial closes without training again. RUNNING leftovers
    of the key (their worker died mid-run) are ended KILLED."""
    runs = runs_with_tag(uri, experiment, TAG_KEY, key)
    kill_runs(uri, [r.info.run_id for r in runs if r.info.status == "RUNNING"], "its worker died; retried")
    same = [r for r in runs if r.info.status in ("FINISHED", "FAILED") and r.data.tags.get("config_hash") ==
            config_hash(spec) and r.data.tags.get(TAG_STATUS) in RESULT_STATUSES]
    if not same:
        return None
    run = same[0]
    status = run.data.tags[TAG_STATUS]
    value = _trial_value(status, run.data.metrics.get(metric, math.nan), metric)
    return value, {engine.STATUS: status, engine.RUN: run.info.run_id, engine.MLFLOW_RUNS: [run.info.run_id],
                   ATTR_MESSAGE: run.data.tags.get(TAG_MESSAGE, "")[:500], ATTR_REUSED: True}


def group_name(cell: str, context: str, dataset: str) -> str:
    return f"{cell}{'-' + context if context else ''}-{dataset}"


def close_group(uri: str, run_id: str, *, name: str, metric: str, trials: list[list], final: bool) -> None:
    """End a parent once every seed of its group (``trials``: the trials of each key) is COMPLETE: FINISHED,
    with the seed-mean and SD of the metric in its metrics and its name. With ``final`` (the sweep is
    over), a group with failed seeds and nothing left to run ends FAILED."""
    complete = [next(t for t in ts if t.state.name == "COMPLETE") for ts in trials
                if any(t.state.name == "COMPLETE" for t in ts)]
    if len(complete) == len(trials):
        values = [t.value for t in complete]
        mean, sd = statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0
        short = metric.replace("/", "_")
        end_parent(uri, run_id, status="FINISHED",
                   run_name=f"{name}: {mean:.4f} ± {sd:.4f} {metric} ({len(values)} seeds)",
                   metrics={f"seeds/mean_{short}": mean, f"seeds/sd_{short}": sd, "seeds/n": len(values)})
    elif final and not any(t.state.name in ("RUNNING", "WAITING") for ts in trials for t in ts):
        end_parent(uri, run_id, status="FAILED")


def _close_group_of(queue: Queue, uri: str, trial, metric: str) -> None:
    """After a worker closed ``trial``: end its cell's parent run if that was the cell's last seed."""
    run_id, key = trial.user_attrs.get(PARENT_RUN), trial.user_attrs.get(engine.KEY, "")
    if not run_id:
        return
    group = GridKey.group_of(key)
    by_key: dict[str, list] = {}
    for t in queue.trials():
        k = t.user_attrs.get(engine.KEY, "")
        if GridKey.group_of(k) == group:
            by_key.setdefault(k, []).append(t)
    dataset = GridKey.parse(key).place.dataset
    name = group_name(trial.user_attrs[ATTR_CELL], trial.user_attrs.get(ATTR_CONTEXT, ""), dataset)
    close_group(uri, run_id, name=name, metric=metric, trials=list(by_key.values()), final=False)


def _cell_config(trial) -> tuple:
    """What the seeds of one cell share: cell, context and the spec without its seed."""
    config = configuration(trial.user_attrs.get(ATTR_TRIAL_SPEC, {}))
    return trial.user_attrs.get(ATTR_CELL), trial.user_attrs.get(ATTR_CONTEXT), json.dumps(config, sort_keys=True)


def _live_for(uri: str, experiment: str, study_name: str, trial, spec: RunSpec) -> LiveRun:
    cell, context = trial.user_attrs[ATTR_CELL], trial.user_attrs.get(ATTR_CONTEXT, "")
    tags = {TAG_ABLATION: study_name, TAG_CELL: cell, TAG_CONTEXT: context, TAG_TRIAL: trial.number,
            TAG_KEY: trial.user_attrs[engine.KEY], **trial.user_attrs.get(ATTR_TAGS, {})}
    return LiveRun(uri, experiment, kind="ablation", tags=tags, parent_run_id=trial.user_attrs.get(PARENT_RUN),
                   run_name=f"{cell}-{context + '-' if context else ''}s{spec.seed}")


def _holding(queue: Queue, trials: list[tuple[int, FrozenTrial]]):
    """A check that this worker still holds every one of ``trials`` (raises workqueue.Superseded if not)."""
    def held() -> None:
        for tid, trial in trials:
            queue.ensure_held(tid, trial.number)
    return held


def _checked(on_epoch, held):
    """``on_epoch`` after the check that the trial is still this worker's: a worker suspended past its trial's
    grace period stops at its next epoch instead of logging a duplicate."""
    def logged(epoch: int, row: dict) -> None:
        held()
        on_epoch(epoch, row)
    return logged


def _train_group_logged(specs: list[RunSpec], lives: list[LiveRun], held=lambda: None) -> list[Result]:
    """Train the seeds of one cell as one packed model (sal/training/seeds.py), each seed streaming to its own live
    run; if packing crashes, the seeds train one at a time into the same runs. ``held`` is checked every epoch."""
    try:
        group = start_seeds(specs)
        while not group.done:
            held()
            for live, row, result in zip(lives, group.step(), group.results):
                if row is not None and result.status == STATUS_FINISHED:
                    live.log_epoch(int(row["epoch"]), row)
        return group.finish()
    except Exception as err:  # noqa: BLE001 - the seeds still train, one at a time
        interrupts.raise_if_requested(err)
        log.error("packed seeds %s crashed (%s); training them one at a time", [s.seed for s in specs], err)
        return [_train_or_fail(s, lambda *_: held()) for s in specs]


def _train_or_fail(spec: RunSpec, on_epoch=None, *, checkpoint_dir: str | Path | None = None) -> Result:
    """Train one (cell, seed); a crash ends this run FAILED with its message, never the grid. A retried
    trial resumes from its checkpoint in ``checkpoint_dir`` (train.checkpoint_every)."""
    try:
        return train(spec, on_epoch=on_epoch, checkpoint_dir=checkpoint_dir)
    except Exception as err:  # noqa: BLE001
        interrupts.raise_if_requested(err)
        log.error("seed %s crashed: %s", spec.seed, err)
        return Result(spec=spec, status=STATUS_FAILED,
                      message=mask_text("".join(traceback.format_exception_only(err))))  # -> MLflow and Optuna
