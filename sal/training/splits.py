"""The splits a run trains and evaluates on, and the bundle that carries them: whole tensors (``Split``) or
a Dataset streamed batch by batch (``StreamedSplit``, sal/training/streaming.py) behind one interface.

Built-in data sets (sal/training/data.py) and a user's loader (sal/training/plugins.py) both end here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch

from .streaming import StreamedSplit

__all__ = ["Split", "AnySplit", "DataBundle", "split_off", "standardize"]


@dataclass
class Split:
    """A split held whole as tensors (on the device once the run moves it there)."""

    x: torch.Tensor
    y: torch.Tensor
    streamed: ClassVar[bool] = False

    def __len__(self) -> int:
        return len(self.y)

    @property
    def device(self) -> torch.device:
        return self.x.device

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device, non_blocking=True), self.y.to(device, non_blocking=True))

    def subset(self, idx: torch.Tensor) -> Split:
        return Split(self.x[idx], self.y[idx])

    def batches(self, batch_size: int, order: torch.Tensor | None = None, *, stop: int | None = None,
                drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(x, y)`` batches: index slices of ``order`` (e.g. an epoch's permutation, on the device) or
        plain slices of the samples in turn; up to ``stop`` samples, without the ragged last batch when
        ``drop_last``."""
        n = len(self) if order is None else len(order)
        n = n if stop is None else min(n, stop)
        for start in range(0, n - n % batch_size if drop_last else n, batch_size):
            end = min(start + batch_size, n)
            if order is None:
                yield self.x[start:end], self.y[start:end]
            else:
                idx = order[start:end]
                yield self.x[idx], self.y[idx]

    def take(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = idx.to(self.device)
        return self.x[idx], self.y[idx]

    def head(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[:n], self.y[:n]

    def channel_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of each channel (dim 1; each feature of N x F data), shaped to broadcast."""
        dims = [0] + list(range(2, self.x.dim()))
        return self.x.mean(dims, keepdim=True), self.x.std(dims, keepdim=True).clamp_min(1e-6)

    def standardized(self, mean: torch.Tensor, std: torch.Tensor) -> Split:
        return Split((self.x - mean) / std, self.y)


AnySplit = Split | StreamedSplit


@dataclass
class DataBundle:
    train: AnySplit
    val: AnySplit
    test: AnySplit
    num_classes: int
    in_shape: tuple[int, ...]  # one sample, e.g. (3, 32, 32)

    @property
    def streamed(self) -> bool:
        """Whether any split is read batch by batch from a Dataset (sal/training/streaming.py)."""
        return any(s.streamed for s in (self.train, self.val, self.test))

    def to(self, device: torch.device) -> DataBundle:
        return DataBundle(self.train.to(device), self.val.to(device), self.test.to(device), self.num_classes,
                          self.in_shape)



def split_off(n: int, fraction: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded permutation of ``range(n)`` cut into (kept, held out), ``fraction`` of them held out."""
    perm = torch.randperm(n, generator=g)
    k = int(round(n * fraction))
    return perm[k:], perm[:k]


def standardize(train: AnySplit, val: AnySplit, test: AnySplit) -> tuple[AnySplit, AnySplit, AnySplit]:
    """Standardise each channel (dim 1; each feature of N x F data) with training-set statistics (of a
    bounded sample of a streamed training split: see sal/training/streaming.py)."""
    mean, std = train.channel_stats()
    return tuple(s.standardized(mean, std) for s in (train, val, test))
