"""Ablation grids: a base run spec x axes x named cells x seeds, run on the engine (Optuna's queue).

Each (cell, seed) is one enqueued trial of a study named after the ablation and one MLflow run tagged
``sal.ablation``, ``sal.cell`` and ``seed``, so reports pair runs by seed. Re-running the command
finishes only what is missing.
"""

from __future__ import annotations

import itertools
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from ..core.gridkey import GridKey, Place
from ..core.names import (
    ATTR_BASELINE,
    ATTR_CELL,
    ATTR_CONTEXT,
    ATTR_DEFINITION,
    ATTR_METRIC,
    ATTR_PAPER_TABLE,
    ATTR_PLAN,
    ATTR_PLAN_HASH,
    ATTR_TAGS,
    ATTR_TRIAL_SPEC,
    RECORD_DEFINITION,
    RECORD_PLAN,
    RECORD_PLANS,
    TAG_ABLATION,
    TAG_BASELINE,
    TAG_CELL,
    TAG_CONTEXT,
    TAG_PAPER_TABLE,
    TAG_PLAN_HASH,
)
from ..core.spec_base import Seeds, Strict, name_problem, seed_list
from ..metrics import scoring
from ..queue import engine
from ..queue.workqueue import Queue, worker_record
from ..spec.analysis import AnalysisSpec, Plan, resolve_plan
from ..spec.config import (
    RunSpec,
    SpecError,
    apply_overrides,
    check_required_paths,
    config_hash,
    flatten,
    missing_data_root,
    nest,
    read_sweep_spec,
    validate_run,
)
from ..spec.fidelity import PAPER_METRIC, fidelity_overrides
from ..tracking.store import (
    ensure_experiment,
    experiment_name,
    get_experiment_record,
    kill_runs,
    run_ids,
    set_experiment_record,
    start_parent,
)
from .ablation_worker import EXIT_AFTER_LOG_ENV, PARENT_RUN, ablation_worker, close_group, group_name
from .yoke import YOKE_KEY, partner_keys, yoke_problems

__all__ = ["AblationSpec", "GridItem", "load_ablation", "run_ablation", "queue_grid", "ablation_worker",
           "metric_direction", "EXIT_AFTER_LOG_ENV", "PARENT_RUN"]

log = logging.getLogger(__name__)
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def metric_direction(metric: str) -> str:
    """The queue's direction for the recorded metric: sal.metrics.scoring's one rule (a diverged seed's worst score
    must rank last in it)."""
    return scoring.direction(metric)


class AblationSpec(Strict):
    name: str
    description: str = ""
    base: dict[str, Any] = Field(default_factory=dict, description="the run spec every cell starts from")
    cells: dict[str, dict[str, Any]] = Field(default_factory=dict, description="name -> dotted overrides")
    axes: dict[str, list[Any]] = Field(default_factory=dict, description="dotted key -> values (crossed)")
    seeds: Seeds = Field(10, description="count (1..n) or explicit list; 3-5 cannot reach p < .05")
    baseline: str | None = Field(None, description="reference cell of the report")
    metric: str = Field("val/acc", description="value recorded on each Optuna trial")
    paper_table: int | None = Field(None, description="paper table this mirrors (report shows its numbers)")
    requires: list[str] = Field(default_factory=list, description="folders that must exist (data sets)")
    analysis: AnalysisSpec | None = Field(None, description="contrasts, families, metrics, alpha, ROPE, correction")
    tags: dict[str, str] = Field(default_factory=dict, description="extra MLflow tags on every run (sal compare)")
    fidelity: Literal["sal", "paper"] = Field("sal", description="paper: the paper's setup (no validation hold-out, "
                                              "inputs in [0, 1], float32; sal/spec/fidelity.py)")
    planned_seeds: list[int] | None = Field(None, description="the seeds the analysis plan declares when a design "
                                            "adds seeds later (sal compare's looks); default: seeds")

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        problem = name_problem(v, _NAME, kind="ablation", allowed="letters, digits, '_', '-' or '.'")
        if problem:
            raise ValueError(problem)
        return v

    @property
    def seed_list(self) -> list[int]:
        return seed_list(self.seeds)


