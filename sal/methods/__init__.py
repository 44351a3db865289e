"""Training methods behind one protocol (``Method``). Each module declares its methods once (a
``MethodInfo``: name, spec with the paper's defaults, implementation, role, interventions, default search
space); the registry, the run spec's method section and the default analysis families are built here
from those declarations, so adding a method is adding one module to _MODULES."""

from __future__ import annotations

from . import base, lbfgs, rolling_ball, sal, sam, shrink_perturb, swa
from .base import OPTIMIZER_SPACE, EpochStats, Method, MethodContext, MethodInfo, build_optimizer

__all__ = ["METHODS", "REGISTRY", "METHOD_SPECS", "build_method", "default_space", "names_with_role",
           "STRESS_AWARE", "SAL_FAMILY", "EpochStats", "Method", "MethodContext", "MethodInfo", "build_optimizer"]

_MODULES = (base, sal, shrink_perturb, sam, swa, rolling_ball, lbfgs)
METHODS: dict[str, MethodInfo] = {info.name: info for module in _MODULES for info in module.METHODS}
REGISTRY: dict[str, type[Method]] = {name: info.impl for name, info in METHODS.items()}
METHOD_SPECS: dict[str, type] = {name: info.spec for name, info in METHODS.items()}
# methods that act on the weights between epochs -> what they do (a cell of them that never acted ran as
# its base optimizer); and the ones driven by SAL's stress signal
STRESS_AWARE: dict[str, tuple[str, ...]] = {name: info.acts for name, info in METHODS.items() if info.acts}
SAL_FAMILY: tuple[str, ...] = tuple(name for name, info in METHODS.items() if info.impl is sal.StressAwareLearning)


def names_with_role(*roles: str) -> tuple[str, ...]:
    return tuple(name for name, info in METHODS.items() if info.role in roles)


def build_method(ctx: MethodContext) -> Method:
    name = ctx.spec.method.name
    if name not in REGISTRY:
        raise ValueError(f"method.name={name!r} has no implementation; fix: use one of {sorted(REGISTRY)}")
    return REGISTRY[name](ctx)


def default_space(method: str) -> dict[str, dict]:
    """The knobs a fair comparison tunes for ``method``: the shared optimizer knobs (unless the method
    replaces the optimizer) plus the method's own, as study search-space entries."""
    shared = {} if method in METHODS and METHODS[method].own_optimizer else OPTIMIZER_SPACE
    return {**shared, **(METHODS[method].space if method in METHODS else {})}
