"""sal/core/names.py: the stored names keep their values (MLflow stores and Optuna queues hold data under them, and
the other tests now spell them through the constants, so only this file would see a value change), and the
module imports nothing, so any module of sal can import it."""

from __future__ import annotations

import ast
from pathlib import Path

import sal.core.names as names
from sal.metrics import events, scoring
from sal.queue import engine
from sal.tracking import store as tracking

# The values as stored: written out here on purpose, the one other place they are spelled.
STORED = {
    "TAG_KIND": "sal.kind", "TAG_CELL": "sal.cell", "TAG_CONTEXT": "sal.context", "TAG_ABLATION": "sal.ablation",
    "TAG_STUDY": "sal.study", "TAG_TRIAL": "sal.trial", "TAG_TRIAL_STATE": "sal.trial_state",
    "TAG_COMPARE": "sal.compare", "TAG_STAGE": "sal.stage", "TAG_STATUS": "sal.status", "TAG_MESSAGE": "sal.message",
    "TAG_DEVICE": "sal.device", "TAG_N_PARAMS": "sal.n_params", "TAG_KEY": "sal.key", "TAG_BASELINE": "sal.baseline",
    "TAG_PAPER_TABLE": "sal.paper_table", "TAG_PLAN_HASH": "sal.plan_hash", "TAG_SUMMARY": "sal.summary",
    "TAG_GROUP": "sal.group", "TAG_EVENTS": "sal.events", "TAG_COMPUTE_DTYPE": "sal.compute_dtype",
    "TAG_SEEDS_PER_MODEL": "sal.seeds_per_model",
    "RECORD_DEFINITION": "sal.definition", "RECORD_PLAN": "sal.plan", "RECORD_PLANS": "sal.plans",
    "RECORD_COMPARE_DESIGN": "sal.compare_design",
    "ATTR_QUEUE_KIND": "sal.kind", "ATTR_TRACKING_URI": "sal.tracking_uri", "ATTR_BASELINE": "sal.baseline",
    "ATTR_PAPER_TABLE": "sal.paper_table", "ATTR_PLAN_HASH": "sal.plan_hash", "ATTR_DEFINITION": "sal.definition",
    "ATTR_PLAN": "sal.plan", "ATTR_METRIC": "sal.metric", "ATTR_DEFINITION_HASH": "sal.definition_hash",
    "ATTR_STUDY_BASE": "sal.base", "ATTR_STUDY_SPEC": "sal.spec",
    "ATTR_KEY": "sal.key", "ATTR_CELL": "sal.cell", "ATTR_CONTEXT": "sal.context", "ATTR_STATUS": "sal.status",
    "ATTR_MESSAGE": "sal.message", "ATTR_WORKER": "sal.worker", "ATTR_RUN": "sal.mlflow_run",
    "ATTR_MLFLOW_RUNS": "sal.mlflow_runs", "ATTR_REPLACES": "sal.replaces", "ATTR_TRIAL_SPEC": "sal.spec",
    "ATTR_TAGS": "sal.tags", "ATTR_PARENT_RUN": "sal.parent_run", "ATTR_YOKE_KEY": "sal.yoke_key",
    "ATTR_REUSED": "sal.reused", "ATTR_PRUNED": "sal.pruned", "ATTR_PER_SEED": "sal.per_seed",
    "STATUS_FINISHED": "finished", "STATUS_DIVERGED": "diverged", "STATUS_PRUNED": "pruned", "STATUS_FAILED": "failed",
    "STATUS_RUNNING": "running", "STATUS_KILLED": "killed", "RESULT_STATUSES": ("finished", "diverged"),
    "METRIC_STRESS": "sal/stress", "EVENT_NOISE": "sal/noise", "EVENT_DEFORM": "sal/deform",
    "EVENT_REVERT": "sal/revert", "EVENT_METRICS": ("sal/noise", "sal/deform", "sal/revert"),
    "METRIC_NOISE_STD": "sal/noise_std", "METRIC_NOISE_STD_MAX": "sal/noise_std_max",
    "ARTIFACT_SPEC": "spec.yaml", "ARTIFACT_HISTORY": "history.csv", "ARTIFACT_PER_CLASS": "per_class.csv",
    "ARTIFACT_WEIGHTS": "weights.pt",
    "ARTIFACT_TRAJECTORY": "trajectory.pt",
}


def test_every_stored_name_keeps_its_value():
    public = {k: getattr(names, k) for k in dir(names) if k.isupper()}
    assert public == STORED


def test_names_imports_nothing():
    tree = ast.parse(Path(names.__file__).read_text())
    imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert [(n.module, [a.name for a in n.names]) for n in imports] == [("__future__", ["annotations"])]


def test_the_older_public_names_are_the_same_constants():
    assert (scoring.DIVERGED, scoring.RESULT_STATUSES) == (names.STATUS_DIVERGED, names.RESULT_STATUSES)
    assert (engine.KEY, engine.WORKER, engine.STATUS, engine.RUN, engine.REPLACES, engine.MLFLOW_RUNS) == (
        names.ATTR_KEY, names.ATTR_WORKER, names.ATTR_STATUS, names.ATTR_RUN, names.ATTR_REPLACES,
        names.ATTR_MLFLOW_RUNS)
    assert (tracking.PARENT_KEY, tracking.WEIGHTS_ARTIFACT, tracking.TRAJECTORY_ARTIFACT) == (
        names.TAG_GROUP, names.ARTIFACT_WEIGHTS, names.ARTIFACT_TRAJECTORY)
    assert (events.EVENTS_TAG, events.DTYPE_TAG, events.NOISE_STD_MAX) == (
        names.TAG_EVENTS, names.TAG_COMPUTE_DTYPE, names.METRIC_NOISE_STD_MAX)
