"""SAL and its ablations: the base optimizer plus PDO's stress-driven interventions between epochs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ..core.names import EVENT_DEFORM, EVENT_NOISE, EVENT_REVERT, METRIC_NOISE_STD, METRIC_STRESS
from ..core.spec_base import Strict
from .base import EpochStats, Method, MethodContext, MethodInfo
from .pdo import PAPER, PDO, RandomTriggerPDO

__all__ = ["StressAwareLearning", "SEARCH_SPACE", "YokedEvents", "YOKED_EVENTS"]

YOKED_EVENTS = "method.yoked_events"  # derived from the partner run: left out of config_hash

# SAL's seven knobs (Sec. 3.1 of the paper), log-uniform around the paper's values; each ablation
# searches only the knobs of the parts it keeps (S_noise is drawn below S_yield).
_KNOBS = {
    "method.rho": {"low": 1.0e-5, "high": 1.0e-2, "log": True},
    "method.theta": {"low": 1.0e-4, "high": 5.0e-2, "log": True},
    "method.s_noise": {"low": 1.0e-3, "high": 5.0e-2, "log": True},
    "method.s_yield": {"low": 2.0e-3, "high": 1.0e-1, "log": True},
    # up to a noise std of about 1e-2 at the yield point: the paper's 2e-7 sits far below bf16's resolution
    # (about 2e-4 at |w| = 0.05), so a space capped near 1e-3 could not find a noise that matters
    "method.delta": {"low": 1.0e-8, "high": 1.0e-3, "log": True},
    "method.lambda": {"low": 1.0e-6, "high": 1.0e-1, "log": True},
    "method.sigma_y": {"low": 1.0e-3, "high": 1.0e-1, "log": True},
}
_NOISE = ("method.delta", "method.lambda", "method.s_noise")
SEARCH_SPACE = {
    "sal": _KNOBS,
    "sal_no_recovery": _KNOBS,
    "random_trigger": {k: v for k, v in _KNOBS.items() if k in ("method.delta", "method.lambda", "method.sigma_y")},
    "sal_noise_only": {k: v for k, v in _KNOBS.items() if k != "method.sigma_y"},
    # S_noise keeps its default (0.005) and must stay below S_yield, though no noise is drawn
    "sal_deform_only": {**{k: v for k, v in _KNOBS.items() if k not in _NOISE},
                        "method.s_yield": {"low": 5.0e-3, "high": 1.0e-1, "log": True}},
}

# name -> (noise, deformation, recovery): the ablations switch one part off.
_PARTS = {
    "sal": (True, True, True),
    "sal_noise_only": (True, False, False),
    "sal_deform_only": (False, True, True),
    "sal_no_recovery": (True, True, False),
    "random_trigger": (True, True, True),
}



class SALSpec(Strict):
    """Stress-Aware Learning; defaults are the paper's (Sec. 3.1). The ablations share these knobs."""

    name: Literal["sal", "sal_noise_only", "sal_deform_only", "sal_no_recovery"] = "sal"
    rho: float = Field(PAPER.rho, ge=0.0, description="stress decay on progress")
    theta: float = Field(PAPER.theta, ge=0.0, description="stress growth on stagnation")
    s_max: float = Field(PAPER.s_max, gt=0.0, description="stress cap")
    s_noise: float = Field(PAPER.s_noise, ge=0.0, description="noise threshold (noise when S > s_noise)")
    s_yield: float = Field(PAPER.s_yield, gt=0.0, description="yield threshold (deformation when S >= s_yield)")
    delta: float = Field(PAPER.delta, ge=0.0, description="base noise std (Eq. 2)")
    lambda_: float = Field(PAPER.lambda_, ge=0.0, alias="lambda", description="stress-to-noise gain (Eq. 2)")
    sigma_y: float = Field(PAPER.sigma_y, ge=0.0, description="std of the deformation noise (Eq. 3)")
    shrink: float = Field(PAPER.shrink, gt=0.0, le=1.0, description="factor on deformed weights (Eq. 3)")
    deform_layers: int = Field(PAPER.deform_layers, ge=1, description="last trainable layers deformed")
    warmup: int = Field(PAPER.warmup, ge=0, description="epochs before any intervention")
    eps_loss: float = Field(0.0, ge=0.0, description="loss drop that counts as progress")
    eps_acc: float = Field(0.0, ge=0.0, description="accuracy gain that counts as progress")
    yield_strict: bool = Field(False, description="True: deform at S > s_yield (Algorithm 1)")
    stress_in_warmup: bool = Field(True, description="False: hold stress at 0 during warm-up")
    signal: Literal["train", "val"] = Field("train", description="metrics that drive the stress")
    recovery: bool = Field(True, description="revert a deformation that brings no progress")
    recovery_patience: int = Field(3, ge=1, description="epochs a deformation has to bring progress")
    revert_scope: Literal["model", "deformed"] = Field("model", description="weights restored on revert")
    reset_at_yield: bool = Field(True, description="reset the stress at the yield point even where no deformation "
                                 "follows (noise-only), so the noise keeps SAL's epochs and sizes; False: the "
                                 "noise-only stress keeps growing (another schedule than SAL's)")

    @model_validator(mode="after")
    def _thresholds_ordered(self):
        if self.s_noise > self.s_yield:
            raise ValueError(
                f"method.s_noise={self.s_noise} is above method.s_yield={self.s_yield}, so noise could never "
                "precede deformation; fix: lower method.s_noise or raise method.s_yield"
            )
        if self.s_yield > self.s_max:
            raise ValueError(
                f"method.s_yield={self.s_yield} is above method.s_max={self.s_max}, so stress never yields; "
                "fix: lower method.s_yield or raise method.s_max"
            )
        return self


