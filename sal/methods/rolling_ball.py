"""Rolling Ball Optimizer (Belgoumri et al. 2025): the centre of a ball of radius r rolls on the loss graph.

Per batch, with g = grad f(theta) and y = f(theta):
  centre      c  = (theta, y) + r * (-g, 1) / sqrt(1 + |g|^2)
  move        c~ = c + (D, <g, D>)        D = the base optimizer's step; D = -eta g gives the paper's
                                          c - eta (g, |g|^2), so any base optimizer composes
  projection  theta_new = the point of the graph nearest to c~, by K steps from theta:
              v = (z - theta~) + (f(z) - y~) grad f(z)          (the paper's step direction)
              z <- z - gamma * (I + grad f grad f^T)^-1 v        (Gauss-Newton metric)
The paper takes plain steps along v; they diverge once |grad f|^2 > 2/gamma. Preconditioning by the
Gauss-Newton metric of the distance (Sherman-Morrison: an O(n) correction) keeps every step stable
and projects exactly in one step where f is linear. So with r -> 0 one inner step gives exactly the
base optimizer's step. Cost: 1 + K forward/backward passes per batch.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ..core.spec_base import Strict
from .base import Method, MethodContext, MethodInfo

__all__ = ["RollingBall", "SEARCH_SPACE"]

SEARCH_SPACE = {"rolling_ball": {"method.radius": {"low": 1.0e-4, "high": 1.0e-1, "log": True}}}



class RollingBallSpec(Strict):
    name: Literal["rolling_ball"] = "rolling_ball"
    radius: float = Field(0.01, ge=0.0, description="ball radius r; r -> 0 is gradient descent")
    inner_steps: int = Field(2, ge=0, description="K projection steps back onto the loss graph")
    inner_lr: float = Field(1.0, gt=0.0, le=1.0, description="gamma of the (Gauss-Newton) projection steps")


class RollingBall(Method):
    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        self.knobs: RollingBallSpec = ctx.spec.method
        self.params = [p for p in self.model.parameters() if p.requires_grad]

    def _grads(self) -> list[torch.Tensor]:
        return [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, params = self.knobs, self.params
        loss, logits = self.loss_and_logits(x, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            g = [t.clone() for t in self._grads()]
            y0 = loss.detach().float()
            tilt = k.radius * torch.rsqrt(1 + torch.stack(torch._foreach_norm(g)).square().sum())
            theta = [p.detach().clone() for p in params]
        self.optimizer.step()  # theta + D
        with torch.no_grad():
            step = torch._foreach_sub([p.detach() for p in params], theta)  # D
            target = torch._foreach_sub([p.detach() for p in params], torch._foreach_mul(g, tilt))  # theta~
            height = y0 + tilt + torch.stack([(a * b).sum() for a, b in zip(g, step)]).sum()  # y~
            if k.inner_steps:
                torch._foreach_copy_(params, theta)
        for _ in range(k.inner_steps):
            fz = self.loss_and_logits(x, y)[0]
            self.optimizer.zero_grad(set_to_none=True)
            fz.backward()
            with torch.no_grad():
                gz = self._grads()
                v = torch._foreach_sub([p.detach() for p in params], target)
                torch._foreach_add_(v, torch._foreach_mul(gz, fz.detach().float() - height))
                gz_v = torch.stack([(a * b).sum() for a, b in zip(gz, v)]).sum()
                gz2 = torch.stack(torch._foreach_norm(gz)).square().sum()
                torch._foreach_sub_(v, torch._foreach_mul(gz, gz_v / (1 + gz2)))  # (I + g g^T)^-1 v
                torch._foreach_add_(params, v, alpha=-k.inner_lr)
        return loss.detach(), logits.detach()


METHODS = [MethodInfo("rolling_ball", RollingBallSpec, RollingBall, space=SEARCH_SPACE["rolling_ball"],
                      packable=False)]  # its ball's step is one seed's: not written per seed slice
