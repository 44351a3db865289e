"""What several test files share that is not a fixture: tiny specs, spec-file writers, process and
PostgreSQL helpers, the packed/alone and checkpoint comparisons. Tests import from here, never from
another test file (conftest.py keeps only fixtures and hooks)."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
import yaml

from sal.core.names import (
    EVENT_METRICS,
    RECORD_PLAN,
    TAG_ABLATION,
    TAG_BASELINE,
    TAG_CELL,
    TAG_COMPUTE_DTYPE,
    TAG_EVENTS,
    TAG_KIND,
    TAG_STATUS,
)
from sal.spec.config import validate_run

if TYPE_CHECKING:
    from sal.training.run import TrainingRun

# --- run specs ---------------------------------------------------------------------------------------------


def tiny_spec(**sections):
    """A run on the synthetic set that trains in well under a second."""
    raw = {
        "data": {"name": "synthetic", "num_samples": 400},
        "model": {"name": "mlp", "width": 16},
        "train": {"epochs": 4, "batch_size": 32},
        "method": {"name": "base"},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value} if key != "method" else value
        else:
            raw[key] = value
    return validate_run(raw)


# runs_frame filters: the training runs of an ablation or a study (not the parent runs that group them)
ABLATION_RUNS = f"tags.`{TAG_KIND}` = 'ablation'"
STUDY_RUNS = f"tags.`{TAG_KIND}` = 'study'"

# The base run of the tiny ablations (two epochs on 300 synthetic samples)
TINY_BASE = {"data": {"name": "synthetic", "num_samples": 300}, "model": {"name": "mlp", "width": 8},
             "method": {"name": "base"}, "train": {"epochs": 2, "batch_size": 32}}


def write_ablation(tmp_path, name, **fields) -> Path:
    """A tiny ablation file (cells adam and sal on TINY_BASE, 3 seeds), ``fields`` replacing its keys."""
    doc = {"name": name, "base": TINY_BASE, "seeds": 3,
           "cells": {"adam": {"method.name": "base"}, "sal": {"method.name": "sal", "method.warmup": 0}}}
    doc.update(fields)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


# The base run and space of the tiny studies
STUDY_BASE = {"data": {"name": "synthetic", "num_samples": 300}, "model": {"name": "mlp", "width": 8},
              "optim": {"lr": 0.01}, "method": {"name": "sal", "warmup": 1, "theta": 0.01},
              "train": {"epochs": 3, "batch_size": 32}}
STUDY_SPACE = {
    "method.rho": {"low": 1e-5, "high": 1e-2, "log": True},
    "method.theta": {"low": 1e-4, "high": 5e-2, "log": True},
    "method.s_noise": {"low": 1e-3, "high": 5e-2, "log": True},
    "method.s_yield": {"low": 2e-3, "high": 1e-1, "log": True},
    "method.delta": {"low": 1e-8, "high": 1e-4, "log": True},
    "method.lambda": {"low": 1e-6, "high": 1e-2, "log": True},
    "method.sigma_y": {"low": 1e-3, "high": 1e-1, "log": True},
}


def write_study(tmp_path, name, **fields) -> Path:
    """A tiny study file (5 TPE trials of 2 seeds on STUDY_BASE); ``fields`` replace its keys, None drops one."""
    doc = {"name": name, "base": STUDY_BASE, "space": STUDY_SPACE, "seeds": 2, "n_trials": 5,
           "objective": {"metric": "val/acc", "aggregate": "cvar", "cvar_alpha": 0.5},
           "sampler": {"name": "tpe", "seed": 1}, "pruner": {"name": "none"}}
    doc.update(fields)
    doc = {k: v for k, v in doc.items() if v is not None}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


# --- processes ---------------------------------------------------------------------------------------------


def start_until(cmd: list[str], journal, study: str, *, complete: int, timeout: float = 120):
    """Start ``cmd`` in its own process group and return it once the study in ``journal`` has at least
    ``complete`` finished trials and one RUNNING (a moment to kill or interrupt it mid-work)."""
    import subprocess
    import time

    import optuna

    from sal.queue.engine import StorageRef

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline, states = time.time() + timeout, None
    while time.time() < deadline:
        time.sleep(0.3)
        if journal.exists():
            try:
                trials = optuna.load_study(study_name=study, storage=StorageRef(str(journal)).open()).trials
            except KeyError:  # the study is not created yet
                continue
            states = [t.state.name for t in trials]
            if states.count("COMPLETE") >= complete and "RUNNING" in states:
                return proc
    proc.kill()
    _, err = proc.communicate()
    raise AssertionError(f"{study}: no running trial after {complete} complete ones within {timeout} s (last "
                         f"seen: {states}); its stderr ended with: {err[-2000:]}")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(proc, port: int, *, timeout: float = 300) -> None:
    """Wait for ``sal ui`` (``proc``) to answer on ``port``: the event is the server's health answer (a first
    start migrates a new store, slow on a busy machine); fails with the process's output if it exits first."""
    import time
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise AssertionError(proc.stdout.read() if proc.poll() is not None else "no answer")