class YokedEvents(Strict):
    """What a yoked control copies from its SAL partner's run of the same seed (filled in by the ablation
    worker from MLflow before the control trains; not part of the control's identity)."""

    deform: list[int] = Field(default_factory=list, description="epochs the partner deformed")
    noise: list[int] = Field(default_factory=list, description="epochs the partner injected noise")
    noise_std: list[float] = Field(default_factory=list, description="the std of each of those injections")


class RandomTriggerSpec(SALSpec):
    """Control: SAL's interventions at random epochs instead of when stress says so."""

    name: Literal["random_trigger"] = "random_trigger"  # type: ignore[assignment]
    trigger_prob: float = Field(0.1, gt=0.0, le=1.0, description="chance per epoch of an intervention")
    trigger_count: int | None = Field(None, ge=0, description="exactly this many, at epochs drawn after the "
                                      "warm-up (e.g. as many as a reference SAL run had); overrides trigger_prob")
    yoke: str | None = Field(None, description="cell of the same ablation whose run of the same seed this control "
                             "copies: as many deformations and noise injections, with its noise sizes, at random "
                             "epochs (the test of whether the stress trigger matters); overrides trigger_count")
    yoke_mode: Literal["count", "shift", "shuffle"] = Field(
        "count", description="count: random epochs; shift: the partner's pattern moved by a random offset; "
        "shuffle: the partner's gaps between deformations in a random order")
    yoked_events: YokedEvents | None = Field(None, description="the partner's events (set by the worker)")


class StressAwareLearning(Method):
    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        s: SALSpec = ctx.spec.method
        noise, deform, recovery = _PARTS[s.name]
        parts = dict(generator=ctx.generator, use_noise=noise, use_deform=deform, recovery=recovery and s.recovery)
        if isinstance(s, RandomTriggerSpec):
            t = ctx.spec.train
            last_allowed = t.epochs if t.intervene_last_epoch else t.epochs - 1  # see EpochStats.act
            if s.yoke is not None and s.yoked_events is None:
                raise ValueError(f"method.yoke={s.yoke!r}: this control copies the events of cell {s.yoke!r}'s run "
                                 "of the same seed, which only an ablation can read; fix: run it in an ablation "
                                 "with that cell, or set method.trigger_count instead of method.yoke")
            yoked = s.yoked_events.model_dump() if s.yoke is not None else None
            self.pdo = RandomTriggerPDO(self.model, s, trigger_prob=s.trigger_prob, trigger_seed=ctx.method_seed,
                                        count=s.trigger_count, epochs=last_allowed, yoked=yoked,
                                        yoke_mode=s.yoke_mode, **parts)
        else:
            self.pdo = PDO(self.model, s, **parts)
        self.signal = s.signal

    def intervene(self, stats: EpochStats) -> dict[str, float]:
        if self.signal == "val":
            loss, acc = stats.val_loss, stats.val_acc
        else:
            loss, acc = stats.train_loss, stats.train_acc
        ev = self.pdo.end_epoch(stats.epoch, loss, acc, act=stats.act)
        return {METRIC_STRESS: ev.stress, EVENT_NOISE: float(ev.noise), EVENT_DEFORM: float(ev.deform),
                EVENT_REVERT: float(ev.revert), METRIC_NOISE_STD: ev.noise_std}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "pdo": self.pdo.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.pdo.load_state_dict(state["pdo"])


METHODS = [MethodInfo(name, RandomTriggerSpec if name == "random_trigger" else SALSpec, StressAwareLearning,
                      role="treatment" if name == "sal" else "ablation",
                      acts=tuple(a for a, on in zip(("noise", "deform"), parts[:2]) if on), space=SEARCH_SPACE[name])
           for name, parts in _PARTS.items()]
