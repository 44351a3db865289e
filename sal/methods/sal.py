"""SAL and its ablations: the base optimizer plus PDO's stress-driven interventions between epochs."""

from __future__ import annotations

from ..config import RandomTriggerSpec, SALSpec
from ..pdo import PDO, RandomTriggerPDO
from .base import EpochStats, Method, MethodContext

__all__ = ["StressAwareLearning"]

# name -> (noise, deformation, recovery): the ablations switch one part off.
_PARTS = {
    "sal": (True, True, True),
    "sal_noise_only": (True, False, False),
    "sal_deform_only": (False, True, True),
    "sal_no_recovery": (True, True, False),
    "random_trigger": (True, True, True),
}


class StressAwareLearning(Method):
    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        s: SALSpec = ctx.spec.method
        noise, deform, recovery = _PARTS[s.name]
        knobs = dict(
            generator=ctx.generator, rho=s.rho, theta=s.theta, s_max=s.s_max, s_noise=s.s_noise,
            s_yield=s.s_yield, delta=s.delta, lambda_=s.lambda_, sigma_y=s.sigma_y, shrink=s.shrink,
            deform_layers=s.deform_layers, warmup=s.warmup, eps_loss=s.eps_loss, eps_acc=s.eps_acc,
            yield_strict=s.yield_strict, stress_in_warmup=s.stress_in_warmup,
            recovery=recovery and s.recovery, recovery_patience=s.recovery_patience,
            revert_scope=s.revert_scope, use_noise=noise, use_deform=deform,
        )
        if isinstance(s, RandomTriggerSpec):
            self.pdo = RandomTriggerPDO(self.model, trigger_prob=s.trigger_prob, trigger_seed=ctx.method_seed,
                                        count=s.trigger_count, epochs=ctx.spec.train.epochs, **knobs)
        else:
            self.pdo = PDO(self.model, **knobs)
        self.signal = s.signal

    def intervene(self, stats: EpochStats) -> dict[str, float]:
        if self.signal == "val":
            loss, acc = stats.val_loss, stats.val_acc
        else:
            loss, acc = stats.train_loss, stats.train_acc
        ev = self.pdo.end_epoch(stats.epoch, loss, acc)
        return {"sal/stress": ev.stress, "sal/noise": float(ev.noise), "sal/deform": float(ev.deform),
                "sal/revert": float(ev.revert), "sal/noise_std": ev.noise_std}