@dataclass(frozen=True)
class GridItem:
    cell: str  # the method variant: a key of ``cells``
    context: str  # the axis values other than the data set, e.g. "model=resnet50"
    seed: int
    spec: RunSpec

    @property
    def grid_key(self) -> GridKey:
        return GridKey(Place(self.cell, self.spec.data.display_name, self.context), config_hash(self.spec), self.seed)

    @property
    def where(self) -> str:
        """The cell's place in the grid: a run of it is one seed of one configuration there."""
        return str(self.grid_key.place)

    @property
    def key(self) -> str:
        """The queue key. A run is its configuration: a changed setting gives a new key, never a reuse."""
        return str(self.grid_key)

    @property
    def group(self) -> str:
        """The cell's configuration at one data set and context: one parent run in MLflow over its seeds."""
        return self.grid_key.group


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
    problems += yoke_problems(items, cells)
    if problems:
        raise SpecError(problems)
    if spec.baseline and spec.baseline not in cells:
        raise SpecError([f"baseline={spec.baseline!r} is not a cell; fix: use one of {sorted(cells)}"])
    return items


def load_ablation(path: str | Path, base_overrides: dict[str, Any] | None = None,
                  seeds: int | None = None) -> tuple[AblationSpec, list[GridItem]]:
    def paper_metric(raw: dict) -> None:
        if raw.get("fidelity") == "paper":
            raw.setdefault("metric", PAPER_METRIC)  # no validation split: a trial records its test score

    spec = read_sweep_spec(path, AblationSpec, kind="ablation", fields={"seeds": seeds}, prepare=paper_metric)
    check_required_paths(f"ablation {spec.name!r}", spec.requires)
    # the paper's setup under the grid's own overrides: a cell or axis may still depart from it (reported)
    base_overrides = {**fidelity_overrides(spec.fidelity, spec.metric), **(base_overrides or {})}
    if "cells" in spec.model_fields_set and not spec.cells:
        raise SpecError([f"{path}: cells is empty; fix: name at least one cell, e.g. cells: {{adam: "
                         "{method.name: base}, sal: {method.name: sal}}, or drop the key to run the base spec alone"])
    items = expand(spec, base_overrides)
    plan_of(spec, items)  # a plan naming a missing cell is a spec error before anything runs
    return spec, items


def plan_of(spec: AblationSpec, items: list[GridItem]) -> Plan:
    """The ablation's analysis plan, resolved against its cells."""
    methods = {i.cell: i.spec.method.name for i in items}
    plan = resolve_plan(spec.analysis, methods, baseline=spec.baseline)
    plan.seeds = list(spec.planned_seeds or spec.seed_list)  # adding seeds later changes the plan
    return plan


def definition_of(items: list[GridItem]) -> dict[str, str]:
    """Each cell's place in the grid -> the config_hash its runs must carry (what a report reads)."""
    return {i.where: config_hash(i.spec) for i in items}


def _start_parents(uri: str, spec: AblationSpec, items: list[GridItem]) -> dict[str, str]:
    """One parent run per cell x data set x context (SCHEDULED, RUNNING once a seed trains): group -> run id."""
    experiment = experiment_name("ablation", spec.name)
    parents = {}
    for item in items:
        if item.group not in parents:
            tags = {**spec.tags, TAG_ABLATION: spec.name, TAG_CELL: item.cell, TAG_CONTEXT: item.context,
                    "dataset": item.spec.data.display_name, "method": item.spec.method.name,
                    "model": item.spec.model.name, "optimizer": item.spec.optim.name}
            name = group_name(item.cell, item.context, item.spec.data.display_name)
            parents[item.group] = start_parent(uri, experiment, kind="cell", key=f"{spec.name}|{item.group}",
                                               run_name=name, tags=tags, spec=item.spec, scheduled=True)
    return parents


def _end_parents(uri: str, spec: AblationSpec, items: list[GridItem], parents: dict[str, str], ref) -> None:
    """When the sweep is over: end each parent whose seeds are all closed (FINISHED, or FAILED)."""
    by_key: dict[str, list] = {}
    for t in Queue(ref, spec.name).trials():
        by_key.setdefault(t.user_attrs.get(engine.KEY), []).append(t)
    for group, run_id in parents.items():
        first = next(i for i in items if i.group == group)
        close_group(uri, run_id, name=group_name(first.cell, first.context, first.spec.data.display_name),
                     metric=spec.metric, trials=[by_key.get(i.key, []) for i in items if i.group == group], final=True)


