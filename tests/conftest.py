"""Fixtures and hooks only: a real MLflow SQLite store per test session, PostgreSQL databases, marks that
imply slow. Helpers that are not fixtures live in tests/helpers.py."""

from __future__ import annotations

import os

import pytest
import torch

from tests.helpers import PG, pg_version

# Marks that say what a test needs; each also makes the test slow, so `-m "not slow"` stays about a minute
# on 2 cores while `-m "not store"` (say) leaves out only that kind.
IMPLIES_SLOW = ("store", "training", "subprocess", "postgres", "browser")


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


# --- PostgreSQL: the machine's real server, one database per test, dropped afterwards ---


def _pg_admin():
    """A connection to the server; starts the local cluster once if it is down."""
    import subprocess

    import psycopg

    try:
        return psycopg.connect(autocommit=True, connect_timeout=5, **PG)
    except psycopg.OperationalError:
        version = pg_version()
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
