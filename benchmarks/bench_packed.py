"""Benchmark: seeds packed into one model (sal/training/packed.py) against the same seeds trained one at a time,
as seed-epochs per minute measured side by side in one process; and MLflow + Optuna overhead per trial.

Packed and one-at-a-time epochs alternate (A, B, A, B, ...) after a warm-up epoch each, so drift in a
shared machine's speed hits both; printed figures are medians of the per-pair ratios.

    python benchmarks/bench_packed.py                    # CPU sizes (minutes on 2 cores)
    python benchmarks/bench_packed.py --device cuda --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch

from sal.spec.config import validate_run
from sal.training.packed import PackedRun
from sal.training.run import TrainingRun
from sal.training.splits import DataBundle, Split

CASES = {
    # name: (run spec, data: None = the spec's data set, or a random CIFAR-shaped set of n samples)
    "cnn-w8/digits": ({"data": {"name": "digits"}, "model": {"name": "cnn", "width": 8}}, None),
    "resnet18-w16/cifar-shaped": ({"model": {"name": "resnet18", "width": 16}}, 512),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cifar_shaped(n: int, *, seed: int = 0) -> DataBundle:
    """Random 3x32x32 images with 10 labels: the shapes and arithmetic of CIFAR-10, none of its files."""
    g = torch.Generator().manual_seed(seed)
    split = lambda k: Split(torch.randn(k, 3, 32, 32, generator=g), torch.randint(0, 10, (k,), generator=g))  # noqa: E731
    return DataBundle(split(n), split(n // 4), split(n // 4), 10, (3, 32, 32))


def case_specs(name: str, *, seeds: int, device: str, method: str | dict = "base", epochs: int = 1000,
               extra_train: dict | None = None) -> tuple[list, DataBundle | None]:
    raw, n = CASES[name]
    train = {"epochs": epochs, "batch_size": 64, "device": device, "sharpness_samples": 0, **(extra_train or {})}
    method = {"name": method} if isinstance(method, str) else method
    specs = [validate_run({**raw, "method": method, "optim": {"name": "adam", "lr": 1e-3},
                           "train": train, "seed": s}) for s in range(1, seeds + 1)]
    return specs, (cifar_shaped(n) if n else None)


def alternate(a, b, repeats: int, device: torch.device) -> dict[str, float]:
    """Median seconds of a and of b, and the median of the per-pair ratios b / a."""
    a(), b()  # warm-up
    ta, tb = [], []
    for _ in range(repeats):
        for fn, out in ((a, ta), (b, tb)):
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            out.append(time.perf_counter() - t0)
    return {"a_s": statistics.median(ta), "b_s": statistics.median(tb),
            "ratio": statistics.median(y / x for x, y in zip(ta, tb))}


def packed_vs_alone(name: str, *, seeds: int, device: str, repeats: int, method: str = "base") -> dict[str, float]:
    specs, data = case_specs(name, seeds=seeds, device=device, method=method)
    packed = PackedRun(specs, data=data)
    alone = [TrainingRun(s, data=data) for s in specs]
    m = alternate(packed.step, lambda: [r.step() for r in alone], repeats, packed.device)
    return {"case": name, "seeds": seeds, "packed_epoch_s": m["a_s"], "alone_epoch_s": m["b_s"],
            "speedup": m["ratio"], "seed_epochs_per_min_packed": 60 * seeds / m["a_s"],
            "seed_epochs_per_min_alone": 60 * seeds / m["b_s"]}


def overhead_per_trial(*, seeds: int, device: str, epochs: int = 12) -> dict[str, float]:
    """One quick-study trial (the small CNN, packed) against what sal adds around it: an Optuna ask/tell on
    SQLite and one MLflow run per seed on a SQLite store (params, per-epoch metrics, artifacts)."""
    import optuna

    from sal.tracking.store import ensure_experiment, log_result
    sal = {"name": "sal", "warmup": min(4, epochs - 1), "recovery_patience": 2}  # as studies/quick.yaml
    specs, data = case_specs("cnn-w8/digits", seeds=seeds, device=device, method=sal, epochs=epochs)
    t0 = time.perf_counter()
    packed = PackedRun(specs, data=data)
    while not packed.done:
        packed.step()
    results = packed.finish()
    train_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        ensure_experiment(uri, "sal-bench")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(storage=f"sqlite:///{tmp}/optuna.db", direction="maximize")
        log_result(results[0], uri=uri, experiment="sal-bench", kind="study", tags={}, run_name="warm-up")
        t0 = time.perf_counter()
        trial = study.ask()
        trial.suggest_float("method.rho", 1e-5, 1e-2, log=True)
        for r in results:
            trial.report(r.last("val/acc"), epochs)
            log_result(r, uri=uri, experiment="sal-bench", kind="study", tags={"sal.trial": trial.number},
                       run_name=f"s{r.spec.seed}")
        study.tell(trial, sum(r.last("val/acc") for r in results) / len(results))
        overhead_s = time.perf_counter() - t0
    return {"trial_train_s": train_s, "overhead_s": overhead_s, "overhead_share": overhead_s / train_s}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    parser.add_argument("--no-overhead", action="store_true", help="skip the MLflow + Optuna measurement")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    out = {"device": args.device, "threads": torch.get_num_threads(), "packed": []}
    print(f"packed vs one-at-a-time, {args.seeds} seeds, device {args.device}, {out['threads']} threads")
    print(f"{'case':28s} {'packed s/epoch':>14s} {'alone s/epoch':>14s} {'speed-up':>9s}")
    for name in args.cases:
        row = packed_vs_alone(name, seeds=args.seeds, device=args.device, repeats=args.repeats)
        out["packed"].append(row)
        print(f"{name:28s} {row['packed_epoch_s']:14.3f} {row['alone_epoch_s']:14.3f} {row['speedup']:8.2f}x")
    if not args.no_overhead:
        out["overhead"] = o = overhead_per_trial(seeds=args.seeds, device=args.device)
        print(f"MLflow + Optuna per trial: {o['overhead_s']:.3f} s of {o['trial_train_s']:.1f} s training "
              f"= {100 * o['overhead_share']:.2f}%")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return out


if __name__ == "__main__":
    main()
