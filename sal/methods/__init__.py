"""Training methods behind one protocol (``Method``); ``build_method`` maps a spec's name to one."""

from __future__ import annotations

from .base import EpochStats, Method, MethodContext, build_optimizer
from .lbfgs import LBFGS
from .rolling_ball import RollingBall
from .sal import StressAwareLearning
from .sam import SAM
from .shrink_perturb import ShrinkPerturb
from .swa import SWA

__all__ = ["REGISTRY", "build_method", "EpochStats", "Method", "MethodContext", "build_optimizer"]

REGISTRY: dict[str, type[Method]] = {
    "base": Method,
    "sal": StressAwareLearning,
    "sal_noise_only": StressAwareLearning,
    "sal_deform_only": StressAwareLearning,
    "sal_no_recovery": StressAwareLearning,
    "random_trigger": StressAwareLearning,
    "shrink_perturb": ShrinkPerturb,
    "sam": SAM,
    "swa": SWA,
    "rolling_ball": RollingBall,
    "lbfgs": LBFGS,
}


def build_method(ctx: MethodContext) -> Method:
    name = ctx.spec.method.name
    if name not in REGISTRY:
        raise ValueError(f"method.name={name!r} has no implementation; fix: use one of {sorted(REGISTRY)}")
    return REGISTRY[name](ctx)
