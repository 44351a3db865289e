"""Landscape measurements during a run (``analysis`` section of a RunSpec): sharpness every k epochs, a
weight snapshot per epoch for the trajectory, and the final weights.

The measures use a fixed subset of the training data and generators derived from the run's seed for
this purpose alone, and run in eval mode without drawing from the global RNG, so a run measured gives
the same training history as the same run unmeasured.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel

from ..core.rng import derive_seed
from ..landscape.sharpness import (
    Batches,
    Projector,
    adaptive_sharpness,
    flat_weights,
    gradient_norm,
    hessian_trace,
    top_eigenvalue,
)
from ..spec.config import RunSpec
from .splits import AnySplit

__all__ = ["RunAnalysis", "fixed_batches", "plain_model", "SHARPNESS_METRICS"]

# measure -> the history columns it fills
SHARPNESS_METRICS = {
    "trace": ("sharpness/trace", "sharpness/trace_se"),
    "eig": ("sharpness/eig",),
    "adaptive": ("sharpness/adaptive", "sharpness/adaptive_se"),
    "grad_norm": ("train/grad_norm",),
}
# The gradient norm's subset does not depend on the seed: every cell and seed is measured on the same
# samples, so its per-epoch curves compare across runs (the other measures keep one subset per seed).
SHARED_SUBSET_SEED = derive_seed(0, "grad-norm-data")
ANALYSIS_BATCH = 256  # samples per forward pass of a measure


def fixed_batches(train: AnySplit, *, samples: int, seed: int, batch_size: int = ANALYSIS_BATCH) -> Batches:
    """``samples`` training examples drawn once without replacement by ``seed``, as a list of batches (read
    once, also from a streamed split: the measures pass over them many times)."""
    n = min(samples, len(train))
    g = torch.Generator().manual_seed(seed)
    x, y = train.take(torch.randperm(len(train), generator=g)[:n].sort().values)
    return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, n, batch_size)]


def plain_model(model: nn.Module) -> nn.Module:
    """The network a method evaluates, unwrapped: SWA's average without its wrapper, no compile wrapper,
    so its state_dict loads into ``build_model``'s network."""
    if isinstance(model, AveragedModel):
        model = model.module
    return getattr(model, "_orig_mod", model)


class RunAnalysis:
    """The analysis of one run: call ``after_epoch`` after each epoch and ``finish`` once at the end."""

    def __init__(self, spec: RunSpec, train: AnySplit, *, model: nn.Module):
        self.spec, self.a = spec, spec.analysis
        self.seed = derive_seed(spec.seed, "analysis")
        self.batches = fixed_batches(train, samples=self.a.samples, seed=derive_seed(spec.seed, "analysis-data"))
        self.shared_batches = fixed_batches(train, samples=self.a.samples, seed=SHARED_SUBSET_SEED) \
            if "grad_norm" in self.a.sharpness else None
        self.device = train.device
        self.loss_fn = lambda logits, y: F.cross_entropy(logits.float(), y,
                                                         label_smoothing=spec.train.label_smoothing)
        n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        self.projector = Projector(n_params, dim=self.a.trajectory_dim, seed=derive_seed(spec.seed, "projection"))
        self.snapshots: list[torch.Tensor] = []
        self.snapshot_epochs: list[int] = []

    def _generator(self, epoch: int, measure: str) -> torch.Generator:
        # One stream per (epoch, measure): a measure's value does not depend on which others are enabled.
        return torch.Generator(self.device).manual_seed(derive_seed(self.seed, f"{measure}:{epoch}"))

    def after_epoch(self, epoch: int, model: nn.Module) -> dict[str, float]:
        """Metrics for the history row of ``epoch`` (nothing on epochs between measurements)."""
        model = plain_model(model)
        row: dict[str, float] = {}
        if self.a.trajectory:
            t0 = time.perf_counter()
            self.snapshots.append(self.projector(flat_weights(model)))
            self.snapshot_epochs.append(epoch)
            row["time/trajectory_s"] = time.perf_counter() - t0
        last = epoch == self.spec.train.epochs
        if self.a.sharpness and (epoch % self.a.every == 0 or last):
            row.update(self.measure(model, epoch))
        return row

    def measure(self, model: nn.Module, epoch: int) -> dict[str, float]:
        """The enabled sharpness measures and the seconds each took (``time/sharpness_<measure>_s``)."""
        a, out = self.a, {}
        total = 0.0
        for name in a.sharpness:
            t0 = time.perf_counter()
            g = self._generator(epoch, name)
            if name == "trace":
                est = hessian_trace(model, self.loss_fn, self.batches, probes=a.probes, generator=g)
                values = (est.value, est.se)
            elif name == "grad_norm":
                values = (gradient_norm(model, self.loss_fn, self.shared_batches),)
            elif name == "eig":
                values = (top_eigenvalue(model, self.loss_fn, self.batches, iters=a.eig_iters, tol=a.eig_tol,
                                         generator=g).value,)
            else:
                est = adaptive_sharpness(model, self.loss_fn, self.batches, rho=a.rho, samples=a.adaptive_samples,
                                         generator=g)
                values = (est.value, est.se)
            seconds = time.perf_counter() - t0
            out.update(dict(zip(SHARPNESS_METRICS[name], values)))
            out[f"time/sharpness_{name}_s"] = seconds
            total += seconds
        out["time/sharpness_s"] = total
        return {k: (v if math.isfinite(v) else math.nan) for k, v in out.items()}

    def finish(self, model: nn.Module | None) -> dict:
        """What the run keeps for tracking: ``weights`` (a CPU state_dict) and ``trajectory``."""
        out: dict = {}
        if self.a.save_weights and model is not None:
            out["weights"] = {k: v.detach().cpu().clone() for k, v in plain_model(model).state_dict().items()}
        if self.a.trajectory and self.snapshots:
            out["trajectory"] = {"epochs": torch.tensor(self.snapshot_epochs), "weights": torch.stack(self.snapshots)}
        return out
