"""Ablation grids: a base run spec x axes x named cells x seeds, run on the engine (Optuna's queue).

Each (cell, seed) is one enqueued trial of a study named after the ablation and one MLflow run tagged
``sal.ablation``, ``sal.cell`` and ``seed``, so reports pair runs by seed. Re-running the command
finishes only what is missing.
"""

from __future__ import annotations

import itertools
import logging
import re
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from . import engine
from .config import (
    RunSpec,
    SpecError,
    apply_overrides,
    check_required_paths,
    expand_data_env,
    flatten,
    format_validation_error,
    load_yaml,
    nest,
    validate_run,
)
from .tracking import ensure_experiment, experiment_name, log_result
from .train import Result, train

__all__ = ["AblationSpec", "GridItem", "load_ablation", "run_ablation", "ablation_worker"]

log = logging.getLogger(__name__)
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


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
    def key(self) -> str:
        return f"{self.cell}|{self.spec.data.display_name}|{self.context}|seed={self.seed}"


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
                items.append(GridItem(cell, context, seed, validate_run(raw)))
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
    return spec, expand(spec, base_overrides)


def _run_item(item_spec: RunSpec, *, ablation: str, cell: str, context: str, trial_number: int, uri: str,
              metric: str, extra_tags: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """Train one (cell, seed) and log it; returns the trial's value and attrs."""
    try:
        result = train(item_spec)
    except Exception as err:  # noqa: BLE001 - a crash ends this run, never the grid
        log.error("cell %s seed %s crashed: %s", cell, item_spec.seed, err)
        result = Result(spec=item_spec, status="failed", message="".join(traceback.format_exception_only(err)))
    tags = {"sal.ablation": ablation, "sal.cell": cell, "sal.context": context, "sal.trial": trial_number,
            **extra_tags}
    run_id = log_result(result, uri=uri, experiment=experiment_name("ablation", ablation), kind="ablation",
                        tags=tags, run_name=f"{cell}-{context + '-' if context else ''}s{item_spec.seed}")
    value = result.metric(metric)
    attrs = {engine.STATUS: result.status, "sal.mlflow_run": run_id, "sal.message": result.message[:500]}
    if result.status == "diverged" or value != value:
        # A diverged run is a result (the method failed), scored as no accuracy at all; a metric the run
        # does not have (val/acc without a validation split) is recorded as 0 too: Optuna fails NaN trials.
        value = 0.0
    return value, attrs


def ablation_worker(*, worker_index: int, device: str | None, ref: engine.StorageRef, study_name: str, uri: str,
                    metric: str, wait: bool = True, poll_s: float = 5.0) -> int:
    """Claim and run queued (cell, seed) trials until none is left; returns how many it ran."""
    study, storage = engine.open_study(ref, study_name)
    done = 0
    while True:
        engine.reap_dead_workers(study, storage)
        claimed = engine.claim_next(study, storage)
        if claimed is None:
            if wait and engine.wait_or_stop(study, poll_s):
                continue
            return done
        tid, trial = claimed
        spec = validate_run(nest(trial.user_attrs["sal.spec"]))
        if device:
            spec = spec.model_copy(update={"train": spec.train.model_copy(update={"device": device})})
        cell, context = trial.user_attrs["sal.cell"], trial.user_attrs.get("sal.context", "")
        log.info("trial %d: cell %s %s seed %d", trial.number, cell, context, spec.seed)
        try:
            with engine.heartbeat(storage, tid):
                value, attrs = _run_item(spec, ablation=study_name, cell=cell, context=context,
                                         trial_number=trial.number, uri=uri, metric=metric,
                                         extra_tags=trial.user_attrs.get("sal.tags", {}))
        except KeyboardInterrupt:
            engine.give_back(study, storage, tid, trial, "interrupted")
            raise
        state = engine.TrialState.FAIL if attrs[engine.STATUS] == "failed" else engine.TrialState.COMPLETE
        engine.finish(study, storage, tid, trial, value=value, attrs=attrs, state=state)
        done += 1


def queue_grid(ref: engine.StorageRef, spec: AblationSpec, items: list[GridItem], *,
               retry_failed: bool) -> dict[str, list]:
    study, storage = engine.open_study(ref, spec.name, kind="ablation")
    engine.reap_dead_workers(study, storage)
    study.set_user_attr("sal.baseline", spec.baseline)
    study.set_user_attr("sal.paper_table", spec.paper_table)
    # Tags every run of the grid carries, so a report needs nothing but MLflow.
    tags = {k: v for k, v in {"sal.baseline": spec.baseline, "sal.paper_table": spec.paper_table}.items() if v}
    payload = {i.key: {"sal.cell": i.cell, "sal.context": i.context, "seed": i.seed, "sal.spec": flatten(i.spec),
                       "sal.tags": tags} for i in items}
    return engine.enqueue_missing(study, payload, retry_failed=retry_failed)


def run_ablation(spec: AblationSpec, items: list[GridItem], *, ref: engine.StorageRef, uri: str, workers: int = 1,
                 gpus: list[str] | None = None, retry_failed: bool = False, wait: bool = True) -> dict[str, Any]:
    """Queue what is missing and work the queue with ``workers`` processes; returns the queue report
    and the final trial counts."""
    ensure_experiment(uri, experiment_name("ablation", spec.name))  # before workers race to create it
    report = queue_grid(ref, spec, items, retry_failed=retry_failed)
    kwargs = dict(ref=ref, study_name=spec.name, uri=uri, metric=spec.metric, wait=wait)
    if workers == 1:
        ablation_worker(worker_index=0, device=f"cuda:{gpus[0]}" if gpus else None, **kwargs)
        failed_workers = 0
    else:
        failed_workers = engine.spawn_workers(ablation_worker, workers, gpus=gpus, **kwargs)
    study, _ = engine.open_study(ref, spec.name)
    return {"queue": report, "states": engine.trials_by_state(study), "failed_workers": failed_workers}
