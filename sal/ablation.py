"""Ablation grids: a base run spec x axes x named cells x seeds, run on the engine (Optuna's queue).

Each (cell, seed) is one enqueued trial of a study named after the ablation and one MLflow run tagged
``sal.ablation``, ``sal.cell`` and ``seed``, so reports pair runs by seed. Re-running the command
finishes only what is missing.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import re
import statistics
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from . import engine, interrupts, scoring
from .analysis import AnalysisSpec, Plan, resolve_plan
from .config import (
    RunSpec,
    SpecError,
    apply_overrides,
    check_required_paths,
    config_hash,
    expand_data_env,
    flatten,
    format_validation_error,
    load_yaml,
    missing_data_root,
    nest,
    validate_run,
)
from .redact import mask_text
from .seeds import should_pack, start_seeds
from .tracking import (
    LiveRun,
    end_parent,
    ensure_experiment,
    experiment_name,
    kill_runs,
    run_ids,
    runs_with_tag,
    set_experiment_record,
    start_parent,
)
from .train import Result, train

__all__ = ["AblationSpec", "GridItem", "load_ablation", "run_ablation", "ablation_worker", "metric_direction"]

log = logging.getLogger(__name__)
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
# Test hook: a worker exits right after its MLflow run ends and before its Optuna trial is closed, the
# one moment at which a crash used to leave a finished run that a retry trained and logged again.
EXIT_AFTER_LOG_ENV = "SAL_TEST_EXIT_AFTER_LOG"
PARENT_RUN = "sal.parent_run"  # trial user attr: the MLflow run grouping the trial's cell


def metric_direction(metric: str) -> str:
    """maximize accuracies (``*/acc``, ``*/top5``), minimize losses, times and the rest."""
    return "maximize" if metric.rsplit("/", 1)[-1] in ("acc", "top5") else "minimize"


class AblationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    base: dict[str, Any] = Field(default_factory=dict, description="the run spec every cell starts from")
    cells: dict[str, dict[str, Any]] = Field(default_factory=dict, description="name -> dotted overrides")
    axes: dict[str, list[Any]] = Field(default_factory=dict, description="dotted key -> values (crossed)")
    seeds: int | list[int] = Field(10, description="count (1..n) or explicit list; 3-5 cannot reach p < .05")
    baseline: str | None = Field(None, description="reference cell of the report")
    metric: str = Field("val/acc", description="value recorded on each Optuna trial")
    paper_table: int | None = Field(None, description="paper table this mirrors (report shows its numbers)")
    requires: list[str] = Field(default_factory=list, description="folders that must exist (data sets)")
    analysis: AnalysisSpec | None = Field(None, description="contrasts, families, metrics, alpha, ROPE, correction")
    tags: dict[str, str] = Field(default_factory=dict, description="extra MLflow tags on every run (sal compare)")

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"name={v!r} must be letters, digits, '_', '-' or '.'; fix: rename the ablation")
        return v

    @field_validator("seeds")
    @classmethod
    def _positive_seeds(cls, v):
        seeds = list(range(1, v + 1)) if isinstance(v, int) else v
        if not seeds or min(seeds) < 1 or len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds={v!r} must be a count >= 1 or distinct seeds >= 1; fix: e.g. seeds: 10")
        return v

    @property
    def seed_list(self) -> list[int]:
        return list(range(1, self.seeds + 1)) if isinstance(self.seeds, int) else list(self.seeds)


@dataclass(frozen=True)
class GridItem:
    cell: str  # the method variant: a key of ``cells``
    context: str  # the axis values other than the data set, e.g. "model=resnet50"
    seed: int
    spec: RunSpec

    @property
    def where(self) -> str:
        """The cell's place in the grid: a run of it is one seed of one configuration there."""
        return f"{self.cell}|{self.spec.data.display_name}|{self.context}"

    @property
    def key(self) -> str:
        """The queue key. A run is its configuration: a changed setting gives a new key, never a reuse."""
        return f"{self.group}|seed={self.seed}"

    @property
    def group(self) -> str:
        """The cell's configuration at one data set and context: one parent run in MLflow over its seeds."""
        return f"{self.where}|{config_hash(self.spec)}"


