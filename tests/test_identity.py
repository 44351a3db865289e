"""A run is its configuration: changed settings train again, reports read only the current definition,
and a queue that says "done" is checked against the MLflow store it will be reported from."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from sal.cli import main
from sal.core.names import ATTR_PLAN_HASH, TAG_PLAN_HASH
from sal.queue.engine import StorageRef
from sal.sweeps.ablation import load_ablation, run_ablation
from sal.tracking.store import runs_frame
from tests.helpers import ABLATION_RUNS, TINY_BASE

CELLS = {"adam": {"method.name": "base"}, "sal": {"method.name": "sal", "method.warmup": 0}}


def _write(tmp_path, name, **fields):
    doc = {"name": name, "base": TINY_BASE, "seeds": 2, "cells": CELLS, **fields}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _report(uri, name, out, *extra):
    return main(["--tracking-uri", uri, "report", name, "--out", str(out), "--no-figures", *extra])


@pytest.mark.store
def test_changed_settings_train_again_and_the_report_ignores_the_old_runs(tmp_path, mlflow_uri):
    path, ref = _write(tmp_path, "relaunch"), StorageRef(str(tmp_path / "q.journal"))
    first = run_ablation(*load_ablation(path), ref=ref, uri=mlflow_uri)
    assert len(first["queue"]["queued"]) == 4
    # old main: "4 done", nothing trained, and the report paired the old epochs
    spec, items = load_ablation(path, {"train.epochs": 3})
    second = run_ablation(spec, items, ref=ref, uri=mlflow_uri)
    assert len(second["queue"]["queued"]) == 4 and second["queue"]["done"] == []
    # unchanged settings are still skipped
    assert len(run_ablation(spec, items, ref=ref, uri=mlflow_uri)["queue"]["done"]) == 4
    # more seeds at a new lr: every seed trains at the new lr, none is reused from the old one
    spec, items = load_ablation(path, {"train.epochs": 3, "optim.lr": 0.01}, seeds=3)
    third = run_ablation(spec, items, ref=ref, uri=mlflow_uri)
    assert len(third["queue"]["queued"]) == 6
    runs = runs_frame(mlflow_uri, ["sal-ablation-relaunch"], ABLATION_RUNS)
    assert len(runs) == 4 + 4 + 6
    assert _report(mlflow_uri, "relaunch", tmp_path / "r") == 0
    summary = pd.read_csv(tmp_path / "r" / "summary.csv")
    assert (summary["n"] == 3).all()
    md = (tmp_path / "r" / "report.md").read_text()
    assert "8 run(s) of superseded configurations" in md


@pytest.mark.store
def test_a_queue_done_in_another_mlflow_store_trains_again(tmp_path, mlflow_uri):
    path, ref = _write(tmp_path, "moved"), StorageRef(str(tmp_path / "q.journal"))
    run_ablation(*load_ablation(path), ref=ref, uri=mlflow_uri)
    new_store = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    # old main: nothing trained, and the report said "run sal ablate first"
    out = run_ablation(*load_ablation(path), ref=ref, uri=new_store)
    assert len(out["queue"]["missing_run"]) == 4 and out["states"]["COMPLETE"] == 8
    assert len(runs_frame(new_store, ["sal-ablation-moved"], ABLATION_RUNS)) == 4
    assert _report(new_store, "moved", tmp_path / "r") == 0
    again = run_ablation(*load_ablation(path), ref=ref, uri=new_store)  # and now it is done there
    assert len(again["queue"]["done"]) == 4 and not again["queue"]["missing_run"]


@pytest.mark.store
def test_the_plan_is_stored_on_the_queue_and_every_run_and_the_report_says_if_it_departs(tmp_path, mlflow_uri):
    cells = {**CELLS, "sam": {"method.name": "sam"}, "noise": {"method.name": "sal_noise_only", "method.warmup": 0}}
    path = _write(tmp_path, "planned", cells=cells, analysis={"families": "standard", "metrics": ["test/acc"]})
    ref = StorageRef(str(tmp_path / "q.journal"))
    spec, items = load_ablation(path)
    run_ablation(spec, items, ref=ref, uri=mlflow_uri)
    import optuna

    study = optuna.load_study(study_name="planned", storage=ref.open())
    plan_hash = study.user_attrs[ATTR_PLAN_HASH]
    runs = runs_frame(mlflow_uri, ["sal-ablation-planned"], ABLATION_RUNS)
    assert set(runs[f"tags.{TAG_PLAN_HASH}"]) == {plan_hash}
    assert _report(mlflow_uri, "planned", tmp_path / "r") == 0
    summary = pd.read_csv(tmp_path / "r" / "summary.csv")
    compared = summary[summary["verdict"] != "reference"]
    assert sorted(zip(compared["family"], compared["method"], compared["baseline"])) == [
        ("ablations", "sal", "noise"), ("baselines", "sal", "adam"), ("baselines", "sal", "sam")]
    assert "as planned (plan hash " + plan_hash in (tmp_path / "r" / "report.md").read_text()
    assert _report(mlflow_uri, "planned", tmp_path / "r2", "--rope", "0.01", "--correction", "bh") == 0
    md = (tmp_path / "r2" / "report.md").read_text()
    assert "departs from the plan" in md and "rope: 0.01 (command line) instead of the plan's 0.002" in md
    assert "correction: Benjamini-Hochberg" in md  # old main said Holm under --correction bh


def test_a_plan_naming_a_missing_cell_is_a_spec_error(tmp_path, capsys):
    path = _write(tmp_path, "badplan", analysis={"families": {"baselines": ["adam", "swa"]}})
    assert main(["ablate", str(path), "--dry-run"]) == 2
    assert "family 'baselines' names cell 'swa', which the ablation does not have" in capsys.readouterr().err
