"""Hyperparameter studies over SAL's knobs: every trial trains several seeds, Optuna optimises an aggregate.

Pruning that fits multi-seed trials: with an epoch pruner (median, successive halving, hyperband) the
seeds train in lockstep and the seed-mean curve is reported each epoch; with ``wilcoxon`` seeds train
one after another and each seed's score is a paired observation for Optuna's WilcoxonPruner.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
import traceback
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from ..core.names import (
    ATTR_DEFINITION_HASH,
    ATTR_MESSAGE,
    ATTR_PER_SEED,
    ATTR_PRUNED,
    ATTR_STUDY_BASE,
    ATTR_STUDY_SPEC,
    ATTR_TRIAL_SPEC,
    STATUS_FINISHED,
    STATUS_PRUNED,
    TAG_STUDY,
    TAG_TRIAL,
    TAG_TRIAL_STATE,
)
from ..core.redact import mask_text
from ..metrics import scoring
from ..queue import engine
from ..queue.workqueue import Claimed, Queue, work, worker_record
from ..spec.config import RunSpec, SpecError, apply_overrides, config_hash, configuration, flatten, nest, validate_run
from ..spec.study_spec import StudySpec, build_pruner, build_sampler, ordered_space
from ..tracking.store import (
    LiveRun,
    annotate_run,
    end_parent,
    ensure_experiment,
    experiment_name,
    kill_runs,
    start_parent,
)
from ..training.run import Result, train
from ..training.seeds import start_seeds
from .objectives import trial_value

__all__ = ["suggest", "MultiSeedObjective", "StudyJob", "study_worker", "run_study", "create_study", "open_queue",
           "best_trial", "best_spec", "definition_hash", "archive_study"]

log = logging.getLogger(__name__)
DEFINITION = ATTR_DEFINITION_HASH  # study user attr: see definition_hash
TRIAL_SPEC = ATTR_TRIAL_SPEC  # trial user attr: the flattened spec the trial trained (seed and device left out)


def suggest(trial: optuna.Trial, spec: StudySpec) -> dict[str, Any]:
    """Draw every searched key; S_noise is drawn below the S_yield of the same trial."""
    params: dict[str, Any] = {}
    for key, p in ordered_space(spec.space):
        if p.type == "categorical":
            params[key] = trial.suggest_categorical(key, p.choices)
        elif p.type == "int":
            params[key] = trial.suggest_int(key, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
        else:
            high = p.high
            if key == "method.s_noise" and "method.s_yield" in params:
                high = min(high, params["method.s_yield"] * (1 - 1e-9))
            params[key] = trial.suggest_float(key, p.low, high, log=p.log, step=p.step)
    return params


class MultiSeedObjective:
    """Optuna objective: train the trial's configuration on every seed, log each run, aggregate."""

    def __init__(self, spec: StudySpec, *, uri: str, device: str | None = None,
                 checkpoint_dir: str | None = None):
        self.spec, self.uri, self.device, self.checkpoint_dir = spec, uri, device, checkpoint_dir
        self.experiment = experiment_name("study", spec.name)
        self.queue: Queue | None = None  # set by StudyJob: the trial is checked to be still this worker's

    def held(self, trial: optuna.Trial) -> None:
        """Raise Superseded when the trial was failed as stale and queued again (this worker stalled)."""
        if self.queue is not None:
            self.queue.ensure_held(self.queue.trial_id(trial.number), trial.number)

    def run_specs(self, params: dict[str, Any]) -> list[RunSpec]:
        extra = {"train.device": self.device} if self.device else {}
        return [validate_run(apply_overrides(self.spec.base, {**params, **extra, "seed": s}))
                for s in self.spec.seed_list]

    def score(self, result: Result, objective_index: int) -> float:
        """A seed's score: the metric at the last epoch, or the final metric; the worst value if diverged."""
        metric = self.spec.objectives[objective_index].metric
        return scoring.score(result.metric(metric), status=result.status, metric=metric)

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        trial.set_user_attr(engine.WORKER, engine.worker_id())
        params = suggest(trial, self.spec)
        specs = self.run_specs(params)
        # What this trial trained, so `sal study best` writes exactly that (never base + params re-resolved).
        trained = configuration(flatten(specs[0]), drop=("train.device",))
        trial.set_user_attr(TRIAL_SPEC, trained)
        parent = start_parent(self.uri, self.experiment, kind="trial", key=f"{self.spec.name}|trial={trial.number}",
                              run_name=f"trial{trial.number}", params=params, spec=specs[0],
                              tags={**self.spec.tags, TAG_STUDY: self.spec.name, TAG_TRIAL: trial.number,
                                    "config_hash": config_hash(specs[0])})
        self._run_ids = [parent]
        trial.set_user_attr(engine.MLFLOW_RUNS, self._run_ids)
        try:
            return self._trial(trial, parent, specs)
        except optuna.TrialPruned:
            end_parent(self.uri, parent, status="KILLED", metrics=self._parent_metrics)
            raise
        except BaseException as err:  # Ctrl-C or Superseded (not Exceptions) stop it: KILLED, not FAILED
            end_parent(self.uri, parent, status="FAILED" if isinstance(err, Exception) else "KILLED")
            raise

    def _trial(self, trial: optuna.Trial, parent: str, specs: list[RunSpec]) -> float | list[float]:
        self._parent_metrics: dict[str, float] = {}
        lives = [self._live(trial, parent, s) for s in specs]
        try:
            results = self._per_seed(trial, specs, lives) if self.spec.prunes_per_seed else \
                self._lockstep(trial, specs, lives)
        except Exception as err:  # a crash fails this trial, never the study; the summary groups the messages
            trial.set_user_attr(ATTR_MESSAGE, mask_text("".join(traceback.format_exception_only(err))).strip()[:500])
            raise
        pruned = any(r.status == STATUS_PRUNED for r in results) or trial.user_attrs.get(ATTR_PRUNED, False)
        values = []
        for i, o in enumerate(self.spec.objectives):
            scores = [self.score(r, i) for r in results]
            value = trial_value(o.aggregate, scores, [r.status == scoring.DIVERGED for r in results],
                                metric=o.metric, maximize=o.direction == "maximize", alpha=o.cvar_alpha)
            trial.set_user_attr(f"{ATTR_PER_SEED}.{o.metric}", {str(r.spec.seed): s for r, s in zip(results, scores)})
            trial.set_user_attr(f"sal.{o.aggregate}.{o.metric}", value)
            values.append(value)
        self._log(trial, results, lives, values, pruned)
        if pruned:
            raise optuna.TrialPruned(f"pruned after {len(results[-1].history)} epochs / {len(results)} seeds")
        shown = ", ".join(f"{v:.4g} {o.aggregate}({o.metric})" for o, v in zip(self.spec.objectives, values))
        self.held(trial)
        end_parent(self.uri, parent, status="FINISHED", metrics=self._parent_metrics,
                   run_name=f"trial{trial.number}: {shown}")  # the runs table shows names, not metrics
        return values[0] if len(values) == 1 else values

    def _live(self, trial: optuna.Trial, parent: str, spec: RunSpec) -> LiveRun:
        tags = {**self.spec.tags, TAG_STUDY: self.spec.name, TAG_TRIAL: trial.number}
        return LiveRun(self.uri, self.experiment, kind="study", tags=tags, parent_run_id=parent,
                       run_name=f"trial{trial.number}-s{spec.seed}")

    def _started(self, trial: optuna.Trial, live: LiveRun, spec: RunSpec) -> None:
        """Create the seed's run (RUNNING) and put its id on the trial at once, for the reaper."""
        self._run_ids.append(live.start(spec))
        trial.set_user_attr(engine.MLFLOW_RUNS, self._run_ids)

    def _checked(self, trial: optuna.Trial, live: LiveRun):
        """``live.log_epoch`` after the check that the trial is still this worker's."""
        def logged(epoch: int, row: dict[str, float]) -> None:
            self.held(trial)
            live.log_epoch(epoch, row)
        return logged

    def _lockstep(self, trial: optuna.Trial, specs: list[RunSpec], lives: list[LiveRun]) -> list[Result]:
        # packed into one model when train.pack allows (sal/training/packed.py); a retried trial's seeds resume
        # from their checkpoints
        group = start_seeds(specs, checkpoint_dir=self.checkpoint_dir)
        for live, s in zip(lives, specs):
            self._started(trial, live, s)
        prune = len(self.spec.objectives) == 1 and self.spec.pruner.name != "none"
        try:
            while not group.done:
                self.held(trial)  # every epoch: a stalled worker's trial may be another's by now
                for row, result, live in zip(group.step(), group.results, lives):
                    if row is not None and result.status == STATUS_FINISHED:
                        live.log_epoch(int(row["epoch"]), row)
                epoch = group.epoch
                if epoch is None:  # a resumed seed is still catching up with the others
                    continue
                scores = [self.score(r, 0) for r in group.results]
                if prune and not any(math.isnan(s) for s in scores):
                    trial.report(sum(scores) / len(scores), epoch)
                    if trial.should_prune():  # a diverged seed keeps its status
                        group.prune(f"seed-mean {self.spec.objectives[0].metric} pruned at epoch {epoch}")
                        break
            results = group.finish()
            self.held(trial)  # before its runs end FINISHED
        except BaseException as err:
            for lv in lives:
                lv.__exit__(type(err), err, None)
            raise
        for lv, r in zip(lives, results):
            lv.finish(r)
        return results

    def _per_seed(self, trial: optuna.Trial, specs: list[RunSpec], lives: list[LiveRun]) -> list[Result]:
        results = []
        for i, (s, live) in enumerate(zip(specs, lives)):
            with live:
                self._started(trial, live, s)
                results.append(train(s, on_epoch=self._checked(trial, live), checkpoint_dir=self.checkpoint_dir))
                self.held(trial)
                live.finish(results[-1])
            trial.report(self.score(results[-1], 0), i)
            if i + 1 < len(specs) and trial.should_prune():
                trial.set_user_attr(ATTR_PRUNED, True)
                break
        return results

    def _log(self, trial: optuna.Trial, results: list[Result], lives: list[LiveRun], values: list[float],
             pruned: bool) -> None:
        """The trial's aggregate on every seed's run (``study/...``) and on the parent, once all are known."""
        for r, live in zip(results, lives):
            metrics = {}
            for i, (o, value) in enumerate(zip(self.spec.objectives, values)):
                metrics[f"study/{o.aggregate}/{o.metric}"] = value
                metrics[f"study/seed/{o.metric}"] = self.score(r, i)
            r.final.update(metrics)
            annotate_run(self.uri, live.run_id, metrics=metrics, step=len(r.history),
                         tags={TAG_TRIAL_STATE: "pruned" if pruned else "complete"})
        self._parent_metrics = {f"{o.aggregate}_{o.metric.replace('/', '_')}": v
                                for o, v in zip(self.spec.objectives, values) if v == v and abs(v) != math.inf}