def queue_grid(ref: engine.StorageRef, spec: AblationSpec, items: list[GridItem], *, retry_failed: bool,
               uri: str | None = None, parents: dict[str, str] | None = None) -> dict[str, list]:
    """Queue every (cell, seed) of the current definition that has no finished run.

    The definition (each cell's config hash) and the analysis plan are stored with the queue and on the
    MLflow experiment at every launch: the report analyses the latest definition with the stored plan.
    With ``uri``, a trial the queue calls finished whose MLflow run is not in that store (a new
    --tracking-uri, a moved mlflow.db) is queued again. ``parents``: group -> its parent MLflow run.
    """
    queue = Queue(ref, spec.name, kind="ablation", direction=metric_direction(spec.metric), metric_names=[spec.metric])
    queue.reap(on_reaped=lambda ids: kill_runs(uri, ids) if uri else None)
    plan, definition = plan_of(spec, items), definition_of(items)
    for key, value in {ATTR_BASELINE: spec.baseline, ATTR_PAPER_TABLE: spec.paper_table,
                       ATTR_DEFINITION: definition, ATTR_PLAN: plan.to_json(), ATTR_PLAN_HASH: plan.hash,
                       ATTR_METRIC: spec.metric, **worker_record(uri)}.items():
        queue.study.set_user_attr(key, value)
    present = None
    if uri is not None:
        experiment = experiment_name("ablation", spec.name)
        set_experiment_record(uri, experiment, RECORD_DEFINITION, definition)
        set_experiment_record(uri, experiment, RECORD_PLAN, plan.to_json())
        # every plan ever launched, by hash, never overwritten: a report analyses the plan the runs carry
        plans = get_experiment_record(uri, experiment, RECORD_PLANS) or {}
        if plan.hash not in plans:
            set_experiment_record(uri, experiment, RECORD_PLANS, {**plans, plan.hash: plan.to_json()})
        present = run_ids(uri, experiment)
    # Tags every run of the grid carries, so a report needs nothing but MLflow.
    tags = {k: v for k, v in {**spec.tags, TAG_BASELINE: spec.baseline, TAG_PAPER_TABLE: spec.paper_table,
                              TAG_PLAN_HASH: plan.hash}.items() if v}
    partners = partner_keys(items)  # a yoked control waits for its partner's seed (sal/sweeps/yoke.py)
    payload = {i.key: {ATTR_CELL: i.cell, ATTR_CONTEXT: i.context, "seed": i.seed, ATTR_TRIAL_SPEC: flatten(i.spec),
                       ATTR_TAGS: tags, PARENT_RUN: (parents or {}).get(i.group),
                       **({YOKE_KEY: partners[i.key]} if i.key in partners else {})} for i in items}
    return queue.enqueue_missing(payload, retry_failed=retry_failed, present_runs=present)


def run_ablation(spec: AblationSpec, items: list[GridItem], *, ref: engine.StorageRef, uri: str, workers: int = 1,
                 gpus: list[str] | None = None, retry_failed: bool = False, wait: bool = True,
                 checkpoint_dir: str | None = None) -> dict[str, Any]:
    """Queue what is missing and work the queue with ``workers`` processes; returns the queue report
    and the final trial counts."""
    ensure_experiment(uri, experiment_name("ablation", spec.name))  # before workers race to create it
    parents = _start_parents(uri, spec, items)
    report = queue_grid(ref, spec, items, retry_failed=retry_failed, uri=uri, parents=parents)
    kwargs = dict(ref=ref, study_name=spec.name, uri=uri, metric=spec.metric, wait=wait,
                  checkpoint_dir=checkpoint_dir)
    if workers == 1:
        ablation_worker(worker_index=0, device=f"cuda:{gpus[0]}" if gpus else None, **kwargs)
        failed_workers = 0
    else:
        failed_workers = engine.spawn_workers(ablation_worker, workers, gpus=gpus, **kwargs)
    _end_parents(uri, spec, items, parents, ref)
    return {"queue": report, "states": Queue(ref, spec.name).counts(), "failed_workers": failed_workers}
