"""Shared fixtures: a real MLflow SQLite store per test session, tiny run specs."""

from __future__ import annotations

import os

import pytest
import torch

from sal.config import validate_run

# Marks that say what a test needs; each also makes the test slow, so `-m "not slow"` stays about a minute
# on 2 cores while `-m "not store"` (say) leaves out only that kind.
IMPLIES_SLOW = ("store", "training")


@pytest.hookimpl(tryfirst=True)  # before pytest's own -m deselection reads the marks
def pytest_collection_modifyitems(items):
    for item in items:
        if any(item.get_closest_marker(name) for name in IMPLIES_SLOW):
            item.add_marker(pytest.mark.slow)


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


# --- PostgreSQL: the machine's real server, one database per test, dropped afterwards ---
PG = dict(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")


def _pg_version() -> str | None:
    root = "/etc/postgresql"
    return sorted(os.listdir(root))[-1] if os.path.isdir(root) and os.listdir(root) else None


def _pg_admin():
    """A connection to the server; starts the local cluster once if it is down."""
    import subprocess

    import psycopg

    try:
        return psycopg.connect(autocommit=True, connect_timeout=5, **PG)
    except psycopg.OperationalError:
        version = _pg_version()
        if version is None:
            pytest.skip("no PostgreSQL server on 127.0.0.1:5432 and no local cluster to start")
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"], capture_output=True)
        try:
            return psycopg.connect(autocommit=True, connect_timeout=5, **PG)
        except psycopg.OperationalError as err:
            pytest.skip(f"PostgreSQL on 127.0.0.1:5432 is down and could not be started: {err}")


@pytest.fixture()
def pg_database():
    """A factory of fresh PostgreSQL databases (URLs); every one is dropped when the test ends, over a new
    connection (a test may restart the server)."""
    import uuid

    names: list[str] = []

    def create() -> str:
        name = f"sal_test_{uuid.uuid4().hex[:10]}"
        with _pg_admin() as admin:
            admin.execute(f"CREATE DATABASE {name}")
        names.append(name)
        return f"postgresql://{PG['user']}@{PG['host']}:{PG['port']}/{name}"

    yield create
    with _pg_admin() as admin:
        for name in names:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def restart_postgresql() -> None:
    import subprocess

    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", _pg_version(), "main", "restart"], check=True,
                   capture_output=True, timeout=120)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
