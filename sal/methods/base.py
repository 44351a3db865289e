"""The method protocol and the plain base optimizer: every other method changes one part of it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from ..core.names import EVENT_DEFORM, EVENT_NOISE, EVENT_REVERT, METRIC_STRESS
from ..core.rng import RngStream
from ..core.spec_base import Strict
from .pdo import StressSignal
from .schedules import LRSchedule

if TYPE_CHECKING:  # sal.spec.config builds the run spec from the method modules' specs
    from ..spec.config import RunSpec

__all__ = ["EpochStats", "MethodContext", "Method", "MethodInfo", "BaseMethodSpec", "build_optimizer",
           "OPTIMIZER_SPACE", "METHODS"]

# The shared knob every method is tuned over (a fair comparison tunes the baselines too).
OPTIMIZER_SPACE = {"optim.lr": {"low": 1.0e-4, "high": 3.0e-2, "log": True}}


@dataclass(frozen=True)
class MethodInfo:
    """What the registry knows of a method, declared once by its module: its name (``method.name``), its
    spec (knobs with their paper defaults), its implementation, its role in the default analysis families
    (base, treatment, ablation, baseline, other), the interventions it makes between epochs, the
    default search space of a fair comparison (besides the shared optimizer knobs, unless it brings its own
    optimizer), and whether its seeds can train packed as one model (sal/training/packed.py)."""

    name: str
    spec: type
    impl: type
    role: str = "other"
    acts: tuple[str, ...] = ()
    space: dict = field(default_factory=dict)
    own_optimizer: bool = False  # replaces optim.* (L-BFGS): a comparison tunes only its own knobs
    packable: bool = True  # every step elementwise per seed or done per seed slice


class BaseMethodSpec(Strict):
    """The base optimizer alone: the reference every method is compared with."""

    name: Literal["base"] = "base"


@dataclass
class EpochStats:
    """One epoch's averages, already on the host (the epoch's single sync)."""

    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    act: bool = True  # False after the last epoch unless train.intervene_last_epoch: only observe


@dataclass
class MethodContext:
    model: nn.Module
    spec: RunSpec
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    generator: torch.Generator  # the method's own noise, on the run's device
    method_seed: int  # for host-side draws (random triggers)
    autocast: Callable[[], contextlib.AbstractContextManager]
    train_batches: Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]]  # one pass, for BN updates
    steps_per_epoch: int = 1  # optimizer steps per epoch (batches), for per-batch schedules (onecycle)
    # A private dropout stream per purpose (sal.core.rng.RngStream): extra forward passes a method makes
    # draw from it, so the passes every method shares keep the same dropout masks across methods.
    side_rng: Callable[[str], RngStream] = lambda purpose: RngStream(0, torch.device("cpu"))


_OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "adamax": torch.optim.Adamax,
    "nadam": torch.optim.NAdam,
    "rmsprop": torch.optim.RMSprop,
    "sgd": torch.optim.SGD,
}


def build_optimizer(params, spec: RunSpec) -> torch.optim.Optimizer:
    """The base optimizer of ``spec.optim``; adamw and lion decay weights decoupled from the gradient."""
    o = spec.optim
    params = list(params)
    if o.name == "lion":
        from lion_pytorch import Lion  # its triton kernel stays off: it needs CUDA and triton

        optimizer = Lion(params, lr=o.lr, weight_decay=o.weight_decay)
    else:
        kwargs = {"lr": o.lr, "weight_decay": o.weight_decay}
        if o.name in ("sgd", "rmsprop"):
            kwargs["momentum"] = o.momentum
        if o.name == "sgd":
            kwargs["nesterov"] = o.nesterov
        # foreach kernels: one launch per parameter group instead of one per tensor.
        optimizer = _OPTIMIZERS[o.name](params, foreach=True, **kwargs)
    if o.clip_grad_norm is not None:
        # A pre-step hook clips the gradient the step is about to use, so every method that steps the base
        # optimizer (base, SAL, SAM's second pass, SWA, rolling ball) clips without code of its own.
        # clip_grad_norm_ scales on the device: no host sync.
        max_norm = o.clip_grad_norm

        def clip(*_) -> None:  # a pre-step hook must return None
            torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], max_norm, foreach=True)

        optimizer.register_step_pre_hook(clip)
    return optimizer


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
        # Epoch schedules step in step_schedule(); onecycle steps itself after every optimizer step.
        self.scheduler: LRSchedule | None = LRSchedule(self.optimizer, ctx.spec.optim, epochs=ctx.spec.train.epochs,
                                                       steps_per_epoch=ctx.steps_per_epoch)
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
        lr = self.optimizer.param_groups[0]["lr"]  # the epoch's (onecycle: its last step's) lr, a host float
        self.step_schedule()
        return {**self.intervene(stats), "optim/lr": lr}

    def step_schedule(self) -> None:
        """Advance the learning-rate schedule by one epoch."""
        if self.scheduler is not None:
            self.scheduler.step_epoch()

    def intervene(self, stats: EpochStats) -> dict[str, float]:
        """Act on the weights between epochs (SAL, controls); here: only observe the stress."""
        stress = self.observer.update(stats.train_loss, stats.train_acc)
        return {METRIC_STRESS: stress, EVENT_NOISE: 0.0, EVENT_DEFORM: 0.0, EVENT_REVERT: 0.0}

    def eval_model(self) -> nn.Module:
        """The network to evaluate (SWA's average, for instance)."""
        return self.model

    def state_dict(self) -> dict:
        """Everything the method changes while training, as tensors and plain values, for a checkpoint
        (sal/training/checkpoints.py). The weights and the generators of the context belong to the run, which saves
        them; a subclass adds what it keeps of its own."""
        return {"optimizer": self.optimizer.state_dict(), "observer": self.observer.state_dict(),
                "schedule": self.scheduler.state_dict() if self.scheduler is not None else None}

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state_dict()``, on a method freshly built for the same spec."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.observer.load_state_dict(state["observer"])
        if (state["schedule"] is None) != (self.scheduler is None):
            raise ValueError("the saved method has a learning-rate schedule where this one has none, or vice versa")
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["schedule"])


METHODS = [MethodInfo("base", BaseMethodSpec, Method, role="base")]
