"""The right store: a queue keeps to its MLflow store, artifacts have a root every machine of a sweep
can reach, a query never creates a store, and a cell's parent run is RUNNING only once a seed trains."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from sal.cli import main
from sal.core.names import ATTR_TRACKING_URI, TAG_CELL, TAG_KIND
from sal.tracking.store import client_for, runs_frame
from tests.helpers import TINY_BASE


@pytest.fixture()
def spec_file(tmp_path):
    path = tmp_path / "rs.yaml"
    path.write_text(yaml.safe_dump({"name": "rs", "base": TINY_BASE, "seeds": 1, "baseline": "a",
                                    "cells": {"a": {"method.name": "base"}, "b": {"method.name": "sam"}}}))
    return path


@pytest.mark.store
def test_a_queue_refuses_another_mlflow_store_unless_told(tmp_path, spec_file, capsys):
    """Before: exit 0, every run trained again into the new store and the queue's sal.tracking_uri rewritten."""
    import optuna

    from sal.queue.engine import StorageRef

    first, second = (f"sqlite:///{tmp_path / n}" for n in ("first.db", "second.db"))
    journal = str(tmp_path / "q.journal")
    assert main(["--tracking-uri", first, "ablate", str(spec_file), "--storage", journal]) == 0
    capsys.readouterr()
    assert main(["--tracking-uri", second, "ablate", str(spec_file), "--storage", journal]) == 2
    err = capsys.readouterr().err
    assert first in err and second in err and "--new-tracking-store" in err
    assert not (tmp_path / "second.db").exists()
    attrs = optuna.load_study(study_name="rs", storage=StorageRef(journal).open()).user_attrs
    assert attrs[ATTR_TRACKING_URI] == first
    # told to: the grid trains into the new store, which the queue then records
    assert main(["--tracking-uri", second, "ablate", str(spec_file), "--storage", journal,
                 "--new-tracking-store"]) == 0
    frame = runs_frame(second, ["sal-ablation-rs"])
    assert sorted(frame[frame[f"tags.{TAG_KIND}"] == "ablation"][f"tags.{TAG_CELL}"]) == ["a", "b"]
    attrs = optuna.load_study(study_name="rs", storage=StorageRef(journal).open()).user_attrs
    assert attrs[ATTR_TRACKING_URI] == second


@pytest.mark.store
def test_the_same_store_written_relative_or_absolute_is_the_same(tmp_path, spec_file, monkeypatch):
    monkeypatch.chdir(tmp_path)
    journal = str(tmp_path / "q.journal")
    assert main(["--tracking-uri", "sqlite:///m.db", "ablate", str(spec_file), "--storage", journal]) == 0
    assert main(["--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "ablate", str(spec_file), "--storage",
                 journal]) == 0


def test_landscape_does_not_create_an_empty_store(tmp_path, capsys):
    """Before: `sal landscape` created an empty SQLite store (tables and all) for a mistyped path."""
    db = tmp_path / "typo.db"
    assert main(["--tracking-uri", f"sqlite:///{db}", "landscape", "anything"]) == 2
    assert "does not exist" in capsys.readouterr().err and not db.exists()


@pytest.mark.store
def test_a_parent_run_is_scheduled_until_its_first_seed_starts(tmp_path, spec_file):
    """Before: every cell's parent was RUNNING from the launch, while no seed of it trained."""
    from sal.sweeps import ablation
    from sal.tracking.store import LiveRun, experiment_name

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    spec, items = ablation.load_ablation(spec_file)
    parents = ablation._start_parents(uri, spec, items)
    client = client_for(uri)
    assert {client.get_run(r).info.status for r in parents.values()} == {"SCHEDULED"}
    first = items[0]
    with LiveRun(uri, experiment_name("ablation", spec.name), kind="ablation",
                 parent_run_id=parents[first.group]) as live:
        live.start(first.spec)
        statuses = {g: client.get_run(r).info.status for g, r in parents.items()}
    assert statuses[first.group] == "RUNNING"
    assert [s for g, s in statuses.items() if g != first.group] == ["SCHEDULED"]


def test_a_database_store_gets_an_absolute_artifact_root(monkeypatch):
    """Before: None, so MLflow used ./mlruns of whatever folder the command ran in, one per machine."""
    from sal.core.paths import REPO_ROOT
    from sal.tracking.store import artifact_root

    monkeypatch.delenv("SAL_ARTIFACT_ROOT", raising=False)
    assert artifact_root("postgresql://u@h/mlflow") == (REPO_ROOT / "mlflow" / "artifacts").as_uri()
    assert artifact_root("http://host:5000") is None  # the server decides
    monkeypatch.setenv("SAL_ARTIFACT_ROOT", "s3://bucket/sal")
    assert artifact_root("postgresql://u@h/mlflow") == "s3://bucket/sal"


@pytest.mark.postgres
def test_database_store_artifacts_go_to_the_artifact_root_not_the_working_folder(tmp_path, spec_file, pg_database):
    uri, root = pg_database(), tmp_path / "art"
    env = {**os.environ, "SAL_ARTIFACT_ROOT": str(root)}
    work = tmp_path / "elsewhere"
    work.mkdir()
    proc = subprocess.run([sys.executable, "-m", "sal", "--tracking-uri", uri, "ablate", str(spec_file),
                           "--storage", str(tmp_path / "q.journal")], cwd=work, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert list(work.iterdir()) == []  # no ./mlruns
    assert len([p for p in root.rglob("spec.yaml")]) == 2


@pytest.mark.postgres
def test_a_multi_machine_sweep_with_a_local_artifact_root_is_refused(tmp_path, spec_file, pg_database):
    storage, uri = pg_database(), pg_database()
    env = {k: v for k, v in os.environ.items() if k != "SAL_ARTIFACT_ROOT"}
    proc = subprocess.run([sys.executable, "-m", "sal", "--tracking-uri", uri, "ablate", str(spec_file),
                           "--storage", storage], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "artifact root" in proc.stderr and "SAL_ARTIFACT_ROOT" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rs.yaml"]
