"""Benchmark: what streaming costs. Per-epoch time of a run whose splits are a Dataset read through a
DataLoader (sal/training/streaming.py) over that of the same run on tensors held whole (index slices), measured
side by side in one process: epochs alternate between the two runs, and the figure is the median of the
per-pair ratios. The two runs see the same batches, so they give the same history.

    python benchmarks/bench_streamed.py                 # digits, small CNN, CPU (about a minute on 2 cores)
    python benchmarks/bench_streamed.py --device cuda --width 32 --workers 4
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.data import TensorDataset

from sal.spec.config import validate_run
from sal.training.data import load_data
from sal.training.run import TrainingRun
from sal.training.splits import DataBundle
from sal.training.streaming import StreamedSplit


def streamed_copy(data: DataBundle, *, workers: int) -> DataBundle:
    """The bundle's splits as Datasets over the same (CPU) tensors."""
    def stream(split):
        return StreamedSplit(TensorDataset(split.x.cpu(), split.y.cpu()), split.sample_shape, data.num_classes,
                             source="bench", workers=workers)

    return DataBundle(stream(data.train), stream(data.val), stream(data.test), data.num_classes, data.in_shape)


def epoch_ratio(*, device: str, width: int, batch_size: int, epochs: int, workers: int) -> dict[str, float]:
    spec = validate_run({"data": {"name": "digits"}, "model": {"name": "cnn", "width": width},
                         "method": {"name": "base"}, "train": {"epochs": epochs + 1, "batch_size": batch_size,
                                                              "device": device, "sharpness_samples": 0}})
    tensors = load_data(spec.data)
    runs = [TrainingRun(spec, data=tensors), TrainingRun(spec, data=streamed_copy(tensors, workers=workers))]
    for run in runs:  # warm-up epoch each: allocator, kernels, caches
        run.step()
    times: list[list[float]] = [[], []]
    for _ in range(epochs):
        for run, t in zip(runs, times):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            run.step()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t.append(time.perf_counter() - t0)
    same = [r["train/loss"] for r in runs[0].result.history] == [r["train/loss"] for r in runs[1].result.history]
    return {"tensor_epoch_s": statistics.median(times[0]), "streamed_epoch_s": statistics.median(times[1]),
            "ratio": statistics.median(b / a for a, b in zip(*times)), "same_history": float(same)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--workers", type=int, default=0)
    a = parser.parse_args()
    r = epoch_ratio(device=a.device, width=a.width, batch_size=a.batch_size, epochs=a.epochs, workers=a.workers)
    print(f"digits, cnn width {a.width}, batch {a.batch_size}, {a.device}, data.workers={a.workers}: "
          f"streamed epoch / tensor epoch = {r['ratio']:.2f} (medians {r['streamed_epoch_s'] * 1e3:.0f} ms vs "
          f"{r['tensor_epoch_s'] * 1e3:.0f} ms); same history: {bool(r['same_history'])}")


if __name__ == "__main__":
    main()
