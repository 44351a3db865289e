"""Benchmark: sal's training loop on real work (MNIST-1D, the paper's models) against a plain PyTorch loop,
per seed-epoch, measured side by side in one process; and what MLflow + Optuna cost a small ablation stage.

Three loops train the same model from the same initial weights on the same tensors, in the same batch
order (each epoch a permutation from the seed's "data" generator), with a validation pass per epoch:

- plain: the loop a careful PyTorch user writes: tensors in memory, batches as index slices, default
  ``torch.optim.Adam``, loss and accuracy summed on the device and read once per epoch;
- sal, one seed: ``TrainingRun.step()`` (the loop every sal run goes through);
- sal, S seeds packed: ``PackedRun.step()`` (sal/training/packed.py), its time divided by S.

The three alternate after a warm-up epoch each, every side taking every place in the order in turn, so a
shared machine's drift hits all; printed ratios are medians of per-repeat ratios, plain time / sal time
per seed-epoch (> 1: sal is faster), on the wall clock and on the process's CPU clock. Targets: >= 1.0x
for one seed, >= 2x for 10 packed seeds.

The stage overhead: a tiny ``sal ablate`` grid (two cells x seeds, on a real Optuna journal and MLflow
SQLite store) against the same cells' seeds trained with no queue and no tracking, alternately.

    python benchmarks/bench_mnist1d_speed.py                 # CNN and MLP, ~2 min on 2 cores
    python benchmarks/bench_mnist1d_speed.py --smoke         # the code path, for the tests
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from sal.core.rng import derive_seed
from sal.spec.config import load_run_spec
from sal.training.data import load_data
from sal.training.models import build_model
from sal.training.packed import PackedRun
from sal.training.run import TrainingRun
from sal.training.splits import DataBundle

PRESET = Path(__file__).resolve().parents[1] / "configs" / "mnist1d_paper.yaml"


def _spec(model: str, seed: int, *, epochs: int = 10_000, extra: dict | None = None):
    # The paper's settings with a validation split held out (the benchmark times a validation pass).
    return load_run_spec(PRESET, {"model.name": model, "seed": seed, "data.val_fraction": 0.2,
                                  "train.epochs": epochs, "train.device": "cpu", **(extra or {})})


class PlainLoop:
    """The plain PyTorch loop with the model, initial weights and batch order of sal's run of ``spec``."""

    def __init__(self, spec, data: DataBundle):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(spec.seed, "init"))  # the initial weights of sal's run
            self.model = build_model(spec.model, data.in_shape, data.num_classes)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=spec.optim.lr)
        self.gen = torch.Generator().manual_seed(derive_seed(spec.seed, "data"))  # sal's batch order
        self.x, self.y, self.xv, self.yv = data.train.x, data.train.y, data.val.x, data.val.y
        self.bs = spec.train.batch_size

    def epoch(self) -> list[float]:
        model, opt, bs = self.model, self.opt, self.bs
        model.train()
        order = torch.randperm(len(self.y), generator=self.gen)
        loss_sum, correct = torch.zeros(()), torch.zeros(())
        for b in range(len(self.y) // bs):
            idx = order[b * bs:(b + 1) * bs]
            x, y = self.x[idx], self.y[idx]
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += loss.detach()
            correct += (logits.argmax(1) == y).sum()
        model.eval()
        with torch.no_grad():
            logits = model(self.xv)
            val = [F.cross_entropy(logits, self.yv, reduction="sum"), (logits.argmax(1) == self.yv).sum().float()]
        return torch.stack([loss_sum, correct, *val]).tolist()  # the epoch's one sync


def _timed(fn) -> tuple[float, float]:
    """Wall-clock and CPU seconds of ``fn()``. With one torch thread the CPU time leaves out the waits for a
    core that other processes on a shared machine cause, so it is the steadier reading of the work done."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def loops(model: str, *, seeds: int, repeats: int) -> dict:
    """Seconds per seed-epoch of the plain loop, sal alone and sal packed (medians), and the ratios."""
    specs = [_spec(model, s) for s in range(1, seeds + 1)]
    data = load_data(specs[0].data)
    plain, one, packed = PlainLoop(specs[0], data), TrainingRun(specs[0], data=data), PackedRun(specs, data=data)
    # The same work: after one epoch each, the plain loop's weights are sal's (up to Adam's foreach round-off).
    plain.epoch(), one.step(), packed.step()
    drift = max((a - b).abs().max().item() for a, b in zip(plain.model.parameters(), one.model.parameters()))
    sides = [("plain", plain.epoch, 1), ("one", one.step, 1), ("packed", packed.step, seeds)]
    times = {name: {"wall": [], "cpu": []} for name, _, _ in sides}
    for i in range(repeats):
        for name, fn, n in sides[i % 3:] + sides[:i % 3]:  # each side takes each place in turn
            wall, cpu = _timed(fn)
            times[name]["wall"].append(wall / n)
            times[name]["cpu"].append(cpu / n)
    out = {"model": model, "seeds": seeds, "repeats": repeats, "n_params": one.result.n_params,
           "n_train": len(data.train), "n_val": len(data.val), "batches": one.n_batches,
           "grouped": packed.grouped is not None, "weights_max_abs_diff_after_1_epoch": drift}
    for clock in ("wall", "cpu"):
        t = {name: times[name][clock] for name in times}
        out[f"{clock}_s"] = {name: statistics.median(v) for name, v in t.items()}  # per seed-epoch
        out[f"{clock}_one_vs_plain"] = statistics.median(p / o for p, o in zip(t["plain"], t["one"]))
        out[f"{clock}_packed_vs_plain"] = statistics.median(p / k for p, k in zip(t["plain"], t["packed"]))
    return out


def _ablation_doc(name: str, model: str, seeds: int, epochs: int) -> dict:
    base = {"data": {"name": "mnist1d", "num_samples": 5000, "split_seed": 42, "val_fraction": 0.2,
                     "normalize": False},
            "model": {"name": model}, "optim": {"name": "adam", "lr": 0.01},
            "train": {"epochs": epochs, "batch_size": 100, "device": "cpu"}}
    return {"name": name, "seeds": seeds, "base": base,
            "cells": {"adam": {"method.name": "base"}, "sal": {"method.name": "sal", "method.warmup": 1}}}


def stage_overhead(model: str, *, seeds: int, epochs: int, repeats: int) -> dict:
    """A tiny ``sal ablate`` stage (queue + tracking) against its cells' seeds trained bare, alternately;
    overhead share = 1 - bare / stage (medians of per-repeat figures)."""
    import optuna

    from sal.queue.engine import StorageRef
    from sal.sweeps.ablation import load_ablation, run_ablation
    from sal.tracking.store import ensure_experiment
    from sal.training.seeds import train_seeds

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    stage_s, bare_s = [], []
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        ensure_experiment(uri, "warm-up")  # the store's one-time migrations are no part of a stage
        for i in range(repeats + 1):  # the first pair is a warm-up
            path = Path(tmp) / f"stage{i}.yaml"
            path.write_text(yaml.safe_dump(_ablation_doc(f"stage{i}", model, seeds, epochs)))
            spec, items = load_ablation(path)
            t0 = time.perf_counter()
            out = run_ablation(spec, items, ref=StorageRef(str(Path(tmp) / f"stage{i}.journal")), uri=uri)
            t_stage = time.perf_counter() - t0
            assert out["states"] == {"COMPLETE": 2 * seeds}, out["states"]
            cells = {}
            for item in items:
                cells.setdefault(item.cell, []).append(item.spec)
            t0 = time.perf_counter()
            for group in cells.values():
                train_seeds(group)
            t_bare = time.perf_counter() - t0
            if i:
                stage_s.append(t_stage)
                bare_s.append(t_bare)
        # One more stage under cProfile, for the split: the training thread's time inside each library
        # (MLflow's client with its SQLAlchemy/SQLite store; Optuna with its journal). The live runs' background
        # flushes are not in it; the side-by-side share above includes them.
        path = Path(tmp) / "profiled.yaml"
        path.write_text(yaml.safe_dump(_ablation_doc("profiled", model, seeds, epochs)))
        spec, items = load_ablation(path)
        prof = cProfile.Profile()
        prof.runcall(run_ablation, spec, items, ref=StorageRef(str(Path(tmp) / "profiled.journal")), uri=uri)
    split = _library_seconds(prof, {"mlflow": "/site-packages/mlflow/", "optuna": "/site-packages/optuna/"})
    total = sum(v[2] for v in pstats.Stats(prof).stats.values())
    share = statistics.median(1 - b / s for s, b in zip(stage_s, bare_s))
    return {"model": model, "cells": 2, "seeds": seeds, "epochs": epochs, "repeats": repeats,
            "stage_s": statistics.median(stage_s), "bare_s": statistics.median(bare_s), "overhead_share": share,
            "profiled_s": total, **{f"{lib}_share_profiled": t / total for lib, t in split.items()}}


def _library_seconds(prof: cProfile.Profile, libraries: dict[str, str]) -> dict[str, float]:
    """Seconds inside each library (by source path), counted where a call enters it from outside (cProfile's
    cumulative time per caller edge), so its own calls into SQLAlchemy, SQLite or the file system count too."""
    out = dict.fromkeys(libraries, 0.0)
    for (filename, _, _), (_, _, _, _, callers) in pstats.Stats(prof).stats.items():
        for lib, mark in libraries.items():
            if mark in filename:
                out[lib] += sum(edge[3] for (caller_file, _, _), edge in callers.items() if mark not in caller_file)
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", default=["mnist1d_cnn", "mnist1d_mlp"])
    p.add_argument("--seeds", type=int, default=10, help="seeds of the packed run")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--stage-seeds", type=int, default=3)
    p.add_argument("--stage-epochs", type=int, default=10)
    p.add_argument("--stage-repeats", type=int, default=3)
    p.add_argument("--smoke", action="store_true", help="tiny sizes: checks the code path, not the figures")
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads; 1 by default: these models are too small to gain from more, and on a shared "
                        "machine OpenMP threads that wait for a busy core slow tiny ops 10-50x")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.smoke:
        args.models, args.seeds, args.repeats = args.models[:1], 2, 1
        args.stage_seeds, args.stage_epochs, args.stage_repeats = 2, 2, 1
    out = {"threads": torch.get_num_threads(), "torch": torch.__version__, "loops": []}
    print(f"MNIST-1D, sal vs a plain PyTorch loop per seed-epoch (> 1: sal faster), {args.repeats} alternating "
          f"repeats, median ratio; torch {torch.__version__}, {out['threads']} threads")
    print(f"{'model':12s} {'clock':5s} {'plain ms':>8s} {'sal 1 ms':>8s} {f'sal {args.seeds}p ms':>10s} {'1 seed':>7s} "
          f"{f'{args.seeds} packed':>9s}")
    for model in args.models:
        r = loops(model, seeds=args.seeds, repeats=args.repeats)
        out["loops"].append(r)
        for clock in ("wall", "cpu"):
            t = r[f"{clock}_s"]
            print(f"{model:12s} {clock:5s} {1e3 * t['plain']:8.1f} {1e3 * t['one']:8.1f} {1e3 * t['packed']:10.1f} "
                  f"{r[f'{clock}_one_vs_plain']:6.2f}x {r[f'{clock}_packed_vs_plain']:8.2f}x")
        diff = r["weights_max_abs_diff_after_1_epoch"]
        print(f"{'':12s} same work: max |w_plain - w_sal| after one epoch {diff:.1e}; "
              f"{r['n_train']} training / {r['n_val']} validation samples, {r['batches']} batches an epoch")
    o = out["stage"] = stage_overhead(args.models[0], seeds=args.stage_seeds, epochs=args.stage_epochs,
                                      repeats=args.stage_repeats)
    print(f"MLflow + Optuna in a `sal ablate` stage ({o['cells']} cells x {o['seeds']} seeds x {o['epochs']} epochs, "
          f"{o['model']}): stage {o['stage_s']:.1f} s, same training bare {o['bare_s']:.1f} s -> "
          f"{100 * o['overhead_share']:.1f}% of the stage's wall time ({o['repeats']} alternating repeats); "
          f"of a profiled stage's training thread: MLflow {100 * o['mlflow_share_profiled']:.1f}%, "
          f"Optuna {100 * o['optuna_share_profiled']:.1f}%")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
