"""Every failure is one clear message (exit 2) within seconds, before any compute, with nothing written:
unreachable or missing storages and tracking stores, unknown URL schemes, bad --set literals and --filters."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest
import yaml

from sal.cli import main
from tests.test_ablation import TINY_BASE


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


@pytest.fixture()
def spec_file(tmp_path):
    path = tmp_path / "pre.yaml"
    path.write_text(yaml.safe_dump({"name": "pre", "base": TINY_BASE, "seeds": 2,
                                    "cells": {"adam": {"method.name": "base"}}}))
    return path


def _ablate(tmp_path, spec_file, *, storage=None, uri=None, extra=()):
    uri = uri or f"sqlite:///{tmp_path / 'mlflow.db'}"
    storage = storage or str(tmp_path / "q.journal")
    start = time.monotonic()
    code = main(["--tracking-uri", uri, "ablate", str(spec_file), "--storage", storage, *extra])
    return code, time.monotonic() - start


@pytest.mark.parametrize("storage,needle", [
    ("postgresql://postgres@127.0.0.1:{port}/sal", "start the database server"),
    ("postgresql://postgres@127.0.0.1:5432/sal_no_such_database_x", "does not exist"),
    ("postgresql+nosuchdriver://postgres@127.0.0.1:5432/sal", "is not a database URL"),
])
def test_a_storage_that_cannot_be_opened_exits_2_before_anything_is_created(tmp_path, spec_file, capsys, storage,
                                                                            needle):
    storage = storage.format(port=_closed_port())
    code, seconds = _ablate(tmp_path, spec_file, storage=storage)
    err = capsys.readouterr().err
    assert code == 2 and seconds < 10
    assert f"--storage={storage!r}" in err and needle in err and "fix:" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pre.yaml"]  # no MLflow store, no empty experiment


def test_an_unknown_tracking_scheme_exits_2_and_writes_nothing(tmp_path, spec_file, capsys):
    code, _ = _ablate(tmp_path, spec_file, uri="foo://x")
    err = capsys.readouterr().err
    assert code == 2 and "--tracking-uri='foo://x' is not a tracking store" in err and "fix:" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pre.yaml"]  # the journal was not created either


@pytest.mark.slow
def test_an_unreachable_tracking_server_fails_in_seconds_not_minutes(tmp_path, spec_file):
    uri = f"http://127.0.0.1:{_closed_port()}"
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "sal", "ablate", str(spec_file), "--storage",
                           str(tmp_path / "q.journal"), "--tracking-uri", uri],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2 and time.monotonic() - start < 20  # start-up of python + torch included
    assert f"--tracking-uri={uri!r}: no MLflow tracking server answers" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pre.yaml"]


def test_a_bad_set_literal_names_the_key(tmp_path, spec_file, capsys):
    code, _ = _ablate(tmp_path, spec_file, extra=["--set", "optim.lr=[1,"])
    err = capsys.readouterr().err
    assert code == 2 and "--set optim.lr='[1,': the value is not a YAML literal" in err and "fix:" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pre.yaml"]


def test_report_errors_before_reading_or_writing(tmp_path, mlflow_uri, capsys):
    missing = tmp_path / "nowhere.db"
    assert main(["--tracking-uri", f"sqlite:///{missing}", "report", "x", "--out", str(tmp_path / "r")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not missing.exists() and not (tmp_path / "r").exists()  # no empty store created by a report
    assert main(["--tracking-uri", mlflow_uri, "report", "x", "--out", str(tmp_path / "r"),
                 "--filter", "tags.dataset = "]) == 2
    err = capsys.readouterr().err
    assert "--filter='tags.dataset = '" in err and "Invalid clause" in err and "fix:" in err
    assert list(tmp_path.iterdir()) == []
