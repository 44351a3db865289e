"""Stress-Aware Learning's Plastic Deformation Optimizer (Shakarami et al. 2025), torch only.

Per epoch (Algorithm 1): update the global stress S from the epoch's loss and accuracy (Eq. 1);
if S > S_noise add Gaussian noise of std alpha * (Delta + lambda * S), alpha = min(1, S / S_yield),
to every trainable weight (Eq. 2); if S >= S_yield shrink-and-perturb the last k trainable layers,
w <- 0.9 w + N(0, sigma_y) (Eq. 3), and reset S to 0; if that deformation brings no progress within
``recovery_patience`` epochs, restore the weights of the yield point (Fig. 2).

The base optimizer steps every batch untouched; PDO only acts between epochs, with in-place
``torch._foreach_*`` ops and its own device generator, so it adds no host copy and no sync.

Choices where the paper is ambiguous (each a setting of ``SALSpec``):
- yield test ``S >= S_yield`` (Sec. 2 and 3.1; Algorithm 1 writes ``>``): ``yield_strict``;
- sigma_y is a standard deviation (the plain reading of N(0, 0.02));
- stress is computed from epoch 1 and only interventions wait for the warm-up, as Algorithm 1
  computes S every epoch: ``stress_in_warmup=False`` holds S at 0 until the warm-up ends;
- the signal is the training loss/accuracy of the epoch (Algorithm 1): ``signal: val`` for validation;
- "fails" means: the signal loss has not gone below the loss of the deformation epoch minus eps_loss
  within ``recovery_patience`` epochs; the revert restores every trainable weight (``revert_scope``),
  resets the stress and skips that epoch's interventions (they would undo the revert);
- "last three trainable layers" are the last three modules that own trainable parameters, in
  registration order, skipping normalisation layers (a BatchNorm's gamma is a scale, not a layer of
  the head: shrinking it to 0.9 and perturbing it would deform every channel): on the paper's head
  and on sal's small nets the three Dense layers; on the CIFAR ResNet-18, whose head is one Linear,
  the head and the last block's two convolutions.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

__all__ = ["PAPER", "PaperConstants", "StressSignal", "Interventions", "EpochEvents", "PDO", "RandomTriggerPDO",
           "last_trainable_layers", "SALKnobs", "yoked_plan"]


class SALKnobs(Protocol):
    """The settings PDO reads; sal.methods.sal.SALSpec is the one place they are declared, with the
    paper's defaults (Sec. 3.1)."""

    rho: float
    theta: float
    s_max: float
    s_noise: float
    s_yield: float
    delta: float
    lambda_: float
    sigma_y: float
    shrink: float
    deform_layers: int
    warmup: int
    eps_loss: float
    eps_acc: float
    yield_strict: bool
    stress_in_warmup: bool
    recovery: bool
    recovery_patience: int
    revert_scope: str
    reset_at_yield: bool


@dataclass(frozen=True)
class PaperConstants:
    """The paper's values of SAL's knobs (Sec. 3.1): the one place they are written. The method specs
    (sal/methods/) default to them, and the stress a plain optimizer's run logs uses them too."""

    rho: float = 0.0005  # stress decay on progress
    theta: float = 0.005  # stress growth on stagnation
    s_max: float = 1.0
    s_noise: float = 0.005
    s_yield: float = 0.01
    delta: float = 1e-7  # base noise std (Eq. 2)
    lambda_: float = 1e-5  # stress-to-noise gain (Eq. 2)
    sigma_y: float = 0.02  # std of the deformation noise (Eq. 3)
    shrink: float = 0.9  # factor on the deformed weights (Eq. 3)
    deform_layers: int = 3
    warmup: int = 15


PAPER = PaperConstants()


