"""Benchmark: sal's training loop reproduces MNIST-1D's published table (Greydanus & Kobak, "Scaling down
deep learning with MNIST-1D": logistic regression 32%, MLP 68%, CNN 94% test accuracy on the default
4000/1000 split), with the authors' models and training settings (configs/mnist1d_paper.yaml).

Each model trains over ``--seeds`` seeds (packed, as sal trains a cell's seeds); printed per model: the
published accuracy, sal's mean test accuracy with its 95% t-interval over seeds, the seeds' range, and
whether the mean is within ``--tolerance`` points of the published figure.

    python benchmarks/bench_mnist1d_table.py              # 5 seeds x 150 epochs (a few minutes on 2 cores)
    python benchmarks/bench_mnist1d_table.py --smoke      # 2 seeds x 2 epochs: the code path, for the tests
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from sal.spec.config import load_run_spec
from sal.stats.inference import describe
from sal.training.data import load_data
from sal.training.seeds import train_seeds

PRESET = Path(__file__).resolve().parents[1] / "configs" / "mnist1d_paper.yaml"
# model.name -> the paper's test accuracy (%), its Table 1 / Figure 2. Their GRU (91%) is not built in.
PUBLISHED = {"mnist1d_linear": 32.0, "mnist1d_mlp": 68.0, "mnist1d_cnn": 94.0}


def reproduce(model: str, *, seeds: int, epochs: int | None = None) -> dict:
    """Train ``seeds`` seeds of the preset with ``model``; their test accuracies (%) and the summary."""
    overrides = {"model.name": model, **({"train.epochs": epochs} if epochs else {})}
    specs = [load_run_spec(PRESET, {**overrides, "seed": s}) for s in range(1, seeds + 1)]
    n_train = len(load_data(specs[0].data).train)
    t0 = time.perf_counter()
    results = train_seeds(specs)
    wall_s = time.perf_counter() - t0
    acc = [100 * r.final["test/acc"] for r in results]
    summary = describe(acc, bounds=(0.0, 100.0))
    return {"model": model, "published": PUBLISHED[model], "test_acc": acc, **summary, "wall_s": wall_s,
            "epochs": specs[0].train.epochs, "steps": specs[0].train.epochs * (n_train // specs[0].train.batch_size),
            "n_train": n_train, "n_params": results[0].n_params,
            "train_acc": [100 * r.last("train/acc") for r in results]}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--models", nargs="*", default=["mnist1d_mlp", "mnist1d_cnn", "mnist1d_linear"],
                   choices=list(PUBLISHED))
    p.add_argument("--tolerance", type=float, default=2.0, help="points of accuracy from the published figure")
    p.add_argument("--smoke", action="store_true", help="2 seeds x 2 epochs: checks the code path, not the figures")
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads; 1 by default: these models are too small to gain from more, and on a shared "
                        "machine OpenMP threads that wait for a busy core slow tiny ops 10-50x")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds, epochs = (2, 2) if args.smoke else (args.seeds, None)
    print(f"MNIST-1D paper table, preset {PRESET.name}, {seeds} seeds per model, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads{' (smoke: figures meaningless)' if args.smoke else ''}")
    print(f"{'model':16s} {'params':>6s} {'published':>9s} {'sal mean':>8s} {'95% CI':>15s} {'seeds range':>13s} "
          f"{'train acc':>9s} {'within':>6s} {'time':>6s}")
    rows = []
    for model in args.models:
        r = reproduce(model, seeds=seeds, epochs=epochs)
        r["within_tolerance"] = abs(r["mean"] - r["published"]) <= args.tolerance
        rows.append(r)
        print(f"{model:16s} {r['n_params']:6d} {r['published']:8.1f}% {r['mean']:7.2f}% "
              f"[{r['ci_low']:6.2f}, {r['ci_high']:6.2f}] {min(r['test_acc']):5.1f}-{max(r['test_acc']):5.1f}% "
              f"{sum(r['train_acc']) / len(r['train_acc']):8.1f}% {'yes' if r['within_tolerance'] else 'NO':>6s} "
              f"{r['wall_s']:5.0f}s")
    out = {"seeds": seeds, "epochs": rows[0]["epochs"] if rows else None, "tolerance": args.tolerance, "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
