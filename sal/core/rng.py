"""Seeds and private random streams: how one run seed becomes independent generators.

Every run derives separate seeds per purpose (init, data order, the method's noise, dropout), so runs
with one seed start from the same weights and see the same batches under every method. Dropout draws
from torch's global RNG; a RngStream keeps such a stream apart, swapped in only for the code that owns it,
so an extra forward pass of one method (SAM's second pass, SWA's BatchNorm update) cannot shift the
dropout masks of the passes that the paired methods share.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

import torch

__all__ = ["derive_seed", "RngStream"]


def derive_seed(seed: int, purpose: str) -> int:
    """Independent 63-bit seeds per purpose, stable across processes and platforms."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{purpose}".encode()).digest()[:8], "little") >> 1


class RngStream:
    """A private state of torch's global RNG (CPU, and the CUDA device when used), seeded once."""

    def __init__(self, seed: int, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"
        with torch.random.fork_rng(devices=[device] if self.cuda else [], device_type=device.type):
            torch.manual_seed(seed)
            self._save()

    def _save(self) -> None:
        self._cpu = torch.get_rng_state()
        if self.cuda:
            self._cuda = torch.cuda.get_rng_state(self.device)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The stream's position as ByteTensors (a checkpoint, sal/training/checkpoints.py)."""
        return {"cpu": self._cpu, **({"cuda": self._cuda} if self.cuda else {})}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self._cpu = state["cpu"].clone()
        if self.cuda:
            self._cuda = state["cuda"].clone()

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Draw from this stream inside the block; the caller's RNG state is restored afterwards."""
        with torch.random.fork_rng(devices=[self.device] if self.cuda else [], device_type=self.device.type):
            torch.set_rng_state(self._cpu)
            if self.cuda:
                torch.cuda.set_rng_state(self._cuda, self.device)
            try:
                yield
            finally:
                self._save()
