"""sal: hyperparameter sweeps, ablations and significance reports for Stress-Aware Learning.

``import sal`` is the public API; nothing runs at import time, and mlflow and optuna are imported only
when a function that needs them is called (or a name from their modules is first used)::

    import sal
    result = sal.train({"data": {"name": "digits"}, "method": {"name": "sal"}})
    sal.run_ablation("ablations/quick.yaml", seeds=3)
    folder, summary = sal.compare("compare/quick.yaml")
    study = sal.run_study("studies/quick.yaml", n_trials=10)
    folder, summary = sal.build_report("quick")

Every function takes its subject first and the rest by keyword (see sal/api.py).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .api import build_report, compare, run_ablation, run_study, train
from .methods.pdo import PDO, Interventions, StressSignal
from .spec.config import (
    METHOD_NAMES,
    DataSpec,
    ModelSpec,
    OptimSpec,
    RunSpec,
    SpecError,
    TrainSpec,
    load_run_spec,
    validate_run,
)
from .training.run import PruneRun, Result

# Names whose modules import mlflow or optuna: loaded on first use.
_LAZY = {
    "AblationSpec": "sal.sweeps.ablation", "StudySpec": "sal.spec.study_spec", "ReportOptions": "sal.stats.summary",
    "REGISTRY": "sal.methods", "Method": "sal.methods", "MethodContext": "sal.methods",
}

__all__ = [
    "train", "run_ablation", "run_study", "build_report", "compare",
    "RunSpec", "DataSpec", "ModelSpec", "OptimSpec", "TrainSpec", "AblationSpec", "StudySpec", "ReportOptions",
    "SpecError", "load_run_spec", "validate_run", "Result", "PruneRun",
    "REGISTRY", "METHOD_NAMES", "Method", "MethodContext", "PDO", "Interventions", "StressSignal",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sal' has no attribute {name!r}")