_PLACEHOLDER = re.compile(r"\{([a-z_]+\.[a-z_.]+)\}")


def _fill_placeholders(raw: dict) -> dict:
    """``"weights/{model.name}.pth"`` -> ``"weights/resnet50.pth"``: strings may name other settings."""
    flat = {}

    def walk(node, prefix):
        for k, v in node.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                flat[f"{prefix}{k}"] = v

    walk(raw, "")
    filled = {k: _PLACEHOLDER.sub(lambda m: str(flat.get(m.group(1), m.group(0))), v) if isinstance(v, str) else v
              for k, v in flat.items()}
    return nest(filled)


def _axis_points(axes: dict[str, list[Any]]) -> list[tuple[dict[str, Any], str]]:
    """Crossed axis values as (dotted overrides, context label).

    A value may be a bundle of dotted overrides (e.g. one data set's name, root and label); its
    ``label`` names it. Axes on the data set (``data.name``, ``data.label`` or an axis called
    ``dataset``) stay out of the context: the data set is a column of its own in reports.
    """
    points = []
    for combo in itertools.product(*[[(axis, v) for v in values] for axis, values in axes.items()]):
        overrides, shown = {}, []
        for axis, value in combo:
            if isinstance(value, dict):
                bundle = dict(value)
                label = str(bundle.pop("label", len(shown)))
                overrides.update(bundle)
            else:
                label = str(value)
                overrides[axis] = value
            if axis not in ("data.name", "data.label", "dataset"):
                section, _, field = axis.rpartition(".")
                shown.append(f"{section if field == 'name' else field}={label}")
        points.append((overrides, ",".join(shown)))
    return points or [({}, "")]


def expand(spec: AblationSpec, base_overrides: dict[str, Any] | None = None) -> list[GridItem]:
    """Every (cell, axis point, seed), validated; SpecError lists every bad one."""
    cells = spec.cells or {"default": {}}
    base = apply_overrides(spec.base, base_overrides or {})
    items, problems = [], []
    for (cell, overrides), (axis_overrides, context) in itertools.product(cells.items(), _axis_points(spec.axes)):
        where = f"cell {cell}" + (f" at {context}" if context else "")
        for seed in spec.seed_list:
            try:
                raw = _fill_placeholders(apply_overrides(base, {**axis_overrides, **overrides, "seed": seed}))
                item = GridItem(cell, context, seed, validate_run(raw))
                root_problem = missing_data_root(item.spec)
                if root_problem:
                    raise SpecError([root_problem])
                items.append(item)
            except SpecError as err:
                problems += [f"{where}: {p}" for p in err.problems if f"{where}: {p}" not in problems]
    if problems:
        raise SpecError(problems)
    if spec.baseline and spec.baseline not in cells:
        raise SpecError([f"baseline={spec.baseline!r} is not a cell; fix: use one of {sorted(cells)}"])
    return items


def load_ablation(path: str | Path, base_overrides: dict[str, Any] | None = None,
                  seeds: int | None = None) -> tuple[AblationSpec, list[GridItem]]:
    raw = expand_data_env(load_yaml(path))
    raw.setdefault("name", Path(path).stem)
    if seeds is not None:
        raw["seeds"] = seeds
    try:
        spec = AblationSpec.model_validate(raw)
    except ValidationError as err:
        raise format_validation_error(err, raw, top=AblationSpec) from None
    check_required_paths(f"ablation {spec.name!r}", spec.requires)
    if "cells" in spec.model_fields_set and not spec.cells:
        raise SpecError([f"{path}: cells is empty; fix: name at least one cell, e.g. cells: {{adam: "
                         "{method.name: base}, sal: {method.name: sal}}, or drop the key to run the base spec alone"])
    items = expand(spec, base_overrides)
    plan_of(spec, items)  # a plan naming a missing cell is a spec error before anything runs
    return spec, items


