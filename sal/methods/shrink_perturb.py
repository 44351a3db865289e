"""Control: SAL's deformation (shrink and perturb, Ash & Adams 2020) every k epochs, no stress."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..core.names import EVENT_DEFORM
from ..core.spec_base import Strict
from .base import EpochStats, Method, MethodContext, MethodInfo
from .pdo import PAPER, Interventions, last_trainable_layers

__all__ = ["ShrinkPerturb", "SEARCH_SPACE"]

SEARCH_SPACE = {"shrink_perturb": {"method.every": {"type": "int", "low": 1, "high": 10},
                                   "method.sigma_y": {"low": 1.0e-3, "high": 1.0e-1, "log": True}}}



class ShrinkPerturbSpec(Strict):
    """Control: SAL's deformation 0.9 * w + N(0, sigma_y) on a fixed schedule, no stress, no noise."""

    name: Literal["shrink_perturb"] = "shrink_perturb"
    every: int = Field(5, ge=1, description="epochs between deformations")
    shrink: float = Field(PAPER.shrink, gt=0.0, le=1.0)
    sigma_y: float = Field(PAPER.sigma_y, ge=0.0)
    deform_layers: int = Field(PAPER.deform_layers, ge=1)
    warmup: int = Field(PAPER.warmup, ge=0)


class ShrinkPerturb(Method):
    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        self.knobs: ShrinkPerturbSpec = ctx.spec.method
        deformed = [p for m in last_trainable_layers(self.model, self.knobs.deform_layers)
                    for p in m.parameters(recurse=False) if p.requires_grad]
        self.act = Interventions(deformed, deformed, ctx.generator)

    def intervene(self, stats: EpochStats) -> dict[str, float]:
        out = super().intervene(stats)
        k = self.knobs
        if stats.act and stats.epoch > k.warmup and (stats.epoch - k.warmup) % k.every == 0:
            self.act.deform(k.shrink, k.sigma_y, snapshot_scope=None)  # a fixed schedule never reverts
            out[EVENT_DEFORM] = 1.0
        return out


METHODS = [MethodInfo("shrink_perturb", ShrinkPerturbSpec, ShrinkPerturb, role="ablation", acts=("deform",),
                      space=SEARCH_SPACE["shrink_perturb"])]
