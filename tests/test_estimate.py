"""`--dry-run` says what a sweep costs: runs, epochs and seconds per epoch measured by one timed epoch
per (model, data, device), summed per preset; it writes nothing."""

from __future__ import annotations

import re

import yaml

from sal.cli import main
from sal.queue.estimate import estimate
from sal.spec.config import validate_run
from tests.helpers import TINY_BASE


def test_one_timed_epoch_per_model_data_and_device_scales_to_the_grid():
    mlp = validate_run({**TINY_BASE, "train": {"epochs": 3, "batch_size": 32}})
    sam = validate_run({**TINY_BASE, "method": {"name": "sam"}, "train": {"epochs": 5, "batch_size": 32}})
    cnn = validate_run({**TINY_BASE, "model": {"name": "cnn", "width": 4}})
    groups = estimate([(mlp, 4), (sam, 2), (cnn, 3)])
    assert len(groups) == 2  # mlp's two cells share their timed epoch
    by_model = {g.model.split()[0]: g for g in groups}
    assert (by_model["mlp"].runs, by_model["mlp"].epochs) == (6, 4 * 3 + 2 * 5)
    assert (by_model["cnn"].runs, by_model["cnn"].epochs) == (3, 3 * 2)
    for g in groups:
        assert 0 < g.seconds_per_epoch < 30 and g.seconds == g.epochs * g.seconds_per_epoch and g.device == "cpu"


def test_ablate_dry_run_prints_the_estimate_and_writes_nothing(tmp_path, capsys, monkeypatch):
    """Before: the cells and their count only."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "est.yaml"
    path.write_text(yaml.safe_dump({"name": "est", "base": TINY_BASE, "seeds": 3, "baseline": "a",
                                    "cells": {"a": {"method.name": "base"}, "b": {"method.name": "sam"}}}))
    assert main(["ablate", str(path), "--dry-run", "--storage", str(tmp_path / "q.journal")]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "s/epoch" in x)
    assert "6 runs, 12 epochs x" in line and "(cpu)" in line
    assert re.search(r"total: 6 runs, 12 epochs, \d+ s", out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["est.yaml"]


def test_study_and_compare_dry_runs_print_an_estimate(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study = tmp_path / "st.yaml"
    study.write_text(yaml.safe_dump({"name": "st", "base": TINY_BASE, "seeds": 2, "n_trials": 5,
                                     "space": {"optim.lr": {"low": 1e-4, "high": 1e-2, "log": True}}}))
    assert main(["study", "run", str(study), "--dry-run"]) == 0
    assert "total: 10 runs, 20 epochs" in capsys.readouterr().out
    compare = tmp_path / "cmp.yaml"
    compare.write_text(yaml.safe_dump({"name": "cmp", "base": TINY_BASE,
                                       "methods": {"adam": {"method.name": "base"}, "sam": {"method.name": "sam"}},
                                       "tuning": {"trials": 2, "seeds": 1}, "evaluation": {"seeds": 3},
                                       "analysis": {"treatment": "sam", "contrasts": [["sam", "adam"]]}}))
    assert main(["compare", str(compare), "--dry-run"]) == 0
    assert "total: 10 runs, 20 epochs" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cmp.yaml", "st.yaml"]


def test_a_dry_run_whose_data_cannot_be_read_exits_2(tmp_path, capsys):
    root = tmp_path / "imgs"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        (root / cls / "x.jpg").write_bytes(b"not an image")
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"name": "bad", "cells": {"a": {"method.name": "base"}},
                                    "base": {"data": {"name": "imagefolder", "root": str(root)},
                                             "model": {"name": "cnn", "width": 4}, "train": {"epochs": 1}}}))
    assert main(["ablate", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "one timed epoch of cnn on imagefolder failed (UnidentifiedImageError" in err and "resume" not in err