def plan_of(spec: AblationSpec, items: list[GridItem]) -> Plan:
    """The ablation's analysis plan, resolved against its cells."""
    methods = {i.cell: i.spec.method.name for i in items}
    return resolve_plan(spec.analysis, methods, baseline=spec.baseline)


def definition_of(items: list[GridItem]) -> dict[str, str]:
    """Each cell's place in the grid -> the config_hash its runs must carry (what a report reads)."""
    return {i.where: config_hash(i.spec) for i in items}


def _train_logged(spec: RunSpec, live: LiveRun, on_created) -> Result:
    """Train one (cell, seed) as a live MLflow run; a crash ends this run FAILED, never the grid."""
    on_created(live.start(spec))
    result = _train_or_fail(spec, live.log_epoch)
    live.finish(result)
    return result


def _trial_value(status: str, value: float, metric: str) -> float:
    value = scoring.score(value, status=status, metric=metric)
    # a metric this run does not have (val/acc without a validation split): Optuna fails NaN trials
    return scoring.worst_value(metric) if value != value else value


def _logged_before(uri: str, experiment: str, key: str, spec: RunSpec, metric: str) -> tuple[float, dict] | None:
    """A run of this trial's key and configuration that a killed worker logged but could not record in
    Optuna: its value and attrs, so the retried trial closes without training again. RUNNING leftovers
    of the key (their worker died mid-run) are ended KILLED."""
    runs = runs_with_tag(uri, experiment, engine.KEY, key)
    kill_runs(uri, [r.info.run_id for r in runs if r.info.status == "RUNNING"], "its worker died; retried")
    same = [r for r in runs if r.info.status in ("FINISHED", "FAILED") and r.data.tags.get("config_hash") ==
            config_hash(spec) and r.data.tags.get(engine.STATUS) in ("finished", "diverged")]
    if not same:
        return None
    run = same[0]
    status = run.data.tags[engine.STATUS]
    value = _trial_value(status, run.data.metrics.get(metric, math.nan), metric)
    return value, {engine.STATUS: status, engine.RUN: run.info.run_id, engine.MLFLOW_RUNS: [run.info.run_id],
                   "sal.message": run.data.tags.get("sal.message", "")[:500], "sal.reused": True}


def ablation_worker(*, worker_index: int, device: str | None, ref: engine.StorageRef, study_name: str, uri: str,
                    metric: str, wait: bool = True, poll_s: float = 5.0) -> int:
    """Claim and run queued (cell, seed) trials until none is left; returns how many it ran."""
    study, storage = engine.open_study(ref, study_name)
    experiment = experiment_name("ablation", study_name)
    done = 0
    while True:
        interrupts.check()  # never claim new work after a Ctrl-C, even one a library swallowed
        engine.reap_dead_workers(study, storage, on_reaped=lambda ids: kill_runs(uri, ids))
        claimed = engine.claim_next(study, storage)
        if claimed is None:
            if wait and engine.wait_or_stop(study, poll_s):
                continue
            return done
        tid, trial = claimed
        spec = _trial_spec(trial, device)
        # ---- packed seeds (sal/packed.py): the cell's other waiting seeds train with this one as one model
        if should_pack([spec, spec]):
            batch = engine.claim_batch(study, storage, same_as=trial, group=_cell_config)
            if batch:
                done += _run_packed(study, storage, [(tid, trial), *batch], device=device, ablation=study_name,
                                    uri=uri, metric=metric)
                continue
        # ----
        cell, context = trial.user_attrs["sal.cell"], trial.user_attrs.get("sal.context", "")
        key = trial.user_attrs[engine.KEY]
        reused = _logged_before(uri, experiment, key, spec, metric)
        if reused is not None:
            log.info("trial %d: cell %s %s seed %d already logged as run %s; not trained again", trial.number,
                     cell, context, spec.seed, reused[1][engine.RUN])
            engine.finish(study, storage, tid, trial, value=reused[0], attrs=reused[1])
            _close_group_of(study, uri, trial, metric)
            done += 1
            continue
        log.info("trial %d: cell %s %s seed %d", trial.number, cell, context, spec.seed)
        tags = {"sal.ablation": study_name, "sal.cell": cell, "sal.context": context, "sal.trial": trial.number,
                engine.KEY: key, **trial.user_attrs.get("sal.tags", {})}
        live = LiveRun(uri, experiment, kind="ablation", tags=tags, parent_run_id=trial.user_attrs.get(PARENT_RUN),
                       run_name=f"{cell}-{context + '-' if context else ''}s{spec.seed}")
        # The run id is on the trial from the first epoch on, so a reaper can end the run KILLED.
        on_created = lambda run_id: storage.set_trial_user_attr(tid, engine.MLFLOW_RUNS, [run_id])  # noqa: B023
        try:
            with engine.heartbeat(storage, tid), live:
                result = _train_logged(spec, live, on_created)
        except KeyboardInterrupt:
            engine.give_back(study, storage, tid, trial, "interrupted")
            raise
        if os.environ.get(EXIT_AFTER_LOG_ENV):
            os._exit(3)
        attrs = {engine.STATUS: result.status, engine.RUN: live.run_id, "sal.message": result.message[:500]}
        state = engine.TrialState.FAIL if result.status == "failed" else engine.TrialState.COMPLETE
        engine.finish(study, storage, tid, trial, value=_trial_value(result.status, result.metric(metric), metric),
                      attrs=attrs, state=state)
        _close_group_of(study, uri, trial, metric)
        done += 1


