"""Shared fixtures: a real MLflow SQLite store per test session, tiny run specs."""

from __future__ import annotations

import os

import pytest
import torch

from sal.config import validate_run

# Two cores: keep torch from oversubscribing them when pytest runs workers.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory) -> str:
    """One real SQLite tracking store for the session (creating one runs MLflow's migrations: seconds)."""
    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    return f"sqlite:///{path}"


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


def start_until(cmd: list[str], journal, study: str, *, complete: int, timeout: float = 120):
    """Start ``cmd`` in its own process group and return it once the study in ``journal`` has at least
    ``complete`` finished trials and one RUNNING (a moment to kill or interrupt it mid-work)."""
    import subprocess
    import time

    import optuna

    from sal.engine import StorageRef

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
