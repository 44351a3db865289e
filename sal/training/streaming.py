"""Streamed splits: a loader's torch Dataset read batch by batch through a DataLoader, never held whole.

The one place sal uses a DataLoader (docs/design.md: whole data sets live on the device when they fit). A
``StreamedSplit`` has the interface of ``data.Split`` (``len``, ``batches``, ``take``, ``head``, ``subset``,
``channel_stats``, ``standardized``, ``to``), so training, evaluation, the methods and the analysis read
either kind alike. Its batches are the indices the tensor path slices (an epoch's permutation from the
run's data generator, cut into batches), so a Dataset over the same tensors gives the same run.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

import torch
from torch.utils.data import DataLoader, Dataset, Subset

__all__ = ["StreamedSplit", "STATS_SAMPLES"]

# Training samples whose per-channel mean and std ``data.normalize`` uses on a streamed split: a bounded
# read however large the set (all of them when there are fewer; else a seeded random subset).
STATS_SAMPLES = 10_000
_STATS_BATCH = 256


@dataclass(frozen=True, eq=False)  # eq=False: compared and hashed by identity, as the Dataset
class StreamedSplit:
    """A map-style Dataset of ``(x, y)`` samples (x a float tensor of ``sample_shape``, y an int class
    index), read onto ``device`` in batches. With ``mean``/``std`` (``data.normalize``) each batch is
    standardised on the device, as a tensor split is once."""

    dataset: Dataset
    sample_shape: tuple[int, ...]
    num_classes: int
    source: str  # what names the split in errors, e.g. "data.name='mypkg.data:load' train"
    workers: int = 0  # DataLoader worker processes (data.workers); 0: this process reads
    device: torch.device = torch.device("cpu")
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None
    streamed: ClassVar[bool] = True

    def __len__(self) -> int:
        return len(self.dataset)

    def to(self, device: torch.device | str) -> StreamedSplit:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(self, device=torch.device(device), mean=move(self.mean), std=move(self.std))

    def subset(self, idx: torch.Tensor) -> StreamedSplit:
        """The samples at ``idx``, as a Subset of the loader's Dataset (a subset of a subset is flattened)."""
        base, picked = self.dataset, idx.tolist()
        if isinstance(base, Subset):
            base, picked = base.dataset, [base.indices[i] for i in picked]
        return replace(self, dataset=Subset(base, picked))

    def batches(self, batch_size: int, order: torch.Tensor | None = None, *, stop: int | None = None,
                drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """As ``Split.batches``: batches of ``order`` (e.g. an epoch's permutation) or of the samples in
        turn, up to ``stop`` samples, without the ragged last batch when ``drop_last``."""
        # A DataLoader picks samples on the host: an order drawn on a GPU is read back once per pass.
        indices: Sequence[int] = range(len(self)) if order is None else order.tolist()
        n = len(indices) if stop is None else min(len(indices), stop)
        end = n - n % batch_size if drop_last else n
        seed = hash(tuple(indices[:batch_size]))  # a pass's own seed: differs every epoch, repeats in a rerun
        return self._load((list(indices[s:min(s + batch_size, end)]) for s in range(0, end, batch_size)), seed)

    def take(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The samples at ``idx`` as two device tensors (for small fixed samples: analysis, timing)."""
        indices = idx.tolist()
        xs, ys = zip(*self._load([indices], hash(tuple(indices))))
        return torch.cat(xs), torch.cat(ys)

    def head(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.take(torch.arange(min(n, len(self))))

    def channel_stats(self, *, limit: int = STATS_SAMPLES, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel (dim 1) mean and unbiased std of up to ``limit`` samples, shaped to broadcast over a
        batch as ``Split.channel_stats``; summed in float64 batch by batch, so memory stays one batch."""
        n = len(self)
        if n <= limit:
            order = torch.arange(n)
        else:  # no permutation of a huge set: ``limit`` draws, a repeat among them is dropped
            order = torch.randint(n, (limit,), generator=torch.Generator().manual_seed(seed)).unique()
        total = squares = None
        count = 0
        for x, _ in replace(self, mean=None, std=None).to("cpu").batches(_STATS_BATCH, order):
            x = x.double()
            dims = [0] + list(range(2, x.dim()))
            s, sq = x.sum(dims, keepdim=True), x.square().sum(dims, keepdim=True)
            total, squares = (s, sq) if total is None else (total + s, squares + sq)
            count += x.numel() // x.shape[1]
        mean = total / count
        var = (squares - count * mean.square()) / max(count - 1, 1)
        return mean.float(), var.clamp_min(0).sqrt().float().clamp_min(1e-6)

    def standardized(self, mean: torch.Tensor, std: torch.Tensor) -> StreamedSplit:
        return replace(self, mean=mean.to(self.device), std=std.to(self.device))

    def _load(self, plan: Iterable[list[int]], seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of ``plan`` (lists of indices) on the device, checked and standardised."""
        cuda = self.device.type == "cuda"
        # The loader's own generator: it draws its workers' base seed from it, not from the global RNG, which
        # holds the run's dropout stream while it trains (an extra draw there would change every mask).
        generator = torch.Generator().manual_seed(seed & 0x7FFF_FFFF_FFFF_FFFF)
        loader = DataLoader(self.dataset, batch_sampler=plan, num_workers=self.workers, pin_memory=cuda,
                            generator=generator)
        for x, y in loader:
            self._check_labels(y)
            x = x.to(self.device, torch.float32, non_blocking=cuda)
            if self.mean is not None:
                x = (x - self.mean) / self.std
            yield x, y.to(self.device, torch.long, non_blocking=cuda)

    def _check_labels(self, y: torch.Tensor) -> None:
        # Only the first sample was checked before compute (a streamed set is not scanned): every batch's
        # labels are checked here, on the host, where it costs no device sync and no device-side assert.
        if y.dim() != 1 or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise ValueError(f"{self.source}: a batch of labels has dtype {y.dtype} and shape {tuple(y.shape)}; "
                             "fix: return an int class index as y from every item")
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= self.num_classes:
            bad = low if low < 0 else high
            raise ValueError(f"{self.source}: a batch holds label {bad}, outside 0 .. {self.num_classes - 1}; fix: "
                             f"labels are class indices below num_classes={self.num_classes} (or return a larger "
                             "num_classes)")
