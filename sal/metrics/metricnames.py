"""The names of the metrics a training run logs (README "Contracts"), for checks before compute.

A study objective or an ablation's trial value names one of them; a typo (``val/accc``) would otherwise be
found only after every trial trained, each scoring NaN. Method and analysis metrics whose name carries a
variable part (``sal/n_noise``, ``time/sharpness_trace_s``) are matched by pattern.
"""

from __future__ import annotations

import re

from ..core.names import EVENT_METRICS, METRIC_NOISE_STD, METRIC_STRESS
from .classmetrics import PER_CLASS_METRICS
from .events import MEDIAN_ABS_WEIGHT
from .instability import STABILITY_METRICS

__all__ = ["EPOCH_METRICS", "FINAL_METRICS", "METHOD_METRICS", "ANALYSIS_METRICS", "unknown_metric",
           "ROBUST_SUMMARIES", "robust_label", "robust_metric", "robust_perturbations", "robust_labels"]

EPOCH_METRICS = ("train/loss", "train/acc", "val/loss", "val/acc", "optim/lr", "time/epoch_s")
FINAL_METRICS = ("test/acc", "test/top5", "test/loss", *PER_CLASS_METRICS, "test/n_samples", "time/train_s",
                 "mem/peak_mb", "time/infer_ms", "sharpness/grad_norm", "time/robustness_s", MEDIAN_ABS_WEIGHT,
                 *STABILITY_METRICS)
METHOD_METRICS = (METRIC_STRESS, *EVENT_METRICS, METRIC_NOISE_STD, "sam/perturb_norm")
ANALYSIS_METRICS = ("sharpness/trace", "sharpness/trace_se", "sharpness/eig", "sharpness/adaptive",
                    "sharpness/adaptive_se", "train/grad_norm", "time/sharpness_s", "time/trajectory_s")
_PATTERNS = (re.compile(r"^sal/(n_)?[a-z_]+$"), re.compile(r"^time/sharpness_[a-z_]+_s$"),
             re.compile(r"^test/class\d+/f1$"), re.compile(r"^(val|test)/robust/[a-z]+(_[0-9.e-]+)?/acc$"))


# ---- robustness (sal/training/robustness.py scores them; a study objective names them before any run)
ROBUST_SUMMARIES = ("mean", "worst")  # over a run's perturbations


def robust_metric(split: str, label: str) -> str:
    """``val/robust/noise_0.5/acc``; ``label`` is a perturbation's name or one of ROBUST_SUMMARIES."""
    return f"{split}/robust/{label}/acc"


def robust_label(kind: str, level: float) -> str:
    return f"{kind}_{level:g}"


def robust_perturbations(noise: list[float], corruptions: list[str], levels: list[int]) -> list[tuple[str, float]]:
    """The (kind, level) pairs scored: every noise std, and each corruption at each level (images only: the
    caller passes no corruptions for other inputs)."""
    return [("noise", float(s)) for s in noise] + [(c, float(level)) for c in corruptions for level in levels]


def robust_labels(noise: list[float], corruptions: list[str], levels: list[int], *, images: bool = True
                  ) -> list[str]:
    """Every label a run with these robustness settings logs, summaries first: corruptions only on image
    inputs, and the summaries only when some perturbation is scored (robust_scores in sal/training)."""
    pairs = robust_perturbations(noise, corruptions if images else [], levels)
    return [*ROBUST_SUMMARIES, *(robust_label(k, v) for k, v in pairs)] if pairs else []


def unknown_metric(name: str) -> str | None:
    """None when a run logs ``name``; else the problem, listing the metrics that exist."""
    known = EPOCH_METRICS + FINAL_METRICS + METHOD_METRICS + ANALYSIS_METRICS
    if name in known or any(p.match(name) for p in _PATTERNS):
        return None
    return (f"no run logs a metric {name!r}; a run logs per epoch {', '.join(EPOCH_METRICS)}; at the end "
            f"{', '.join(FINAL_METRICS)}; with SAL or SAM {', '.join(METHOD_METRICS)}; with analysis.sharpness "
            f"{', '.join(ANALYSIS_METRICS[:6])}")
