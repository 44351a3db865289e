"""Scores of a final model on perturbed inputs (the ``robustness`` section of a run spec).

Each perturbation is a (kind, level): Gaussian noise with std ``level`` in units of the input's std, or, for
images (N x C x H x W), a corruption at severity 1-5: Gaussian blur, lowered contrast, a translation. Noise is
drawn from a generator seeded by the perturbation alone, over fixed chunks of the split, so every cell and
seed scores the same perturbed inputs whatever its batch size. Per split (val, test) a run logs
``<split>/robust/<kind>_<level>/acc`` and the mean and worst over perturbations (``<split>/robust/mean/acc``,
``<split>/robust/worst/acc``). The worst on val is the pessimistic study objective over perturbations;
with ``aggregate: worst`` (or cvar) over seeds too, it is the outer problem of Ustun et al.'s bilevel tuning.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torchvision.transforms.v2 import functional as TF

from ..core.rng import derive_seed
from ..metrics.metricnames import ROBUST_SUMMARIES as SUMMARIES
from ..metrics.metricnames import robust_label as label
from ..metrics.metricnames import robust_metric as metric_name
from ..metrics.metricnames import robust_perturbations

__all__ = ["perturbations", "perturb", "robust_scores", "metric_name", "CORRUPTIONS", "SUMMARIES"]

log = logging.getLogger(__name__)

CHUNK = 256  # samples per perturbed batch: fixed, so the noise each sample gets does not depend on the run
STD_SAMPLES = 4096  # training samples whose std is the noise's unit
# severity 1..5 -> the corruption's strength (after ImageNet-C's five levels)
BLUR_SIGMA = (0.5, 0.75, 1.0, 1.5, 2.0)  # Gaussian blur std in pixels
CONTRAST = (0.8, 0.6, 0.45, 0.3, 0.2)  # each image's deviations from its mean are scaled by this
SHIFT = (0.05, 0.1, 0.15, 0.2, 0.25)  # translation right and down, as a fraction of the side
CORRUPTIONS = ("blur", "contrast", "translate")
def perturbations(noise: list[float], corruptions: list[str], levels: list[int], *, image: bool
                  ) -> list[tuple[str, float]]:
    """The (kind, level) pairs a run scores: every noise std, and each corruption at each level (images)."""
    if corruptions and not image:
        log.warning("robustness.corruptions=%s apply to images (N x C x H x W) only; these inputs get the "
                    "Gaussian noise alone", corruptions)
    return robust_perturbations(noise, corruptions if image else [], levels)


def perturb(x: torch.Tensor, kind: str, level: float, *, unit: float, generator: torch.Generator | None
            ) -> torch.Tensor:
    """One chunk of inputs under one perturbation (a new tensor; ``x`` is untouched)."""
    if kind == "noise":
        return x + level * unit * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    i = int(level) - 1
    if kind == "blur":
        sigma = BLUR_SIGMA[i]
        size = 2 * int(3 * sigma + 0.5) + 1
        return TF.gaussian_blur(x, kernel_size=[size, size], sigma=[sigma, sigma])
    if kind == "contrast":
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return mean + CONTRAST[i] * (x - mean)
    if kind == "translate":
        h, w = x.shape[-2:]
        dy, dx = max(1, round(SHIFT[i] * h)), max(1, round(SHIFT[i] * w))
        out = torch.zeros_like(x)  # the inputs are normalised: 0 is the mean, what a shifted-in border shows
        out[..., dy:, dx:] = x[..., :h - dy, :w - dx]
        return out
    raise ValueError(f"unknown perturbation {kind!r}; use noise or one of {CORRUPTIONS}")


@torch.no_grad()
def robust_scores(model: nn.Module, splits: dict[str, Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]]],
                  pairs: list[tuple[str, float]], *, unit: float, autocast) -> dict[str, float]:
    """Accuracy under each perturbation per split, and its mean and worst: {metric name: value}.

    ``splits``: name -> a function yielding the split's (x, y) in CHUNK-sized batches, in order."""
    model.eval()
    out: dict[str, float] = {}
    for split, batches in splits.items():
        scores = []
        for kind, level in pairs:
            g = None
            correct = n = 0
            for x, y in batches():
                if g is None and kind == "noise":
                    g = torch.Generator(x.device).manual_seed(derive_seed(0, f"robust:{split}:{kind}:{level}"))
                with autocast():
                    logits = model(perturb(x, kind, level, unit=unit, generator=g))
                correct += (logits.argmax(1) == y).sum()
                n += len(y)
            if n == 0:
                continue
            acc = float(correct) / n
            out[metric_name(split, label(kind, level))] = acc
            scores.append(acc)
        if scores:
            out[metric_name(split, "mean")] = sum(scores) / len(scores)
            out[metric_name(split, "worst")] = min(scores)
    return out
