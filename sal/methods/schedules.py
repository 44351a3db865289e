"""Learning-rate schedules (``optim.schedule``) from torch.optim.lr_scheduler, each stepped when it expects.

Epoch schedules (cosine, warmup_cosine, step) step once per epoch, between epochs. OneCycleLR is defined
per optimizer step: it steps from a post-step hook on the optimizer, so every method that steps the base
optimizer once per batch (base, SAL, SAM, SWA, rolling ball) advances it once per batch without knowing.

lr of epoch e (1-based) with base lr ``lr``, E = train.epochs, W = optim.warmup_epochs, k = e - 1:
- constant:      lr
- cosine:        lr (1 + cos(pi k / E)) / 2
- warmup_cosine: lr (k + 1) / (W + 1) for k < W, then lr (1 + cos(pi (k - W) / (E - W))) / 2
- step:          lr gamma^floor(k / step_size)
- onecycle:      per batch over E x batches steps: lr/25 -> lr at 30% -> lr/25e4 (torch's defaults)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch.optim import lr_scheduler

if TYPE_CHECKING:  # sal.spec.config imports the methods, which build their schedule here
    from ..spec.config import OptimSpec

__all__ = ["LRSchedule"]


class LRSchedule:
    """The run's schedule: ``step_epoch()`` between epochs; per-batch ones step themselves.

    ``stop()`` hands the learning rate to someone else (SWA's SWALR): the schedule never steps again.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, spec: OptimSpec, *, epochs: int, steps_per_epoch: int):
        self.per_batch = spec.schedule == "onecycle"
        self.scheduler: lr_scheduler.LRScheduler | None = _build(optimizer, spec, epochs, steps_per_epoch)
        self._hook = None
        if self.per_batch:
            self._hook = optimizer.register_step_post_hook(lambda *_: self.scheduler.step())

    def step_epoch(self) -> None:
        if self.scheduler is not None and not self.per_batch:
            self.scheduler.step()

    def state_dict(self) -> dict:
        """Where the schedule is (None once stopped); plain values only."""
        return {"scheduler": self.scheduler.state_dict() if self.scheduler is not None else None}

    def load_state_dict(self, state: dict) -> None:
        if state["scheduler"] is None:
            self.stop()
        elif self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        else:
            raise ValueError("the saved schedule is running, this run's has none")

    def stop(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self.scheduler = None


def _build(optimizer, spec: OptimSpec, epochs: int, steps_per_epoch: int) -> lr_scheduler.LRScheduler | None:
    if spec.schedule == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    if spec.schedule == "warmup_cosine":
        w = spec.warmup_epochs
        warmup = lr_scheduler.LinearLR(optimizer, start_factor=1 / (w + 1), end_factor=1.0, total_iters=w)
        cosine = lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs - w)
        return lr_scheduler.SequentialLR(optimizer, [warmup, cosine], milestones=[w])
    if spec.schedule == "step":
        return lr_scheduler.StepLR(optimizer, step_size=spec.step_size, gamma=spec.gamma)
    if spec.schedule == "onecycle":
        # total_steps counts the optimizer steps exactly: every epoch steps it steps_per_epoch times.
        return lr_scheduler.OneCycleLR(optimizer, max_lr=spec.lr, total_steps=epochs * steps_per_epoch)
    return None
