"""The peer sal is measured against: a plain Optuna + DataLoader script doing the work of studies/quick.yaml
without pruning (the same network, data split, optimizer, epochs, batch size and seeds per trial), the way
most PyTorch code is written: a DataLoader collating on the host, ``.item()`` per batch, one seed after
another, one Optuna trial per configuration on a SQLite storage. It logs nothing.

    python benchmarks/peer_optuna_dataloader.py --trials 4
"""

from __future__ import annotations

import argparse
import tempfile

import optuna
import torch
import torch.nn.functional as F
import yaml
from torch.utils.data import DataLoader, TensorDataset

from sal.spec.config import validate_run
from sal.training.data import load_data
from sal.training.models import build_model

__all__ = ["run_peer", "QUICK"]

QUICK = "studies/quick.yaml"


def _train_seed(base: dict, seed: int, data) -> float:
    spec = validate_run({**base, "seed": seed})
    torch.manual_seed(seed)
    model = build_model(spec.model, data.in_shape, data.num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=spec.optim.lr)
    loader = DataLoader(TensorDataset(data.train.x, data.train.y), batch_size=spec.train.batch_size, shuffle=True,
                        drop_last=True)
    val = DataLoader(TensorDataset(data.val.x, data.val.y), batch_size=512)
    acc = 0.0
    for _ in range(spec.train.epochs):
        model.train()
        for x, y in loader:
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            _ = loss.item()
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in val:
                correct += (model(x).argmax(1) == y).sum().item()
        acc = correct / len(data.val)
    return acc


def run_peer(n_trials: int, *, storage: str, study_yaml: str = QUICK, seeds: int | None = None,
             epochs: int | None = None) -> optuna.Study:
    doc = yaml.safe_load(open(study_yaml))
    base, n_seeds = doc["base"], seeds or doc.get("seeds", 3)
    if epochs:
        base = {**base, "train": {**base.get("train", {}), "epochs": epochs},
                "method": {**base.get("method", {}), "warmup": min(4, epochs - 1)}}  # as bench_study
    data = load_data(validate_run(base).data)

    def objective(trial: optuna.Trial) -> float:
        for key, p in doc["space"].items():  # drawn like sal's study, so the sampler's work is the same
            trial.suggest_float(key, p["low"], p["high"], log=p.get("log", False))
        return sum(_train_seed(base, s, data) for s in range(1, n_seeds + 1)) / n_seeds

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=storage, direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=6))
    study.optimize(objective, n_trials=n_trials)
    return study


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        s = run_peer(args.trials, storage=f"sqlite:///{tmp}/peer.db")
        print(f"{len(s.trials)} trials, best {s.best_value:.3f}")
