"""Stochastic Weight Averaging (Izmailov et al. 2018) with torch.optim.swa_utils.

Averaging starts after ``swa_start`` of the epochs, with SWALR annealing to ``swa_lr``; the averaged
network is evaluated, with its BatchNorm statistics recomputed (update_bn) before every evaluation.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.swa_utils import SWALR, AveragedModel, update_bn

from ..config import SWASpec
from .base import Method, MethodContext

__all__ = ["SWA"]


class SWA(Method):
    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        k: SWASpec = ctx.spec.method
        self.averaged = AveragedModel(self.model)
        self.start_epoch = math.floor(k.swa_start * ctx.spec.train.epochs)
        self.swa_scheduler = SWALR(self.optimizer, swa_lr=k.swa_lr or ctx.spec.optim.lr,
                                   anneal_epochs=k.anneal_epochs)
        self.n_averaged = 0
        self._bn_stale = False

    def on_epoch_trained(self, epoch: int) -> None:
        if epoch > self.start_epoch:
            self.averaged.update_parameters(self.model)
            self.n_averaged += 1
            self._bn_stale = True

    def step_schedule(self) -> None:
        if self.n_averaged:
            self.swa_scheduler.step()  # anneal to swa_lr once averaging has begun
        else:
            super().step_schedule()

    def eval_model(self) -> nn.Module:
        if self.n_averaged == 0:
            return self.model
        if self._bn_stale:
            with torch.no_grad():
                update_bn(self.ctx.train_batches(), self.averaged)
            self._bn_stale = False
        return self.averaged
