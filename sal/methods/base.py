"""The method protocol and the plain base optimizer: every other method changes one part of it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from ..config import RunSpec
from ..pdo import StressSignal

__all__ = ["EpochStats", "MethodContext", "Method", "build_optimizer"]


@dataclass
class EpochStats:
    """One epoch's averages, already on the host (the epoch's single sync)."""

    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float


@dataclass
class MethodContext:
    model: nn.Module
    spec: RunSpec
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    generator: torch.Generator  # the method's own noise, on the run's device
    method_seed: int  # for host-side draws (random triggers)
    autocast: Callable[[], contextlib.AbstractContextManager]
    train_batches: Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]]  # one pass, for BN updates


_OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamax": torch.optim.Adamax,
    "nadam": torch.optim.NAdam,
    "rmsprop": torch.optim.RMSprop,
    "sgd": torch.optim.SGD,
}


def build_optimizer(params, spec: RunSpec) -> torch.optim.Optimizer:
    o = spec.optim
    kwargs = {"lr": o.lr, "weight_decay": o.weight_decay}
    if o.name in ("sgd", "rmsprop"):
        kwargs["momentum"] = o.momentum
    # foreach kernels: one launch per parameter group instead of one per tensor.
    return _OPTIMIZERS[o.name](params, foreach=True, **kwargs)


class Method:
    """The base optimizer alone. Subclasses override ``train_step``, ``end_epoch`` or ``eval_model``.

    ``full_batch`` methods get the whole training set as one batch per epoch.
    Every method logs the stress signal with the paper's knobs as a passive observer, so a baseline's
    stagnation can be compared with SAL's epoch by epoch; only SAL acts on it.
    """

    full_batch = False

    def __init__(self, ctx: MethodContext):
        self.ctx = ctx
        self.model = ctx.model
        self.optimizer = build_optimizer([p for p in ctx.model.parameters() if p.requires_grad], ctx.spec)
        self.scheduler = None
        if ctx.spec.optim.schedule == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, ctx.spec.train.epochs)
        self.observer = StressSignal()
        # Per-batch sums kept on the device, averaged over the epoch's batches and read in the epoch's
        # single sync (e.g. SAM's perturbation norm).
        self.device_metrics: dict[str, torch.Tensor] = {}

    def loss_and_logits(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self.ctx.autocast():
            logits = self.model(x)
            return self.ctx.loss_fn(logits, y), logits

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch; returns the (detached) loss and logits without syncing."""
        loss, logits = self.loss_and_logits(x, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach(), logits.detach()

    def on_epoch_trained(self, epoch: int) -> None:
        """After the epoch's last batch, before it is evaluated (SWA averages here)."""

    def end_epoch(self, stats: EpochStats) -> dict[str, float]:
        """Between-epoch work; returns extra per-epoch metrics (contract names)."""
        self.step_schedule()
        return self.intervene(stats)

    def step_schedule(self) -> None:
        """Advance the learning-rate schedule by one epoch."""
        if self.scheduler is not None:
            self.scheduler.step()

    def intervene(self, stats: EpochStats) -> dict[str, float]:
        """Act on the weights between epochs (SAL, controls); here: only observe the stress."""
        stress = self.observer.update(stats.train_loss, stats.train_acc)
        return {"sal/stress": stress, "sal/noise": 0.0, "sal/deform": 0.0, "sal/revert": 0.0}

    def eval_model(self) -> nn.Module:
        """The network to evaluate (SWA's average, for instance)."""
        return self.model