def _start_parents(uri: str, spec: AblationSpec, items: list[GridItem]) -> dict[str, str]:
    """One parent run per cell x data set x context (RUNNING while its seeds train): group -> run id."""
    experiment = experiment_name("ablation", spec.name)
    parents = {}
    for item in items:
        if item.group not in parents:
            tags = {**spec.tags, "sal.ablation": spec.name, "sal.cell": item.cell, "sal.context": item.context,
                    "dataset": item.spec.data.display_name, "method": item.spec.method.name,
                    "model": item.spec.model.name, "optimizer": item.spec.optim.name}
            name = _group_name(item.cell, item.context, item.spec.data.display_name)
            parents[item.group] = start_parent(uri, experiment, kind="cell", key=f"{spec.name}|{item.group}",
                                               run_name=name, tags=tags, spec=item.spec)
    return parents


def _group_name(cell: str, context: str, dataset: str) -> str:
    return f"{cell}{'-' + context if context else ''}-{dataset}"


def _close_group(uri: str, run_id: str, *, name: str, metric: str, trials: list[list], final: bool) -> None:
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


def _close_group_of(study, uri: str, trial, metric: str) -> None:
    """After a worker closed ``trial``: end its cell's parent run if that was the cell's last seed."""
    run_id, key = trial.user_attrs.get(PARENT_RUN), trial.user_attrs.get(engine.KEY, "")
    if not run_id:
        return
    group = key.rpartition("|seed=")[0]
    by_key: dict[str, list] = {}
    for t in study.get_trials(deepcopy=False):
        k = t.user_attrs.get(engine.KEY, "")
        if k.rpartition("|seed=")[0] == group:
            by_key.setdefault(k, []).append(t)
    name = _group_name(trial.user_attrs["sal.cell"], trial.user_attrs.get("sal.context", ""), group.split("|")[1])
    _close_group(uri, run_id, name=name, metric=metric, trials=list(by_key.values()), final=False)


def _end_parents(uri: str, spec: AblationSpec, items: list[GridItem], parents: dict[str, str], ref) -> None:
    """When the sweep is over: end each parent whose seeds are all closed (FINISHED, or FAILED)."""
    study, _ = engine.open_study(ref, spec.name)
    by_key: dict[str, list] = {}
    for t in study.get_trials(deepcopy=False):
        by_key.setdefault(t.user_attrs.get(engine.KEY), []).append(t)
    for group, run_id in parents.items():
        first = next(i for i in items if i.group == group)
        _close_group(uri, run_id, name=_group_name(first.cell, first.context, first.spec.data.display_name),
                     metric=spec.metric, trials=[by_key.get(i.key, []) for i in items if i.group == group], final=True)


