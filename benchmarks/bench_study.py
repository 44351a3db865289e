"""Benchmark: sal's unpruned quick study (studies/quick.yaml, pruner none) against the plain Optuna +
DataLoader peer doing the same work (benchmarks/peer_optuna_dataloader.py), side by side in one process.

sal's side includes everything a user gets: the multi-seed objective, packed seeds, MLflow (one run per
seed with per-epoch metrics and artifacts on a SQLite store) and Optuna on SQLite. The two alternate
(sal, peer, sal, peer, ...) after a warm-up; the printed ratio is the median of peer time / sal time.

    python benchmarks/bench_study.py --trials 4 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import torch
from peer_optuna_dataloader import QUICK, run_peer  # run as a script: benchmarks/ is on sys.path

from sal.queue.engine import StorageRef
from sal.spec.study_spec import load_study_spec
from sal.sweeps.study import run_study


def sal_study(n_trials: int, tmp: str, tag: str, *, pack: str = "auto", epochs: int | None = None) -> float:
    # SAL's warm-up must end before training does (quick.yaml: 4 of 12 epochs)
    shorter = {"train.epochs": epochs, "method.warmup": min(4, epochs - 1)} if epochs else {}
    spec = load_study_spec(QUICK, {"train.pack": pack, "train.device": "cpu", **shorter}, name=f"bench-{tag}",
                           n_trials=n_trials, pruner={"name": "none"})
    t0 = time.perf_counter()
    run_study(spec, ref=StorageRef(f"sqlite:///{tmp}/sal-{tag}.db"), uri=f"sqlite:///{tmp}/mlflow.db")
    return time.perf_counter() - t0


def peer_study(n_trials: int, tmp: str, tag: str, *, epochs: int | None = None) -> float:
    t0 = time.perf_counter()
    run_peer(n_trials, storage=f"sqlite:///{tmp}/peer-{tag}.db", epochs=epochs)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pack", default="auto", choices=["auto", "on", "off"])
    parser.add_argument("--epochs", type=int, help="fewer epochs than quick.yaml's 12, on both sides (a shared CPU)")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    logging.getLogger("sal").setLevel(logging.WARNING)
    sal_s, peer_s = [], []
    with tempfile.TemporaryDirectory() as tmp:
        sal_study(1, tmp, "warm", pack=args.pack, epochs=2)  # MLflow store migrations, imports, data cache
        peer_study(1, tmp, "warm", epochs=2)
        for i in range(args.repeats):
            sal_s.append(sal_study(args.trials, tmp, str(i), pack=args.pack, epochs=args.epochs))
            peer_s.append(peer_study(args.trials, tmp, str(i), epochs=args.epochs))
            print(f"repeat {i + 1}: sal {sal_s[-1]:.1f} s, peer {peer_s[-1]:.1f} s, ratio {peer_s[-1] / sal_s[-1]:.2f}")
    out = {"trials": args.trials, "epochs": args.epochs or 12, "pack": args.pack, "threads": torch.get_num_threads(),
           "sal_s": sal_s, "peer_s": peer_s, "ratio": statistics.median(p / s for s, p in zip(sal_s, peer_s))}
    print(f"quick study, {args.trials} trials, pruner none: peer / sal = {out['ratio']:.2f} (median of "
          f"{args.repeats}; > 1 means sal is faster)")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
