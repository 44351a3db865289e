"""Sharpness-Aware Minimization (Foret et al. 2021) and ASAM (Kwon et al. 2021) around any base optimizer.

Per batch: g = grad L(w); e = rho * T^2 g / ||T g|| (T = 1 for SAM, |w| + eta for ASAM); step the base
optimizer with grad L(w + e) taken at w. BatchNorm running statistics move on the first pass only.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from ..core.spec_base import Strict
from .base import Method, MethodContext, MethodInfo

__all__ = ["SAM", "SEARCH_SPACE"]

SEARCH_SPACE = {"sam": {"method.rho": {"low": 0.01, "high": 0.5, "log": True}}}  # Foret et al. searched 0.01-2


def _freeze_bn_stats(model: nn.Module, frozen: bool) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if frozen:
                m._sal_momentum = m.momentum
                m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch: unchanged
            elif hasattr(m, "_sal_momentum"):
                m.momentum = m._sal_momentum



class SAMSpec(Strict):
    name: Literal["sam"] = "sam"
    rho: float = Field(0.05, gt=0.0, description="radius of the sharpness neighbourhood")
    adaptive: bool = Field(False, description="ASAM: scale the ascent by |w|")
    eta: float = Field(0.0, ge=0.0, description="ASAM's offset in T = |w| + eta")


class SAM(Method):
    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        self.knobs: SAMSpec = ctx.spec.method
        self.device_metrics["sam/perturb_norm"] = torch.zeros((), device=next(self.model.parameters()).device)
        self.second_pass_rng = ctx.side_rng("sam")  # its dropout draws leave the shared stream alone

    @torch.no_grad()
    def _ascent(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        grads = [p.grad for p in params]
        if self.knobs.adaptive:
            scale = torch._foreach_add(torch._foreach_abs(params), self.knobs.eta)  # T = |w| + eta
            grads_t = torch._foreach_mul(grads, scale)
        else:
            scale, grads_t = None, grads
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads_t))) + 1e-12
        # e = rho * T (T g) / ||T g||
        eps = torch._foreach_mul(grads_t, scale) if scale is not None else [g.clone() for g in grads_t]
        torch._foreach_mul_(eps, self.knobs.rho / norm)
        torch._foreach_add_(params, eps)
        self.device_metrics["sam/perturb_norm"] += torch.linalg.vector_norm(torch.stack(torch._foreach_norm(eps)))
        return params, eps

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss, logits = self.loss_and_logits(x, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params, eps = self._ascent()
        _freeze_bn_stats(self.model, True)
        try:
            self.optimizer.zero_grad(set_to_none=True)
            with self.second_pass_rng.active():
                self.loss_and_logits(x, y)[0].backward()
        finally:
            _freeze_bn_stats(self.model, False)
            with torch.no_grad():
                torch._foreach_sub_(params, eps)  # back to w, also for params without a second gradient
        self.optimizer.step()
        return loss.detach(), logits.detach()

    def state_dict(self) -> dict:
        return {**super().state_dict(), "second_pass_rng": self.second_pass_rng.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.second_pass_rng.load_state_dict(state["second_pass_rng"])


METHODS = [MethodInfo("sam", SAMSpec, SAM, role="baseline", space=SEARCH_SPACE["sam"])]