def _trial_spec(trial, device: str | None) -> RunSpec:
    spec = validate_run(nest(trial.user_attrs["sal.spec"]))
    if device:
        spec = spec.model_copy(update={"train": spec.train.model_copy(update={"device": device})})
    return spec


def _cell_config(trial) -> tuple:
    """What the seeds of one cell share: cell, context and the spec without its seed."""
    config = {k: v for k, v in trial.user_attrs.get("sal.spec", {}).items() if k != "seed"}
    return trial.user_attrs.get("sal.cell"), trial.user_attrs.get("sal.context"), json.dumps(config, sort_keys=True)


def _live_for(uri: str, experiment: str, study_name: str, trial, spec: RunSpec) -> LiveRun:
    cell, context = trial.user_attrs["sal.cell"], trial.user_attrs.get("sal.context", "")
    tags = {"sal.ablation": study_name, "sal.cell": cell, "sal.context": context, "sal.trial": trial.number,
            engine.KEY: trial.user_attrs[engine.KEY], **trial.user_attrs.get("sal.tags", {})}
    return LiveRun(uri, experiment, kind="ablation", tags=tags, parent_run_id=trial.user_attrs.get(PARENT_RUN),
                   run_name=f"{cell}-{context + '-' if context else ''}s{spec.seed}")


def _train_group_logged(specs: list[RunSpec], lives: list[LiveRun]) -> list[Result]:
    """Train the seeds of one cell as one packed model (sal/seeds.py), each seed streaming to its own live
    run; if packing crashes, the seeds train one at a time into the same runs."""
    try:
        group = start_seeds(specs)
        while not group.done:
            for live, row, result in zip(lives, group.step(), group.results):
                if row is not None and result.status == "finished":
                    live.log_epoch(int(row["epoch"]), row)
        return group.finish()
    except Exception as err:  # noqa: BLE001 - the seeds still train, one at a time
        log.error("packed seeds %s crashed (%s); training them one at a time", [s.seed for s in specs], err)
        return [_train_or_fail(s) for s in specs]


def _train_or_fail(spec: RunSpec, on_epoch=None) -> Result:
    """Train one (cell, seed); a crash ends this run FAILED with its message, never the grid."""
    try:
        return train(spec, on_epoch=on_epoch)
    except Exception as err:  # noqa: BLE001
        log.error("seed %s crashed: %s", spec.seed, err)
        return Result(spec=spec, status="failed",
                      message=mask_text("".join(traceback.format_exception_only(err))))  # -> MLflow and Optuna


def _run_packed(study, storage, batch: list, *, device: str | None, ablation: str, uri: str, metric: str) -> int:
    """Train the claimed seeds of one cell together (one live MLflow run per seed), then finish each trial."""
    experiment = experiment_name("ablation", ablation)
    todo = []
    for tid, trial in batch:
        spec = _trial_spec(trial, device)
        reused = _logged_before(uri, experiment, trial.user_attrs[engine.KEY], spec, metric)
        if reused is not None:  # logged by a worker killed before it closed the trial: not trained again
            engine.finish(study, storage, tid, trial, value=reused[0], attrs=reused[1])
            _close_group_of(study, uri, trial, metric)
        else:
            todo.append((tid, trial, spec))
    if not todo:
        return len(batch)
    log.info("trials %s: cell %s seeds %s packed", [t.number for _, t, _ in todo], todo[0][1].user_attrs["sal.cell"],
             [s.seed for _, _, s in todo])
    lives = [_live_for(uri, experiment, ablation, trial, spec) for _, trial, spec in todo]
    try:
        with contextlib.ExitStack() as stack:
            for (tid, _, spec), live in zip(todo, lives):
                stack.enter_context(engine.heartbeat(storage, tid))
                stack.enter_context(live)
                storage.set_trial_user_attr(tid, engine.MLFLOW_RUNS, [live.start(spec)])
            results = _train_group_logged([s for _, _, s in todo], lives)
            for live, result in zip(lives, results):
                live.finish(result)
        if os.environ.get(EXIT_AFTER_LOG_ENV):  # tests: a worker killed after MLflow, before Optuna
            os._exit(3)
    except KeyboardInterrupt:
        for tid, trial, _ in todo:
            engine.give_back(study, storage, tid, trial, "interrupted")
        raise
    for (tid, trial, _), live, result in zip(todo, lives, results):
        attrs = {engine.STATUS: result.status, engine.RUN: live.run_id, "sal.message": result.message[:500]}
        state = engine.TrialState.FAIL if result.status == "failed" else engine.TrialState.COMPLETE
        engine.finish(study, storage, tid, trial, value=_trial_value(result.status, result.metric(metric), metric),
                      attrs=attrs, state=state)
        _close_group_of(study, uri, trial, metric)
    return len(batch)