# --- PostgreSQL: the machine's real server (conftest's pg_database fixture makes one database per test) ----
PG = dict(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")


def pg_version() -> str | None:
    root = "/etc/postgresql"
    return sorted(os.listdir(root))[-1] if os.path.isdir(root) and os.listdir(root) else None


def restart_postgresql() -> None:
    import subprocess

    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", pg_version(), "main", "restart"], check=True,
                   capture_output=True, timeout=120)


# --- packed seeds against seeds trained alone --------------------------------------------------------------


def train_alone(spec):
    """The unpacked run and its final evaluated weights (SWA: the average)."""
    from sal.training.run import TrainingRun

    run = TrainingRun(spec)
    while not run.done:
        run.step()
    result = run.finish()
    model = run.method.eval_model()
    model = getattr(model, "module", model)  # SWA's AveragedModel wraps the averaged network
    return result, {**dict(model.named_parameters()), **dict(model.named_buffers())}


def assert_same_history(packed_result, alone_result):
    """A packed seed's result is the seed's result trained alone: events and accuracies exactly, losses and
    other metrics up to round-off (wall-clock readings left out)."""
    assert packed_result.status == alone_result.status
    assert len(packed_result.history) == len(alone_result.history)
    for p_row, a_row in zip(packed_result.history, alone_result.history):
        assert set(p_row) == set(a_row)
        for key, a in a_row.items():
            if key.startswith("time/"):
                continue
            if key.endswith("acc") or key in ("epoch", *EVENT_METRICS):
                assert p_row[key] == a, (key, p_row["epoch"], p_row[key], a)
            else:
                assert p_row[key] == pytest.approx(a, rel=1e-5, abs=1e-6), (key, p_row["epoch"])
    for key in ("test/acc", "test/top5"):
        assert packed_result.final[key] == alone_result.final[key]
    assert packed_result.final["test/loss"] == pytest.approx(alone_result.final["test/loss"], rel=1e-5)
    for key in ("sharpness/grad_norm",):  # computed packed: equal up to round-off
        assert (key in packed_result.final) == (key in alone_result.final)
        if key in alone_result.final:
            assert packed_result.final[key] == pytest.approx(alone_result.final[key], rel=1e-4)


# --- checkpoints: a resumed run against the uninterrupted one ----------------------------------------------


def timeless(metrics: dict) -> dict:
    """Everything but wall-clock and process-memory readings, which no two runs share."""
    return {k: v for k, v in metrics.items() if not k.startswith(("time/", "mem/"))}


def state_at_end(run: TrainingRun) -> dict:
    """The run's whole state after its last epoch (every generator, also those the metrics do not reveal)."""
    while not run.done:
        run.step()
    state = copy.deepcopy(run.state_dict())
    del state["train_s"]
    state["history"] = [timeless(row) for row in state["history"]]
    return state


def assert_same(a, b, where="state"):
    """Nested dicts, lists and tensors equal bit for bit."""
    assert type(a) is type(b), where
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    else:
        assert a == b or (a != a and b != b), where  # nan == nan here


# --- reports on chosen numbers: ablation runs written into MLflow without training -------------------------


def log_cells(uri, ablation, cells: dict[str, dict], *, seeds=10, baseline="adam", plan=None):
    """FINISHED ablation runs written straight into MLflow, per (cell, seed): cells[name] = {"acc": [per seed],
    "params": {...}, "events": [per seed] or one string, "metrics": {name: value or [per seed]}, "dtype": ...};
    ``plan``: the analysis block stored with them. No training: a report's statistics on chosen numbers."""
    from mlflow.entities import Metric, Param, RunTag

    from sal.spec.analysis import AnalysisSpec, resolve_plan
    from sal.tracking.store import client_for, ensure_experiment, set_experiment_record

    client = client_for(uri)
    exp = ensure_experiment(uri, f"sal-ablation-{ablation}")
    if plan is not None:
        methods = {cell: c["params"]["method.name"] for cell, c in cells.items()}
        resolved = resolve_plan(AnalysisSpec(**plan), methods, baseline=baseline)
        set_experiment_record(uri, f"sal-ablation-{ablation}", RECORD_PLAN, resolved.to_json())
    for cell, c in cells.items():
        for seed in range(1, seeds + 1):
            run = client.create_run(exp)
            events = c.get("events", "noise=;deform=;revert=")
            events = events[seed - 1] if isinstance(events, list) else events
            tags = {TAG_KIND: "ablation", TAG_ABLATION: ablation, TAG_CELL: cell, TAG_BASELINE: baseline,
                    "method": c["params"]["method.name"], "dataset": "digits", "seed": str(seed),
                    "config_hash": f"hash-{cell}", TAG_STATUS: "finished", TAG_EVENTS: events,
                    TAG_COMPUTE_DTYPE: c.get("dtype", "float32")}
            metrics = [Metric("test/acc", c["acc"][seed - 1], 0, 1), Metric("test/n_samples", 1000, 0, 1),
                       *(Metric(k, v[seed - 1] if isinstance(v, list) else v, 0, 1)
                         for k, v in c.get("metrics", {}).items())]
            params = [Param(k, str(v)) for k, v in {"optim.name": "adam", "optim.lr": 0.003, **c["params"]}.items()]
            client.log_batch(run.info.run_id, metrics=metrics, params=params,
                             tags=[RunTag(k, v) for k, v in tags.items()])
            client.set_terminated(run.info.run_id, "FINISHED")
