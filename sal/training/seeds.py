"""The seeds of one configuration as a run group: packed into one model (sal/training/packed.py) when ``train.pack``
and the method allow it and it fits in memory, else one TrainingRun per seed. Studies and ablations call
``start_seeds`` / ``train_seeds`` and never need to know which.
"""

from __future__ import annotations

import logging
import os

import torch

from ..core.names import STATUS_FINISHED, STATUS_PRUNED
from ..spec.config import RunSpec
from .data import load_data
from .models import build_model
from .packed import PACKABLE, PackedRun
from .run import Result, TrainingRun
from .splits import DataBundle

__all__ = ["SeedRuns", "start_seeds", "train_seeds", "should_pack"]

log = logging.getLogger(__name__)

# Measured on 2 CPU cores (README, Speed): packing gave 2.3-2.4x for the small CNN (~8k parameters) and
# 0.52x for ResNet-18 width 16 (~700k): on the CPU, auto packs only models below this size.
CPU_PACK_MAX_PARAMS = 200_000


def _bytes_needed(n_params: int, seeds: int, spec: RunSpec, in_shape: tuple[int, ...]) -> int:
    """Rough upper bound of the packed model's memory: weights, gradients, two optimizer states, a SAM or
    SWA copy, a SAL snapshot, and activations at ~64 floats per input value per layer block."""
    per_sample = 1
    for d in in_shape:
        per_sample *= d
    return 4 * seeds * (6 * n_params + 64 * spec.train.batch_size * per_sample)


def _memory_free(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 1 << 62


def should_pack(specs: list[RunSpec], *, n_params: int | None = None, in_shape: tuple[int, ...] | None = None,
                streamed: bool = False) -> bool:
    """``train.pack``: on -> pack (unpackable methods still run alone, with a log line), off -> never,
    auto -> when the method supports it, there are several seeds and the stacked model fits in memory.
    Never for ``streamed`` data (a loader's Dataset: sal/training/streaming.py)."""
    mode = specs[0].train.pack
    method = specs[0].method.name
    if mode == "off" or len(specs) < 2:
        return False
    if method not in PACKABLE:
        log.info("method %s trains one seed at a time (train.pack=%s): it cannot be packed", method, mode)
        return False
    if specs[0].analysis.enabled:
        log.info("analysis (sharpness, trajectory, weights) is measured on single runs: the seeds train one at a time")
        return False
    if specs[0].train.checkpoint_every > 0:
        # A checkpoint holds one TrainingRun's state (sal/training/checkpoints.py); the packed run owns stacked weights,
        # optimizer and generators of its own, which no checkpoint saves, so a killed pack would start over.
        log.info("train.checkpoint_every=%d: checkpointed seeds train one at a time", specs[0].train.checkpoint_every)
        return False
    if streamed:
        # The packed loop gathers each seed's batch from tensors on the device. Streamed, every seed would
        # still read its own samples (S reads per epoch): packing saves no reading, where the time goes.
        log.info("streamed data (a Dataset per split): the seeds train one at a time")
        return False
    o = specs[0].optim
    if o.clip_grad_norm is not None or o.schedule not in ("constant", "cosine"):
        # clipping by the global gradient norm couples the stacked seeds; the packed loop steps only the
        # epoch schedules it builds itself
        log.info("optim.clip_grad_norm / optim.schedule=%s: the seeds train one at a time", o.schedule)
        return False
    if mode == "on" or n_params is None or in_shape is None:
        return True
    device = torch.device("cuda" if specs[0].train.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if specs[0].train.device == "auto" else specs[0].train.device))
    if device.type == "cpu" and n_params > CPU_PACK_MAX_PARAMS:
        log.info("train.pack=auto: %d parameters per seed; on the CPU packing pays only for small models "
                 "(grouped convolutions are slower there), training the seeds one at a time", n_params)
        return False
    need, free = _bytes_needed(n_params, len(specs), specs[0], in_shape), _memory_free(device)
    if need > 0.8 * free:
        log.info("train.pack=auto: %d seeds need ~%.0f MB of %.0f MB free; training them one at a time",
                 len(specs), need / 2**20, free / 2**20)
        return False
    return True


class SeedRuns:
    """The unpacked run group: the same interface as PackedRun over one TrainingRun per seed."""

    def __init__(self, specs: list[RunSpec], *, data: DataBundle | None = None,
                 checkpoint_dir: str | os.PathLike | None = None):
        self.runs = [TrainingRun(s, data=data, checkpoint_dir=checkpoint_dir) for s in specs]
        self.results = [r.result for r in self.runs]

    @property
    def epoch(self) -> int | None:
        """The epoch every running seed has reached, or None while a seed resumed from an older checkpoint
        than the others is catching up (a kill can land between two seeds' saves)."""
        running = {r.epoch for r in self.runs if not r.done}
        return max(r.epoch for r in self.runs) if len(running) <= 1 else None

    @property
    def done(self) -> bool:
        return all(r.done for r in self.runs)

    def step(self) -> list[dict[str, float] | None]:
        behind = min((r.epoch for r in self.runs if not r.done), default=0)  # lagging seeds catch up first
        return [r.step() if not r.done and r.epoch == behind else None for r in self.runs]

    def prune(self, message: str) -> None:
        for r in self.runs:
            if not r.done and r.result.status == STATUS_FINISHED:
                r.stop(STATUS_PRUNED, message)

    def finish(self) -> list[Result]:
        return [r.finish() for r in self.runs]


def _size(spec: RunSpec, data: DataBundle | None) -> tuple[int, tuple[int, ...]]:
    """Parameter count and input shape, from a model built on the meta device (no memory, no RNG)."""
    data = data or load_data(spec.data)
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        model = build_model(spec.model, data.in_shape, data.num_classes)
    return sum(p.numel() for p in model.parameters()), data.in_shape


def start_seeds(specs: list[RunSpec], *, data: DataBundle | None = None,
                checkpoint_dir: str | os.PathLike | None = None) -> PackedRun | SeedRuns:
    """The seeds of one configuration as a run group: packed when ``train.pack`` says so (never when they
    checkpoint or stream: see should_pack); each unpacked seed resumes from its checkpoint in ``checkpoint_dir``."""
    if should_pack(specs):
        bundle = data or load_data(specs[0].data)  # cached on the CPU: the runs load it from there
        n_params, in_shape = _size(specs[0], bundle) if specs[0].train.pack == "auto" else (None, None)
        if should_pack(specs, n_params=n_params, in_shape=in_shape, streamed=bundle.streamed):
            return PackedRun(specs, data=data)
    return SeedRuns(specs, data=data, checkpoint_dir=checkpoint_dir)


def train_seeds(specs: list[RunSpec], *, data: DataBundle | None = None) -> list[Result]:
    """Train every seed to the end (packed when it can be); one Result per spec, in order."""
    group = start_seeds(specs, data=data)
    while not group.done:
        group.step()
    return group.finish()
