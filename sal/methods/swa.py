"""Stochastic Weight Averaging (Izmailov et al. 2018) with torch.optim.swa_utils.

Averaging starts after ``swa_start`` of the epochs, with SWALR annealing to ``swa_lr``; the averaged
network is evaluated, with its BatchNorm statistics recomputed (update_bn) before every evaluation.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import nn
from torch.optim.swa_utils import SWALR, AveragedModel, update_bn

from ..core.spec_base import Strict
from .base import Method, MethodContext, MethodInfo

__all__ = ["SWA", "SEARCH_SPACE"]

SEARCH_SPACE = {"swa": {"method.swa_start": {"low": 0.5, "high": 0.9},
                        "method.swa_lr": {"low": 1.0e-4, "high": 3.0e-2, "log": True}}}



class SWASpec(Strict):
    name: Literal["swa"] = "swa"
    swa_start: float = Field(0.75, ge=0.0, lt=1.0, description="fraction of epochs before averaging")
    swa_lr: float | None = Field(None, gt=0.0, description="SWALR target; None = the base lr")
    anneal_epochs: int = Field(1, ge=1)


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
        self.bn_update_rng = ctx.side_rng("swa")  # update_bn's train-mode passes draw dropout masks

    def on_epoch_trained(self, epoch: int) -> None:
        if epoch > self.start_epoch:
            self.averaged.update_parameters(self.model)
            self.n_averaged += 1
            self._bn_stale = True

    def step_schedule(self) -> None:
        if self.n_averaged:
            if self.scheduler is not None:
                self.scheduler.stop()  # SWALR owns the lr from now on (onecycle would step it every batch)
            self.swa_scheduler.step()  # anneal to swa_lr once averaging has begun
        else:
            super().step_schedule()

    def eval_model(self) -> nn.Module:
        if self.n_averaged == 0:
            return self.model
        if self._bn_stale:
            with torch.no_grad(), self.bn_update_rng.active():
                update_bn(self.ctx.train_batches(), self.averaged)
            self._bn_stale = False
        return self.averaged

    def state_dict(self) -> dict:
        """The running average (with its BatchNorm statistics), SWALR's position and the BN-update stream."""
        return {**super().state_dict(), "averaged": self.averaged.state_dict(), "n_averaged": self.n_averaged,
                "bn_stale": self._bn_stale, "swa_scheduler": self.swa_scheduler.state_dict(),
                "bn_update_rng": self.bn_update_rng.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.averaged.load_state_dict(state["averaged"])
        self.n_averaged, self._bn_stale = state["n_averaged"], state["bn_stale"]
        self.swa_scheduler.load_state_dict(state["swa_scheduler"])
        self.bn_update_rng.load_state_dict(state["bn_update_rng"])


METHODS = [MethodInfo("swa", SWASpec, SWA, role="baseline", space=SEARCH_SPACE["swa"])]
