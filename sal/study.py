"""Hyperparameter studies over SAL's knobs: every trial trains several seeds, Optuna optimises an aggregate.

Pruning that fits multi-seed trials: with an epoch pruner (median, successive halving, hyperband) the
seeds train in lockstep and the seed-mean curve is reported each epoch; with ``wilcoxon`` seeds train
one after another and each seed's score is a paired observation for Optuna's WilcoxonPruner.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import optuna
from optuna.trial import TrialState

from . import engine
from .config import RunSpec, apply_overrides, flatten, validate_run
from .objectives import aggregate
from .study_spec import StudySpec, build_pruner, build_sampler, ordered_space
from .tracking import ensure_experiment, experiment_name, log_result
from .train import Result, TrainingRun, train

__all__ = ["suggest", "MultiSeedObjective", "study_worker", "run_study", "create_study", "best_trial", "best_spec"]

log = logging.getLogger(__name__)


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

    def __init__(self, spec: StudySpec, *, uri: str, device: str | None = None):
        self.spec, self.uri, self.device = spec, uri, device
        self.experiment = experiment_name("study", spec.name)

    def run_specs(self, params: dict[str, Any]) -> list[RunSpec]:
        extra = {"train.device": self.device} if self.device else {}
        return [validate_run(apply_overrides(self.spec.base, {**params, **extra, "seed": s}))
                for s in self.spec.seed_list]

    def score(self, result: Result, objective_index: int) -> float:
        """A seed's score: the metric at the last epoch, or the final metric; the worst value if diverged."""
        o = self.spec.objectives[objective_index]
        if result.status == "diverged":
            return 0.0 if o.metric.endswith("acc") or o.metric.endswith("top5") else \
                (-math.inf if o.direction == "maximize" else math.inf)
        return result.metric(o.metric)

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        trial.set_user_attr(engine.WORKER, engine.worker_id())
        specs = self.run_specs(suggest(trial, self.spec))
        results = self._per_seed(trial, specs) if self.spec.prunes_per_seed else self._lockstep(trial, specs)
        pruned = any(r.status == "pruned" for r in results) or trial.user_attrs.get("sal.pruned", False)
        values = []
        for i, o in enumerate(self.spec.objectives):
            scores = [self.score(r, i) for r in results]
            value = aggregate(o.aggregate, scores, maximize=o.direction == "maximize", alpha=o.cvar_alpha)
            trial.set_user_attr(f"sal.per_seed.{o.metric}", {str(r.spec.seed): s for r, s in zip(results, scores)})
            trial.set_user_attr(f"sal.{o.aggregate}.{o.metric}", value)
            values.append(value)
        self._log(trial, results, values, pruned)
        if pruned:
            raise optuna.TrialPruned(f"pruned after {len(results[-1].history)} epochs / {len(results)} seeds")
        return values[0] if len(values) == 1 else values

    def _lockstep(self, trial: optuna.Trial, specs: list[RunSpec]) -> list[Result]:
        runs = [TrainingRun(s) for s in specs]
        prune = len(self.spec.objectives) == 1 and self.spec.pruner.name != "none"
        for epoch in range(1, specs[0].train.epochs + 1):
            live = [r for r in runs if not r.done]
            if not live:
                break
            for r in live:
                r.step()
            scores = [self.score(r.result, 0) for r in runs]
            if prune and not any(math.isnan(s) for s in scores):
                trial.report(sum(scores) / len(scores), epoch)
                if trial.should_prune():
                    for r in live:  # a diverged seed keeps its status
                        if r.result.status == "finished":
                            r.stop("pruned", f"seed-mean {self.spec.objectives[0].metric} pruned at epoch {epoch}")
                    break
        return [r.finish() for r in runs]

    def _per_seed(self, trial: optuna.Trial, specs: list[RunSpec]) -> list[Result]:
        results = []
        for i, s in enumerate(specs):
            results.append(train(s))
            trial.report(self.score(results[-1], 0), i)
            if i + 1 < len(specs) and trial.should_prune():
                trial.set_user_attr("sal.pruned", True)
                break
        return results

    def _log(self, trial: optuna.Trial, results: list[Result], values: list[float], pruned: bool) -> None:
        tags = {"sal.study": self.spec.name, "sal.trial": trial.number, "sal.trial_state": "pruned" if pruned else
                "complete"}
        run_ids = []
        for r in results:
            for i, (o, value) in enumerate(zip(self.spec.objectives, values)):
                r.final[f"study/{o.aggregate}/{o.metric}"] = value
                r.final[f"study/seed/{o.metric}"] = self.score(r, i)
            run_ids.append(log_result(r, uri=self.uri, experiment=self.experiment, kind="study", tags=tags,
                                      run_name=f"trial{trial.number}-s{r.spec.seed}"))
        trial.set_user_attr("sal.mlflow_runs", run_ids)


def create_study(spec: StudySpec, ref: engine.StorageRef, worker_index: int = 0) -> optuna.Study:
    study, _ = engine.open_study(ref, spec.name, kind="study", directions=spec.directions,
                                 sampler=build_sampler(spec, worker_index), pruner=build_pruner(spec))
    return study


def _finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def study_worker(*, worker_index: int, device: str | None, ref: engine.StorageRef, spec_json: str, uri: str) -> None:
    """Run trials until the study has n_trials finished ones (or the timeout passes)."""
    spec = StudySpec.model_validate_json(spec_json)
    study = create_study(spec, ref, worker_index)
    engine.reap_dead_workers(study, ref.open())
    target = spec.n_trials
    remaining = None if target is None else target - _finished(study)
    if remaining is not None and remaining <= 0:
        return
    callbacks = []
    if target is not None:
        callbacks.append(optuna.study.MaxTrialsCallback(target, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    study.optimize(MultiSeedObjective(spec, uri=uri, device=device), n_trials=remaining, timeout=spec.timeout,
                   callbacks=callbacks, catch=(RuntimeError, ValueError))


def run_study(spec: StudySpec, *, ref: engine.StorageRef, uri: str, workers: int = 1,
              gpus: list[str] | None = None) -> optuna.Study:
    ensure_experiment(uri, experiment_name("study", spec.name))
    study = create_study(spec, ref)
    study.set_user_attr("sal.base", spec.base)
    study.set_user_attr("sal.spec", spec.model_dump(mode="json"))
    if spec.enqueue_defaults and not study.get_trials(deepcopy=False):
        defaults = flatten(validate_run(spec.base))
        study.enqueue_trial({k: defaults[k] for k in spec.space if k in defaults}, skip_if_exists=True)
    kwargs = dict(ref=ref, spec_json=spec.model_dump_json(), uri=uri)
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
    """A run spec with the best trial's knobs on the study's base spec (seed 1), ready for `sal train`."""
    base = study.user_attrs.get("sal.base", {})
    return validate_run(apply_overrides(base, dict(best_trial(study).params)))