def create_study(spec: StudySpec, ref: engine.StorageRef, worker_index: int = 0) -> optuna.Study:
    return open_queue(spec, ref, worker_index).study


def open_queue(spec: StudySpec, ref: engine.StorageRef, worker_index: int = 0) -> Queue:
    """The study as a work queue, with this worker's sampler and the study's pruner. The sampler is seeded
    per worker and by the trials the study already has, so a resumed or extended study draws new parameters."""
    queue = Queue(ref, spec.name, kind="study", directions=spec.directions, metric_names=spec.metric_names,
                  sampler=build_sampler(spec, worker_index), pruner=build_pruner(spec))
    history = len(queue.trials())
    if history:
        queue.study.sampler = build_sampler(spec, worker_index, history)
    return queue


def _finished(queue: Queue) -> int:
    return len(queue.trials(TrialState.COMPLETE, TrialState.PRUNED))


class StudyJob:
    """One unit of study work: one trial, run by Optuna's own loop (``study.optimize(n_trials=1)``), so its
    heartbeat thread, its pruning and failure handling and its samplers' hooks (the grid sampler stops a
    study from inside that loop) are Optuna's. The trial is an enqueued or retried one first, else the
    sampler's.

    No trial is started once n_trials are finished or running elsewhere (no overshoot with many workers);
    a worker waits while others' running trials may still fail and need a replacement. Like
    study.optimize(n_trials=...), one worker starts at most as many trials as were missing when it began,
    so trials that keep failing end the command instead of looping.
    """

    def __init__(self, spec: StudySpec, *, uri: str, device: str | None = None, checkpoint_dir: str | None = None):
        self.spec = spec
        self.objective = MultiSeedObjective(spec, uri=uri, device=device, checkpoint_dir=checkpoint_dir)
        self.deadline = None if spec.timeout is None else time.monotonic() + spec.timeout
        self.wait = True
        self.budget: int | None = None  # trials this worker may start; set at its first claim
        self.started = 0

    def claim(self, queue: Queue) -> Claimed | None:
        target = self.spec.n_trials
        finished = _finished(queue)
        if self.budget is None and target is not None:
            self.budget = max(target - finished, 0)
        out_of_time = self.deadline is not None and time.monotonic() > self.deadline
        exhausted = isinstance(queue.study.sampler, optuna.samplers.GridSampler) and \
            queue.study.sampler.is_exhausted(queue.study)
        if out_of_time or exhausted or (target is not None and (finished >= target or self.started >= self.budget)):
            self.wait = False
            return None
        if target is not None and finished + len(queue.trials(TrialState.RUNNING)) >= target:
            return None  # the rest are running elsewhere: wait, one may fail and need a replacement
        self.started += 1
        return Claimed([])  # a slot: Optuna's loop asks for the trial itself

    def run(self, queue: Queue, claimed: Claimed) -> None:
        self.objective.queue = queue
        try:
            queue.study.optimize(self.objective, n_trials=1, catch=(Exception,))
        except KeyboardInterrupt:
            # Optuna failed the interrupted trial; queue it again with its parameters, as ablations do
            mine = [t for t in queue.trials() if t.user_attrs.get(engine.WORKER) == queue.worker]
            if mine and mine[-1].state == TrialState.FAIL:
                RetryHeartbeatStaleTrialCallback(max_retry=None)(queue.study, mine[-1])
            raise


