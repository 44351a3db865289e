"""The settings of ``sal landscape`` and their defaults, in one place: the CLI's flags default to these.

A module of its own, importing nothing heavy, so that ``sal --help`` can show the defaults without loading
torch's landscape code. The in-run analysis (``analysis`` of a run spec, sal.spec.config.RunAnalysisSpec) has
cheaper defaults of its own on purpose (it measures every k epochs, this measures once per final model).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MEASURES", "DEFAULT_WHAT", "LandscapeOptions"]

MEASURES = ("trace", "eig", "adaptive", "slice2d", "trajectory", "barrier", "fourier", "kpca")
DEFAULT_WHAT = ("trace", "eig", "adaptive", "barrier")


@dataclass
class LandscapeOptions:
    what: tuple[str, ...] = DEFAULT_WHAT
    device: str = "auto"
    samples: int | None = None  # None: each run's analysis.samples
    probes: int = 32
    eig_iters: int = 50
    eig_tol: float = 1e-3
    rho: float = 0.01
    adaptive_samples: int = 16
    slice_steps: int = 21
    slice_span: float = 1.0
    points: int = 25
    fourier_steps: int = 100
    fourier_modes: int = 10
    fourier_points: int = 50
