"""Benchmark: SAL's per-epoch overhead over its base optimizer, and sal's training loop against a plain
PyTorch DataLoader loop, as ratios of per-epoch times measured side by side in one process.

Each pair of loops runs alternately (A, B, A, B, ...) after a warm-up epoch each, so drift in the
machine's speed hits both; the printed figure is the median of the per-pair ratios.

    python benchmarks/bench_training.py              # CPU sizes (a few minutes on 2 cores)
    python benchmarks/bench_training.py --device cuda --full
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from sal.spec.config import validate_run
from sal.training.data import load_data
from sal.training.models import build_model
from sal.training.run import TrainingRun
from sal.training.splits import DataBundle, Split


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def _alternate(a, b, repeats: int, device) -> tuple[float, float, float]:
    """Median seconds of a, of b, and the median of the per-pair ratios b / a."""
    a(), b()  # warm-up: allocator, kernels, caches
    ta, tb = [], []
    for _ in range(repeats):
        ta.append(_timed(a, device))
        tb.append(_timed(b, device))
    return statistics.median(ta), statistics.median(tb), statistics.median(y / x for x, y in zip(ta, tb))


def _spec(model: dict, method: dict, device: str, batch_size: int):
    return validate_run({"model": model, "method": method, "optim": {"name": "adam", "lr": 1e-3},
                         "data": {"name": "synthetic", "val_fraction": 0.0},
                         "train": {"epochs": 10_000, "batch_size": batch_size, "device": device}})


def _dataloader_epoch(model, opt, loader, device, channels_last):
    """The loop most PyTorch code writes: collate on the host, copy each batch, .item() every batch."""
    def epoch():
        model.train()
        total, correct = 0.0, 0
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            out = model(x)
            loss = F.cross_entropy(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
            correct += (out.argmax(1) == y).sum().item()
        return total, correct
    return epoch


def bench(name: str, data: DataBundle, model_cfg: dict, args) -> None:
    device = torch.device(args.device)
    ours = TrainingRun(_spec(model_cfg, {"name": "base"}, args.device, args.batch_size), data=data)
    # Worst case for SAL: stress at its cap from the first epoch, so noise AND deformation every epoch.
    sal = TrainingRun(_spec(model_cfg, {"name": "sal", "warmup": 0, "theta": 1.0, "recovery": True}, args.device,
                            args.batch_size), data=data)
    t_base, t_sal, ratio = _alternate(ours.step, sal.step, args.repeats, device)
    print(f"{name:28s} SAL / base epoch time   {ratio:6.3f}  (overhead {100 * (ratio - 1):+.2f}%; "
          f"base {t_base * 1e3:.0f} ms, SAL {t_sal * 1e3:.0f} ms; noise+deform every epoch)")
    # The epoch ratio is within timing noise; the interventions alone, timed over many calls, are exact.
    pdo, calls = sal.method.pdo, 50
    t_act = _timed(lambda: [pdo.end_epoch(1000 + i, 1.0, 0.5) for i in range(calls)], device) / calls
    print(f"{name:28s} SAL interventions / base epoch {t_act / t_base:8.5f}  ({t_act * 1e3:.3f} ms a call: "
          f"stress update, noise on all weights, snapshot + deformation of the head)")
    cl = device.type == "cuda" and len(data.in_shape) == 3
    torch.manual_seed(0)
    model = build_model(ours.spec.model, data.in_shape, data.num_classes).to(
        device, memory_format=torch.channels_last if cl else torch.contiguous_format)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=True)
    loader = DataLoader(TensorDataset(data.train.x.cpu(), data.train.y.cpu()), batch_size=args.batch_size,
                        shuffle=True, drop_last=True, pin_memory=device.type == "cuda")
    t_ours, t_dl, ratio = _alternate(ours.step, _dataloader_epoch(model, opt, loader, device, cl), args.repeats, device)
    print(f"{name:28s} DataLoader / sal epoch  {ratio:6.3f}  (sal {t_ours * 1e3:.0f} ms, "
          f"DataLoader {t_dl * 1e3:.0f} ms; >1 means sal's loop is faster)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--full", action="store_true", help="ResNet-18 at width 64 on 10k CIFAR-sized samples (GPU)")
    args = p.parse_args()
    torch.manual_seed(0)
    print(f"device {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"batch {args.batch_size}, {args.repeats} alternating repeats, median ratio")
    digits = load_data(validate_run({"data": {"name": "digits", "val_fraction": 0.0}}).data)
    bench("small CNN on digits", digits, {"name": "cnn", "width": 16}, args)
    n, width = (10_000, 64) if args.full else (1024, 16)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    empty = Split(x[:0], y[:0])
    cifar = DataBundle(Split(x, y), empty, Split(x[:256], y[:256]), 10, (3, 32, 32))
    bench(f"ResNet-18 (w{width}) on {n} 3x32x32", cifar, {"name": "resnet18", "width": width}, args)


if __name__ == "__main__":
    main()