def study_worker(*, worker_index: int, device: str | None, ref: engine.StorageRef, spec_json: str, uri: str,
                 poll_s: float = 5.0, checkpoint_dir: str | None = None) -> int:
    """Run trials until the study has n_trials finished ones (or the timeout passes); returns how many."""
    spec = StudySpec.model_validate_json(spec_json)
    queue = open_queue(spec, ref, worker_index)
    job = StudyJob(spec, uri=uri, device=device, checkpoint_dir=checkpoint_dir)
    return work(queue, job, poll_s=poll_s, on_reaped=lambda ids: kill_runs(uri, ids))


def definition_hash(spec: StudySpec) -> str:
    """What makes trials of one study comparable: the resolved base spec, the space, the seeds and the
    objectives (not n_trials or the timeout, which a resumed study may raise)."""
    body = {"base": config_hash(validate_run(spec.base)),
            **spec.model_dump(mode="json", include={"space", "seeds", "objectives"})}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]


def archive_study(ref: engine.StorageRef, name: str) -> str | None:
    """Move study ``name`` aside (copied to ``name@UTC-time``, then removed) so a fresh one can start;
    returns the archive's name, or None when there was no such study. Nothing is lost."""
    storage = ref.open()
    if name not in {s.study_name for s in optuna.get_all_study_summaries(storage)}:
        return None
    archive = f"{name}@{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
    optuna.copy_study(from_study_name=name, from_storage=storage, to_storage=storage, to_study_name=archive)
    optuna.delete_study(study_name=name, storage=storage)
    return archive