@dataclass
class StressSignal:
    """Eq. 1: stress decays by rho on progress (loss down AND accuracy up), grows by theta otherwise."""

    rho: float = PAPER.rho
    theta: float = PAPER.theta
    s_max: float = PAPER.s_max
    eps_loss: float = 0.0
    eps_acc: float = 0.0
    stress: float = 0.0
    prev_loss: float = math.inf
    prev_acc: float = 0.0

    def update(self, loss: float, acc: float) -> float:
        progress = (self.prev_loss - loss > self.eps_loss) and (acc - self.prev_acc > self.eps_acc)
        if progress:
            self.stress = max(0.0, self.stress - self.rho)
        else:
            self.stress = min(self.s_max, self.stress + self.theta)
        self.prev_loss, self.prev_acc = loss, acc
        return self.stress

    def state_dict(self) -> dict[str, float]:
        """What changes while training (the knobs come from the spec)."""
        return {"stress": self.stress, "prev_loss": self.prev_loss, "prev_acc": self.prev_acc}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.stress, self.prev_loss, self.prev_acc = state["stress"], state["prev_loss"], state["prev_acc"]


_NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)


def last_trainable_layers(model: nn.Module, k: int) -> list[nn.Module]:
    """The last k modules (registration order) that own trainable parameters directly, normalisation
    layers (BatchNorm, LayerNorm, GroupNorm, InstanceNorm) left out."""
    owners = [m for m in model.modules() if not isinstance(m, _NORM_LAYERS)
              and any(p.requires_grad for p in m.parameters(recurse=False))]
    return owners[-k:]


