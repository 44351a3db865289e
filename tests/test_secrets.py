"""A password in the storage or tracking URL appears nowhere: not on stdout or stderr, not in log lines, report
files, MLflow params, tags or artifacts, nor in Optuna's attrs (both databases are dumped and searched)."""

from __future__ import annotations

import subprocess
import sys
import uuid

import psycopg
import pytest
import yaml

from tests.conftest import PG
from tests.test_ablation import TINY_BASE


def test_mask_url_hides_only_the_password():
    from sal.redact import mask_text, mask_url

    assert mask_url("postgresql://alice:s3cr%40t@db.lab:5432/sal") == "postgresql://alice:***@db.lab:5432/sal"
    assert mask_url("postgresql://alice@db/sal") == "postgresql://alice@db/sal"
    assert mask_url("sqlite:////home/a/mlflow.db") == "sqlite:////home/a/mlflow.db"
    assert mask_url("http://u:p@host:5000") == "http://u:***@host:5000"
    text = "could not open 'postgresql+psycopg://bob:hunter2@10.0.0.1/x' nor http://c:d@e"
    assert mask_text(text) == "could not open 'postgresql+psycopg://bob:***@10.0.0.1/x' nor http://c:***@e"


@pytest.fixture()
def secret_databases():
    """A role with a password owning two fresh databases (Optuna's and MLflow's); dropped afterwards.
    The local server trusts connections, so the password is not checked: it only has to stay hidden."""
    tag = uuid.uuid4().hex[:10]
    role, password = f"sal_secret_{tag}", f"pw-{uuid.uuid4().hex}"
    names = [f"sal_optuna_{tag}", f"sal_mlflow_{tag}"]
    admin = psycopg.connect(autocommit=True, **PG)
    admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    for name in names:
        admin.execute(f"CREATE DATABASE {name} OWNER {role}")
    try:
        yield password, [f"postgresql://{role}:{password}@{PG['host']}:{PG['port']}/{n}" for n in names], names
    finally:
        for name in names:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"DROP ROLE IF EXISTS {role}")
        admin.close()


def _sal(tmp_path, *args):
    proc = subprocess.run([sys.executable, "-m", "sal", "-v", *args], capture_output=True, text=True, cwd=tmp_path,
                          timeout=400)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.slow
def test_a_password_in_storage_and_tracking_urls_appears_nowhere(tmp_path, secret_databases):
    password, (storage, tracking), names = secret_databases
    spec = tmp_path / "hush.yaml"
    spec.write_text(yaml.safe_dump({"name": "hush", "base": TINY_BASE, "seeds": 3, "baseline": "adam",
                                    "cells": {"adam": {"method.name": "base"}, "sam": {"method.name": "sam"}}}))
    study = tmp_path / "hushs.yaml"
    study.write_text(yaml.safe_dump({"name": "hushs", "base": {**TINY_BASE, "method": {"name": "sal", "warmup": 0}},
                                     "seeds": 1, "n_trials": 2, "pruner": {"name": "none"},
                                     "space": {"method.rho": {"low": 1e-4, "high": 1e-2, "log": True}}}))
    outputs = []
    for args in (["ablate", str(spec), "--storage", storage, "--tracking-uri", tracking],
                 ["report", "hush", "--out", "rep", "--tracking-uri", tracking],
                 ["study", "run", str(study), "--storage", storage, "--tracking-uri", tracking],
                 ["study", "status", "hushs", "--storage", storage],
                 ["study", "best", "hushs", "--storage", storage, "--out", "best.yaml"]):
        code, output = _sal(tmp_path, *args)
        assert code == 0, output
        outputs.append(output)
    # and an error about the URL (a database that does not exist) names it masked
    code, output = _sal(tmp_path, "ablate", str(spec), "--storage", storage + "_missing", "--tracking-uri", tracking)
    assert code == 2 and ":***@" in output
    outputs.append(output)
    assert "queue postgresql://" in outputs[0] and ":***@" in outputs[0]  # the URL is shown, masked
    for output in outputs:
        assert password not in output
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {"report.md", "report.html", "summary.csv", "best.yaml"} <= {p.name for p in written}
    assert any(p.name == "spec.yaml" for p in written)  # MLflow's artifacts land here (a database store's default)
    assert [p for p in written if password.encode() in p.read_bytes()] == []
    assert ":***@" in (tmp_path / "rep" / "report.md").read_text()
    for name in names:  # every MLflow param, tag and metric, every Optuna attr
        dump = subprocess.run(["pg_dump", "-h", PG["host"], "-p", str(PG["port"]), "-U", PG["user"], name],
                              capture_output=True, text=True, timeout=120, check=True).stdout
        assert "hush" in dump and password not in dump
