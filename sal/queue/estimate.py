"""The compute a sweep will take, for ``--dry-run``: runs, epochs and seconds per epoch measured by training
one epoch of one run per (model, data, device) on this machine, summed per preset.

The timed epoch is a real one (train() with one epoch: data loading, compile and the first epoch's
warm-up are not counted, ``time/epoch_s`` is), so an estimate on a laptop says nothing of a GPU box:
run the dry run where the sweep will run. Nothing is written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..core.names import STATUS_FAILED
from ..spec.config import RunSpec, SpecError

__all__ = ["Group", "estimate", "format_estimate"]


@dataclass
class Group:
    """The runs of one (model, data, device) and the seconds their timed epoch took."""

    model: str
    data: str
    device: str
    runs: int
    epochs: int
    seconds_per_epoch: float

    @property
    def seconds(self) -> float:
        return self.epochs * self.seconds_per_epoch


def _key(spec: RunSpec) -> tuple[str, str, str]:
    from ..training.run import resolve_device

    model = spec.model.name + (f" (width {spec.model.width})" if spec.model.name in ("mlp", "cnn") else "")
    data = spec.data.display_name + (f" @{spec.data.resolution}px" if spec.data.resolution else "")
    return model, data, str(resolve_device(spec.train.device))


def _timed_epoch(spec: RunSpec) -> float:
    from ..training.run import train

    one = spec.model_copy(update={"train": spec.train.model_copy(update={
        "epochs": 1, "checkpoint_every": 0, "sharpness_samples": 0})})
    try:
        result = train(one)
    except Exception as err:  # noqa: BLE001 - data that cannot be read, a model that does not fit: bad input
        first = (str(err).strip().splitlines() or [""])[0][:300]
        raise SpecError([f"one timed epoch of {spec.model.name} on {spec.data.display_name} failed "
                         f"({type(err).__name__}: {first}); fix: correct the data or model (sal data check FILE "
                         "lists what a preset needs)"]) from None
    if result.status == STATUS_FAILED:
        raise SpecError([f"one timed epoch of {spec.model.name} on {spec.data.display_name} failed "
                         f"({result.message}); fix: correct the data or model"])
    seconds = result.last("time/epoch_s")
    return seconds if not math.isnan(seconds) else math.nan


def estimate(runs: list[tuple[RunSpec, int]]) -> list[Group]:
    """``runs``: (spec, how many runs of it). One timed epoch per (model, data, device)."""
    groups: dict[tuple[str, str, str], Group] = {}
    first: dict[tuple[str, str, str], RunSpec] = {}
    for spec, count in runs:
        key = _key(spec)
        if key not in groups:
            groups[key], first[key] = Group(*key, runs=0, epochs=0, seconds_per_epoch=math.nan), spec
        groups[key].runs += count
        groups[key].epochs += count * spec.train.epochs
    for key, group in groups.items():
        group.seconds_per_epoch = _timed_epoch(first[key])
    return list(groups.values())


def _duration(seconds: float) -> str:
    if math.isnan(seconds):
        return "?"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def format_estimate(name: str, groups: list[Group], *, note: str = "") -> list[str]:
    lines = [f"estimate for {name}{note} (one timed epoch per model, data and device on this machine):"]
    for g in groups:
        lines.append(f"  {g.model} on {g.data} ({g.device}): {g.runs} runs, {g.epochs} epochs x "
                     f"{g.seconds_per_epoch:.3g} s/epoch = {_duration(g.seconds)}")
    total = sum(g.seconds for g in groups)
    lines.append(f"  total: {sum(g.runs for g in groups)} runs, {sum(g.epochs for g in groups)} epochs, "
                 f"{_duration(total)} for one worker (divide by the workers that share it)")
    return lines
