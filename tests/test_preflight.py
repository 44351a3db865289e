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
from sal.core.names import METRIC_STRESS
from tests.helpers import TINY_BASE


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


@pytest.mark.subprocess
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


# --- late errors found before anything is written ----------------------------------------------
def _study_file(tmp_path, **fields):
    path = tmp_path / "st.yaml"
    path.write_text(yaml.safe_dump({"name": "st", "base": TINY_BASE, "seeds": 1, "n_trials": 2,
                                    "pruner": {"name": "none"},
                                    "space": {"optim.lr": {"low": 1e-4, "high": 1e-2, "log": True}}, **fields}))
    return path


def test_an_unknown_objective_metric_is_refused_before_any_trial_trains(tmp_path, capsys):
    """Before: both trials trained, then every value was NaN (the metric was never logged)."""
    path = _study_file(tmp_path, objective={"metric": "val/accc"})
    code = main(["--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "study", "run", str(path), "--storage",
                 str(tmp_path / "q.journal")])
    err = capsys.readouterr().err
    assert code == 2 and "objectives.0.metric='val/accc'" in err and "val/acc" in err and "train/loss" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["st.yaml"]


def test_known_metrics_pass_including_method_and_analysis_ones():
    from sal.metrics.metricnames import unknown_metric

    for name in ("val/acc", "val/loss", "train/loss", "test/acc", "time/epoch_s", METRIC_STRESS, "sal/n_noise",
                 "sharpness/trace", "time/sharpness_trace_s", "mem/peak_mb"):
        assert unknown_metric(name) is None, name
    assert "val/acc" in unknown_metric("val/accc")


@pytest.mark.parametrize("setting", [["--set", "train.device=cuda:3"], ["--gpus", "3"]])
def test_an_absent_gpu_is_refused_before_anything_is_written(tmp_path, spec_file, capsys, setting):
    """Before: a FAILED MLflow run (and a journal) were created first, then the device error."""
    import torch

    if torch.cuda.device_count() > 3:
        pytest.skip("this machine has a cuda:3")
    code, _ = _ablate(tmp_path, spec_file, extra=setting)
    err = capsys.readouterr().err
    assert code == 2 and "cuda:3" in err and "fix:" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pre.yaml"]


def test_train_refuses_an_absent_gpu_without_creating_a_run(tmp_path, capsys):
    import torch

    if torch.cuda.device_count() > 3:
        pytest.skip("this machine has a cuda:3")
    assert main(["--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "train", "--set", "train.device=cuda:3"]) == 2
    assert "train.device='cuda:3'" in capsys.readouterr().err and list(tmp_path.iterdir()) == []


def _journal_of_one_run(tmp_path, spec_file):
    journal = tmp_path / "q.journal"
    code, _ = _ablate(tmp_path, spec_file, storage=str(journal))
    assert code == 0
    return journal


@pytest.mark.store
def test_a_damaged_journal_exits_2_naming_file_and_line_and_is_left_unchanged(tmp_path, spec_file, capsys):
    """Before: JSONDecodeError + 're-run to resume' (exit 1). (A cut last line, the damage of a crash, is
    recovered from: tests/test_journal.py.)"""
    import hashlib

    journal = _journal_of_one_run(tmp_path, spec_file)
    lines = journal.read_bytes().splitlines(keepends=True)
    lines[2] = b'{"op_code": 5, "worker_id": "x", "tri\n'
    bad = 3
    journal.write_bytes(b"".join(lines))
    before = hashlib.sha256(journal.read_bytes()).hexdigest()
    capsys.readouterr()
    code, _ = _ablate(tmp_path, spec_file, storage=str(journal), extra=["--seeds", "3"])
    err = capsys.readouterr().err
    assert code == 2 and f"{journal} line {bad}" in err and "fix:" in err and "resume" not in err
    assert hashlib.sha256(journal.read_bytes()).hexdigest() == before


def test_a_storage_that_is_a_folder_exits_2(tmp_path, spec_file, capsys):
    folder = tmp_path / "q.journal"
    folder.mkdir()
    code, _ = _ablate(tmp_path, spec_file, storage=str(folder))
    err = capsys.readouterr().err
    assert code == 2 and f"--storage={str(folder)!r}" in err and "is a folder" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pre.yaml", "q.journal"]


@pytest.mark.parametrize("kind", ["text_file", "folder", "empty_path", "below_a_file", "sqlite_storage"])
def test_a_sqlite_url_onto_a_non_database_exits_2_naming_the_setting(tmp_path, spec_file, capsys, kind):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n" * 20)
    uri, storage, setting = {
        "text_file": (f"sqlite:///{notes}", None, "--tracking-uri"),
        "folder": (f"sqlite:///{tmp_path}", None, "--tracking-uri"),
        "empty_path": ("sqlite:///", None, "--tracking-uri"),
        "below_a_file": (f"sqlite:///{notes}/mlflow.db", None, "--tracking-uri"),
        "sqlite_storage": (None, f"sqlite:///{notes}", "--storage"),
    }[kind]
    code, _ = _ablate(tmp_path, spec_file, uri=uri, storage=storage)
    err = capsys.readouterr().err
    assert code == 2 and f"{setting}=" in err and "fix:" in err
    assert notes.read_text() == "my notes\n" * 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "pre.yaml"]
