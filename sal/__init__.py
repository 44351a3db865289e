"""sal: hyperparameter sweeps, ablations and significance reports for Stress-Aware Learning.

``import sal`` is the public API; nothing runs at import time.
"""

from .config import RunSpec, SpecError, load_run_spec, validate_run
from .pdo import PDO, Interventions, StressSignal
from .train import PruneRun, Result, train

__all__ = [
    "RunSpec", "SpecError", "load_run_spec", "validate_run", "PDO", "Interventions", "StressSignal",
    "PruneRun", "Result", "train",
]
__version__ = "0.1.0"