def _stored_study(ref: engine.StorageRef, name: str) -> optuna.Study | None:
    """The study ``name`` as stored, read without a write; None when there is none yet."""
    if (ref.is_journal or ref.url.startswith("sqlite:///")) and not Path(ref.url.removeprefix("sqlite:///")).is_file():
        return None
    try:
        return optuna.load_study(study_name=name, storage=ref.open())
    except KeyError:
        return None


def _check_same_study(study: optuna.Study, spec: StudySpec, ref: engine.StorageRef) -> None:
    stored = study.user_attrs.get(DEFINITION)
    if stored is not None and stored != definition_hash(spec) and study.get_trials(deepcopy=False):
        raise SpecError([f"study {spec.name!r} in {ref.url} was run with another base spec, space, seeds or "
                         f"objectives (definition {stored}, now {definition_hash(spec)}), so its trials would not "
                         "compare; fix: give the study a new name, or pass --force-new to start a fresh one (the "
                         "old one is kept under NAME@time)"])


def run_study(spec: StudySpec, *, ref: engine.StorageRef, uri: str, workers: int = 1,
              gpus: list[str] | None = None, force_new: bool = False, checkpoint_dir: str | None = None
              ) -> optuna.Study:
    if force_new:
        archived = archive_study(ref, spec.name)
        if archived:
            log.warning("study %s moved aside as %s; starting a fresh one", spec.name, archived)
    stored = _stored_study(ref, spec.name)
    if stored is not None:  # refused before anything is written to the storage
        _check_same_study(stored, spec, ref)
    study = create_study(spec, ref)
    ensure_experiment(uri, experiment_name("study", spec.name))
    study.set_user_attr(DEFINITION, definition_hash(spec))
    study.set_user_attr(ATTR_STUDY_BASE, spec.base)
    study.set_user_attr(ATTR_STUDY_SPEC, spec.model_dump(mode="json"))
    for key, value in worker_record(uri).items():  # what `sal worker` on another machine needs
        study.set_user_attr(key, value)
    if spec.enqueue_defaults and not study.get_trials(deepcopy=False):
        defaults = flatten(validate_run(spec.base))
        # a default the space cannot take (None, e.g. SWA's swa_lr = the base lr; or outside the range) is
        # left to the sampler: Optuna fails a trial whose enqueued value is not in its distribution
        fixed = {k: defaults[k] for k, p in spec.space.items() if k in defaults and p.contains(defaults[k])}
        study.enqueue_trial(fixed, skip_if_exists=True)
    kwargs = dict(ref=ref, spec_json=spec.model_dump_json(), uri=uri, checkpoint_dir=checkpoint_dir)
    if workers == 1:
        study_worker(worker_index=0, device=f"cuda:{gpus[0]}" if gpus else None, **kwargs)
    else:
        engine.spawn_workers(study_worker, workers, gpus=gpus, **kwargs)
    return create_study(spec, ref)


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    """The best trial; for several objectives, the Pareto-optimal one best on the first."""
    if len(study.directions) == 1:
        return study.best_trial
    front = study.best_trials
    sign = 1 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else -1
    return max(front, key=lambda t: sign * t.values[0])


def best_spec(study: optuna.Study) -> RunSpec:
    """The configuration the best trial trained (seed 1), ready for `sal train`."""
    best = best_trial(study)
    if TRIAL_SPEC in best.user_attrs:
        return validate_run(nest(best.user_attrs[TRIAL_SPEC]))
    # Trials logged before sal recorded each trial's spec: the base spec stored with the study
    base = study.user_attrs.get(ATTR_STUDY_BASE, {})
    return validate_run(apply_overrides(base, dict(best.params)))