def queue_grid(ref: engine.StorageRef, spec: AblationSpec, items: list[GridItem], *, retry_failed: bool,
               uri: str | None = None, parents: dict[str, str] | None = None) -> dict[str, list]:
    """Queue every (cell, seed) of the current definition that has no finished run.

    The definition (each cell's config hash) and the analysis plan are stored with the queue and on the
    MLflow experiment at every launch: the report analyses the latest definition with the stored plan.
    With ``uri``, a trial the queue calls finished whose MLflow run is not in that store (a new
    --tracking-uri, a moved mlflow.db) is queued again. ``parents``: group -> its parent MLflow run.
    """
    study, storage = engine.open_study(ref, spec.name, kind="ablation", direction=metric_direction(spec.metric))
    engine.reap_dead_workers(study, storage, on_reaped=lambda ids: kill_runs(uri, ids) if uri else None)
    plan, definition = plan_of(spec, items), definition_of(items)
    for key, value in {"sal.baseline": spec.baseline, "sal.paper_table": spec.paper_table,
                       "sal.definition": definition, "sal.plan": plan.to_json(), "sal.plan_hash": plan.hash}.items():
        study.set_user_attr(key, value)
    present = None
    if uri is not None:
        experiment = experiment_name("ablation", spec.name)
        set_experiment_record(uri, experiment, "sal.definition", definition)
        set_experiment_record(uri, experiment, "sal.plan", plan.to_json())
        present = run_ids(uri, experiment)
    # Tags every run of the grid carries, so a report needs nothing but MLflow.
    tags = {k: v for k, v in {**spec.tags, "sal.baseline": spec.baseline, "sal.paper_table": spec.paper_table,
                              "sal.plan_hash": plan.hash}.items() if v}
    payload = {i.key: {"sal.cell": i.cell, "sal.context": i.context, "seed": i.seed, "sal.spec": flatten(i.spec),
                       "sal.tags": tags, PARENT_RUN: (parents or {}).get(i.group)} for i in items}
    return engine.enqueue_missing(study, payload, retry_failed=retry_failed, present_runs=present)


def run_ablation(spec: AblationSpec, items: list[GridItem], *, ref: engine.StorageRef, uri: str, workers: int = 1,
                 gpus: list[str] | None = None, retry_failed: bool = False, wait: bool = True) -> dict[str, Any]:
    """Queue what is missing and work the queue with ``workers`` processes; returns the queue report
    and the final trial counts."""
    ensure_experiment(uri, experiment_name("ablation", spec.name))  # before workers race to create it
    parents = _start_parents(uri, spec, items)
    report = queue_grid(ref, spec, items, retry_failed=retry_failed, uri=uri, parents=parents)
    kwargs = dict(ref=ref, study_name=spec.name, uri=uri, metric=spec.metric, wait=wait)
    if workers == 1:
        ablation_worker(worker_index=0, device=f"cuda:{gpus[0]}" if gpus else None, **kwargs)
        failed_workers = 0
    else:
        failed_workers = engine.spawn_workers(ablation_worker, workers, gpus=gpus, **kwargs)
    _end_parents(uri, spec, items, parents, ref)
    study, _ = engine.open_study(ref, spec.name)
    return {"queue": report, "states": engine.trials_by_state(study), "failed_workers": failed_workers}
