"""Control: SAL's deformation (shrink and perturb, Ash & Adams 2020) every k epochs, no stress."""

from __future__ import annotations

from ..config import ShrinkPerturbSpec
from ..pdo import Interventions, last_trainable_layers
from .base import EpochStats, Method, MethodContext

__all__ = ["ShrinkPerturb"]


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
        if stats.epoch > k.warmup and (stats.epoch - k.warmup) % k.every == 0:
            self.act.deform(k.shrink, k.sigma_y, snapshot_scope=None)  # a fixed schedule never reverts
            out["sal/deform"] = 1.0
        return out