class Interventions:
    """In-place noise, shrink-and-perturb and revert on fixed lists of parameters.

    Noise is drawn into one preallocated flat buffer per (device, dtype) with the run's generator,
    then added by one foreach op: no allocation per epoch and no host round trip.
    """

    def __init__(self, params: list[torch.Tensor], deform_params: list[torch.Tensor], generator: torch.Generator):
        self.params = params
        self.deform_params = deform_params
        self.generator = generator
        self._buffers: dict[tuple, tuple[torch.Tensor, list[torch.Tensor]]] = {}
        self._snapshot: list[torch.Tensor] | None = None
        self._snapshot_of: list[torch.Tensor] = []

    def _standard_normal(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        key = tuple(id(p) for p in params)
        if key not in self._buffers:
            first = params[0]
            flat = torch.empty(sum(p.numel() for p in params), device=first.device, dtype=first.dtype)
            views = [v.view_as(p) for v, p in zip(flat.split([p.numel() for p in params]), params)]
            self._buffers[key] = (flat, views)
        flat, views = self._buffers[key]
        flat.normal_(generator=self.generator)
        return views

    @torch.no_grad()
    def add_noise(self, params: list[torch.Tensor], std: float) -> None:
        """w <- w + std * N(0, 1) on every tensor of params."""
        if std > 0 and params:
            torch._foreach_add_(params, self._standard_normal(params), alpha=std)

    @torch.no_grad()
    def noise(self, std: float) -> None:
        self.add_noise(self.params, std)

    @torch.no_grad()
    def deform(self, shrink: float, sigma: float, *, snapshot_scope: str | None = "model") -> None:
        """Eq. 3 on the deformed layers, after keeping the yield point for a later revert
        (``snapshot_scope``: all weights, only the deformed ones, or None when no revert can follow)."""
        if snapshot_scope is not None:
            self._snapshot_of = self.params if snapshot_scope == "model" else self.deform_params
            if self._snapshot is None or len(self._snapshot) != len(self._snapshot_of):
                self._snapshot = [torch.empty_like(p) for p in self._snapshot_of]
            torch._foreach_copy_(self._snapshot, self._snapshot_of)
        torch._foreach_mul_(self.deform_params, shrink)
        self.add_noise(self.deform_params, sigma)

    @torch.no_grad()
    def revert(self) -> None:
        """Restore the weights kept by the last deform(), bit for bit."""
        if self._snapshot is None:
            raise RuntimeError("revert() before any deform(): there is no yield point to go back to")
        torch._foreach_copy_(self._snapshot_of, self._snapshot)

    def state_dict(self, *, snapshot: bool = True) -> dict:
        """The yield point kept for a revert (the generator is the run's, saved by the run);
        ``snapshot=False`` leaves out one that no revert can use any more."""
        keep = snapshot and self._snapshot is not None
        return {"snapshot": list(self._snapshot) if keep else None,
                "snapshot_of": "model" if self._snapshot_of is self.params else "deformed"}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        if state["snapshot"] is None:
            self._snapshot, self._snapshot_of = None, []
            return
        self._snapshot_of = self.params if state["snapshot_of"] == "model" else self.deform_params
        saved = state["snapshot"]
        if [tuple(t.shape) for t in saved] != [tuple(p.shape) for p in self._snapshot_of]:
            raise ValueError("the saved yield point has other shapes than the weights it restores")
        self._snapshot = [torch.empty_like(p) for p in self._snapshot_of]
        torch._foreach_copy_(self._snapshot, saved)  # onto the weights' device and dtype


@dataclass
class EpochEvents:
    """What PDO did after one epoch; the flags are the contract's sal/noise, sal/deform, sal/revert."""

    stress: float
    noise: bool = False
    deform: bool = False
    revert: bool = False
    noise_std: float = 0.0


class PDO:
    """Stress-aware interventions around any base optimizer. Call ``end_epoch`` once per epoch."""

    def __init__(self, model: nn.Module, knobs: SALKnobs, *, generator: torch.Generator, use_noise: bool = True,
                 use_deform: bool = True, recovery: bool | None = None):
        """``knobs``: SAL's settings (sal.methods.sal.SALSpec holds them with the paper's defaults); the
        ablations switch parts off with use_noise, use_deform and recovery (default: knobs.recovery)."""
        k = knobs
        params = [p for p in model.parameters() if p.requires_grad]
        deform_params = [p for m in last_trainable_layers(model, k.deform_layers)
                         for p in m.parameters(recurse=False) if p.requires_grad]
        self.act = Interventions(params, deform_params, generator)
        self.signal = StressSignal(k.rho, k.theta, k.s_max, k.eps_loss, k.eps_acc)
        self.s_noise, self.s_yield = k.s_noise, k.s_yield
        self.delta, self.lambda_, self.sigma_y, self.shrink = k.delta, k.lambda_, k.sigma_y, k.shrink
        self.warmup, self.yield_strict, self.stress_in_warmup = k.warmup, k.yield_strict, k.stress_in_warmup
        self.recovery = k.recovery if recovery is None else recovery
        self.recovery_patience, self.revert_scope = k.recovery_patience, k.revert_scope
        self.use_noise, self.use_deform = use_noise, use_deform
        self.eps_loss = k.eps_loss
        # Without a deformation, the stress of a noise-only cell would never reset and its noise would grow
        # on another schedule than SAL's; resetting at the yield point keeps SAL's epochs and sizes.
        self.reset_at_yield = k.reset_at_yield
        self._watch: tuple[int, float, bool] | None = None  # (deform epoch, loss there, progress seen)

    def noise_std(self, stress: float) -> float:
        """Eq. 2: alpha * (Delta + lambda * S) with alpha = min(1, S / S_yield)."""
        return min(1.0, stress / self.s_yield) * (self.delta + self.lambda_ * stress)

    def _std_for(self, epoch: int, stress: float) -> float:
        """The noise std to inject this epoch (a yoked control uses its partner's)."""
        return self.noise_std(stress)

    def _triggers(self, epoch: int, stress: float) -> tuple[bool, bool]:
        """(noise, yield) decisions; the controls override only this."""
        at_yield = stress > self.s_yield if self.yield_strict else stress >= self.s_yield
        return stress > self.s_noise, at_yield

    def _check_recovery(self, epoch: int, loss: float) -> bool:
        """True when the watched deformation has had its patience without progress: revert."""
        if self._watch is None:
            return False
        start, yield_loss, _ = self._watch
        if loss < yield_loss - self.eps_loss:
            self._watch = None  # the deformation helped: keep it
            return False
        if epoch - start >= self.recovery_patience:
            self._watch = None
            self.act.revert()
            return True
        return False

    def state_dict(self) -> dict:
        """Stress, the watched deformation and its yield point: all a resumed run needs to act the same."""
        return {"signal": self.signal.state_dict(), "watch": list(self._watch) if self._watch is not None else None,
                # a yield point is only used by a revert, which only a watched deformation can trigger
                "act": self.act.state_dict(snapshot=self._watch is not None)}

    def load_state_dict(self, state: dict) -> None:
        self.signal.load_state_dict(state["signal"])
        watch = state["watch"]
        self._watch = (int(watch[0]), float(watch[1]), bool(watch[2])) if watch is not None else None
        self.act.load_state_dict(state["act"])

    def end_epoch(self, epoch: int, loss: float, acc: float, *, act: bool = True) -> EpochEvents:
        """Update stress from this epoch's (1-based) metrics and intervene in place; ``act=False`` only
        updates the stress (after the last epoch, when no training follows to absorb an intervention)."""
        if epoch <= self.warmup and not self.stress_in_warmup:
            self.signal.prev_loss, self.signal.prev_acc = loss, acc
            return EpochEvents(stress=0.0)
        stress = self.signal.update(loss, acc)
        events = EpochEvents(stress=stress)
        if not act:
            return events
        if self.recovery and self._check_recovery(epoch, loss):
            # Back at the yield point, where stress had been reset: a new intervention in the same
            # epoch would undo the revert.
            self.signal.stress = 0.0
            events.revert = True
            return events
        if epoch <= self.warmup:
            return events
        want_noise, want_yield = self._triggers(epoch, stress)
        if want_noise and self.use_noise:
            events.noise_std = self._std_for(epoch, stress)
            self.act.noise(events.noise_std)
            events.noise = True
        if want_yield and self.use_deform:
            self.act.deform(self.shrink, self.sigma_y, snapshot_scope=self.revert_scope if self.recovery else None)
            self.signal.stress = 0.0
            events.deform = True
            if self.recovery:
                self._watch = (epoch, loss, False)
        elif want_yield and self.reset_at_yield:
            self.signal.stress = 0.0  # noise-only: SAL's schedule without its deformation
        return events


class RandomTriggerPDO(PDO):
    """Control for the stress trigger: the same interventions at random epochs, each epoch after the
    warm-up with probability p, or exactly ``count`` of them at epochs drawn without replacement, or
    ``yoked`` to a SAL run of the same seed (its event epochs and noise sizes, see ``yoked_plan``).

    Unyoked, the noise level is SAL's at the yield point (alpha = 1, S = S_yield), the one SAL applies on
    the epoch it deforms. Draws come from a host RNG seeded by the run, so no device sync is needed.
    """

    def __init__(self, model: nn.Module, knobs: SALKnobs, *, trigger_prob: float, trigger_seed: int,
                 count: int | None = None, epochs: int | None = None, yoked: dict | None = None,
                 yoke_mode: str = "count", **parts):
        super().__init__(model, knobs, **parts)
        self.trigger_prob = trigger_prob
        self._rng = random.Random(trigger_seed)
        self._planned: set[int] | None = None
        self._noise_plan: dict[int, float] | None = None  # yoked: epoch -> the noise std SAL used
        self._last = epochs or 0
        candidates = range(self.warmup + 1, self._last + 1)
        if yoked is not None:
            self._planned, self._noise_plan = yoked_plan(yoked, yoke_mode, candidates, self._rng)
        elif count is not None:
            self._planned = set(self._rng.sample(candidates, min(count, len(candidates))))

    def noise_std(self, stress: float) -> float:
        return self.delta + self.lambda_ * self.s_yield

    def end_epoch(self, epoch: int, loss: float, acc: float, *, act: bool = True) -> EpochEvents:
        events = super().end_epoch(epoch, loss, acc, act=act)
        if events.revert:  # a revert epoch makes no intervention: what was planned there moves on
            self._defer(epoch)
        return events

    def _defer(self, epoch: int) -> None:
        """Move the events planned at ``epoch`` to the next free epochs, so a planned count is kept (a yoked
        control makes as many interventions as its partner) unless training ends first."""
        def later(taken) -> int | None:
            return next((e for e in range(epoch + 1, self._last + 1) if e not in taken), None)

        if self._planned is not None and epoch in self._planned:
            self._planned.discard(epoch)
            if (e := later(self._planned)) is not None:
                self._planned.add(e)
        if self._noise_plan is not None and epoch in self._noise_plan:
            std = self._noise_plan.pop(epoch)
            if (e := later(self._noise_plan)) is not None:
                self._noise_plan[e] = std

    def state_dict(self) -> dict:
        # the plan (with any deferred events) and the RNG's draws since it was made
        version, internal, gauss = self._rng.getstate()
        plans = {"planned": sorted(self._planned) if self._planned is not None else None,
                 "noise_plan": sorted(self._noise_plan.items()) if self._noise_plan is not None else None}
        return {**super().state_dict(), "trigger_rng": [version, list(internal), gauss], **plans}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        version, internal, gauss = state["trigger_rng"]
        self._rng.setstate((version, tuple(internal), gauss))
        if state.get("planned") is not None:
            self._planned = {int(e) for e in state["planned"]}
        if state.get("noise_plan") is not None:
            self._noise_plan = {int(e): float(v) for e, v in state["noise_plan"]}

    def _triggers(self, epoch: int, stress: float) -> tuple[bool, bool]:
        if self._noise_plan is not None:
            return epoch in self._noise_plan, epoch in self._planned
        fire = epoch in self._planned if self._planned is not None else self._rng.random() < self.trigger_prob
        return fire, fire

    def _std_for(self, epoch: int, stress: float) -> float:
        return self._noise_plan[epoch] if self._noise_plan is not None else self.noise_std(stress)


def yoked_plan(events: dict, mode: str, candidates: range, rng: random.Random) -> tuple[set[int], dict[int, float]]:
    """A yoked control's epochs from its SAL partner's ``events`` ({"deform": epochs, "noise": epochs,
    "noise_std": the std of each noise epoch}): as many deformations and noise injections, with SAL's
    noise sizes, at other epochs among ``candidates``.

    ``count``: epochs drawn at random (the test of whether the timing matters at all); ``shift``: SAL's
    whole pattern moved by one random offset that keeps it inside the candidates (its spacing kept);
    ``shuffle``: SAL's gaps between deformations in a random order, from a random start. Noise epochs
    are drawn at random in ``count`` and ``shuffle`` and moved with the deformations in ``shift``.
    """
    deform, noise = sorted(events.get("deform", [])), sorted(events.get("noise", []))
    stds = dict(zip(events.get("noise", []), events.get("noise_std", [])))
    lo, hi = candidates.start, candidates.stop - 1
    if mode == "shift":
        both = deform + noise
        low, high = (lo - min(both), hi - max(both)) if both else (0, 0)
        offsets = [o for o in range(low, high + 1) if o != 0] or [0]
        offset = rng.choice(offsets)
        return {e + offset for e in deform}, {e + offset: stds.get(e, 0.0) for e in noise}
    if mode == "shuffle" and deform:
        gaps = [b - a for a, b in zip(deform, deform[1:])]
        rng.shuffle(gaps)
        start = rng.randint(lo, max(lo, hi - sum(gaps)))
        planned = [start]
        for g in gaps:
            planned.append(planned[-1] + g)
        planned_set = set(planned)
    else:
        planned_set = set(rng.sample(candidates, min(len(deform), len(candidates))))
    noise_epochs = sorted(rng.sample(candidates, min(len(noise), len(candidates))))
    sizes = [stds.get(e, 0.0) for e in noise]
    rng.shuffle(sizes)
    return planned_set, dict(zip(noise_epochs, sizes))
