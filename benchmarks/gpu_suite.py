"""Every GPU benchmark in one process: bf16 autocast, channels_last, torch.compile once per process.

Figures (each a ratio measured side by side, alternating A/B, median of the per-pair ratios):
- ``sal_over_base``: SAL epoch / base-optimizer epoch, small CNN on digits (target <= 1.01);
- ``packed/<case>``: packed vs one-at-a-time seed-epochs per minute, small CNN on digits (>= 5x) and
  ResNet-18 width 16 on CIFAR-shaped tensors (>= 2x);
- ``syncs_per_epoch``: host-device syncs counted by ``torch.cuda.set_sync_debug_mode`` (target <= 1);
- ``recompiles``: graphs torch.compile built after the first seed's first epoch, over further seeds,
  trials and SAL's in-place interventions (target 0);
- ``overhead``: MLflow + Optuna seconds per trial over its training seconds (<= 1%), when both are installed.

    python benchmarks/gpu_suite.py --device cuda --json gpu_suite.json
    python benchmarks/gpu_suite.py --device cpu --smoke     # the same code paths, tiny sizes (CI)
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import statistics
import time
import warnings
from pathlib import Path

import torch
from bench_packed import _sync, alternate, case_specs, overhead_per_trial, packed_vs_alone

from sal.spec.config import validate_run
from sal.training.run import TrainingRun

# SAL that acts every epoch (noise) and deforms every few: the interventions must not cost or recompile.
ACTIVE_SAL = {"name": "sal", "warmup": 0, "rho": 0.0, "theta": 0.004, "s_noise": 0.001, "s_yield": 0.01,
              "eps_loss": 10.0, "recovery_patience": 1}


def _run_spec(method: dict, *, device: str, seed: int, smoke: bool, compile_: bool):
    train = {"epochs": 1000, "batch_size": 64, "device": device, "sharpness_samples": 0, "compile": compile_}
    data = {"name": "digits", **({"train_subset": 256} if smoke else {})}
    return validate_run({"data": data, "model": {"name": "cnn", "width": 8}, "method": method,
                         "optim": {"name": "adam", "lr": 1e-3}, "train": train, "seed": seed})


def _graphs() -> int:
    from torch._dynamo.utils import counters
    return int(counters["stats"]["unique_graphs"])


def count_syncs(fn) -> int | None:
    """Host-device syncs inside ``fn`` (CUDA only: the debug mode warns on every synchronizing call)."""
    if not torch.cuda.is_available() or torch.cuda.get_sync_debug_mode() is None:
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return sum("synchroniz" in str(w.message) for w in caught)


def sal_over_base(*, device: str, repeats: int, smoke: bool, compile_: bool) -> dict:
    base = TrainingRun(_run_spec({"name": "base"}, device=device, seed=1, smoke=smoke, compile_=compile_))
    sal = TrainingRun(_run_spec(ACTIVE_SAL, device=device, seed=1, smoke=smoke, compile_=compile_))
    m = alternate(base.step, sal.step, repeats, base.device)
    acted = sum(row.get("sal/noise", 0) + row.get("sal/deform", 0) for row in sal.result.history)
    return {"base_epoch_s": m["a_s"], "sal_epoch_s": m["b_s"], "sal_over_base": m["ratio"], "sal_interventions": acted}


def compile_reuse(*, device: str, seeds: int, smoke: bool) -> dict:
    """Graphs compiled after the first seed's first epoch while more epochs (with SAL's in-place noise,
    deformation and revert), more seeds and a second 'trial' (other knobs) run: torch.compile is set up once."""
    first = TrainingRun(_run_spec(ACTIVE_SAL, device=device, seed=1, smoke=smoke, compile_=True))
    first.step()
    after_first = _graphs()
    runs = [first] + [TrainingRun(_run_spec({**ACTIVE_SAL, "sigma_y": 0.05 * (1 + t)}, device=device, seed=s,
                                            smoke=smoke, compile_=True))
                      for t in range(2) for s in range(1, seeds + 1)][1:]
    for r in runs:
        for _ in range(3):
            r.step()
    syncs = count_syncs(runs[-1].step)
    return {"graphs_first_epoch": after_first, "recompiles": _graphs() - after_first, "syncs_per_epoch": syncs}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat: checks the code paths")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--compile-backend", default=None,
                        help="torch.compile backend (default inductor; the smoke mode uses 'eager': dynamo's graph "
                             "capture and guards, hence the recompile count, without building kernels)")
    parser.add_argument("--json", default="gpu_suite.json")
    args = parser.parse_args(argv)
    seeds, repeats = (2, 1) if args.smoke else (args.seeds, args.repeats)
    backend = args.compile_backend or ("eager" if args.smoke else None)
    if backend:  # TrainingRun calls torch.compile(model): give it this backend for the whole process
        torch.compile = functools.partial(torch.compile, backend=backend)
    device = torch.device(args.device)
    from torch._dynamo.utils import counters
    counters.clear()
    out: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                 "torch": torch.__version__, "smoke": args.smoke, "seeds": seeds, "rows": []}
    rows = out["rows"]

    def row(name: str, value, target: str, ok: bool | None) -> None:
        rows.append({"benchmark": name, "value": value, "target": target, "ok": ok})

    t0 = time.perf_counter()
    s = sal_over_base(device=args.device, repeats=repeats, smoke=args.smoke, compile_=not args.no_compile)
    row("SAL epoch / base epoch", round(s["sal_over_base"], 3), "<= 1.01", s["sal_over_base"] <= 1.01)
    if not args.no_compile:
        c = compile_reuse(device=args.device, seeds=seeds, smoke=args.smoke)
        row("recompiles over seeds, trials, SAL", c["recompiles"], "0", c["recompiles"] == 0)
        row("host syncs per epoch", c["syncs_per_epoch"], "<= 1",
            None if c["syncs_per_epoch"] is None else c["syncs_per_epoch"] <= 1)
    targets = {"cnn-w8/digits": 5.0, "resnet18-w16/cifar-shaped": 2.0}
    for case, target in targets.items():
        p = packed_vs_alone(case, seeds=seeds, device=args.device, repeats=repeats) if not args.smoke else \
            _smoke_packed(case, device=args.device)
        row(f"packed / alone seed-runs per min, {case}", round(p["speedup"], 2), f">= {target}x",
            p["speedup"] >= target)
    if all(importlib.util.find_spec(m) for m in ("optuna", "mlflow")):
        o = overhead_per_trial(seeds=seeds, device=args.device, epochs=2 if args.smoke else 12)
        row("MLflow + Optuna per trial", f"{100 * o['overhead_share']:.2f}%", "<= 1%", o["overhead_share"] <= 0.01)
    else:
        row("MLflow + Optuna per trial", "skipped: optuna/mlflow not installed", "<= 1%", None)
    out["wall_s"] = time.perf_counter() - t0
    print(f"{'benchmark':55s} {'value':>12s} {'target':>8s}  ok")
    for r in rows:
        print(f"{r['benchmark']:55s} {str(r['value']):>12s} {r['target']:>8s}  {r['ok']}")
    Path(args.json).write_text(json.dumps(out, indent=2))
    return out


def _smoke_packed(case: str, *, device: str) -> dict:
    """One packed and one unpacked epoch of two seeds on a few samples (code paths only)."""
    from sal.training.packed import PackedRun
    from sal.training.splits import DataBundle, Split
    specs, data = case_specs(case, seeds=2, device=device, extra_train={"batch_size": 16})
    if data is None:
        from sal.training.data import load_data
        data = load_data(specs[0].data)
    small = lambda s, n: Split(s.x[:n], s.y[:n])  # noqa: E731
    data = DataBundle(small(data.train, 64), small(data.val, 32), small(data.test, 32), data.num_classes,
                      data.in_shape)
    packed = PackedRun(specs, data=data)
    alone = [TrainingRun(s, data=data) for s in specs]
    m = alternate(packed.step, lambda: [r.step() for r in alone], 1, packed.device)
    _sync(packed.device)
    return {"speedup": m["ratio"], "packed_epoch_s": statistics.median([m["a_s"]])}


if __name__ == "__main__":
    main()
