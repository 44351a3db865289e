"""The engine on real storages: PostgreSQL for several machines (heartbeats), journal files locally."""

from __future__ import annotations

import time

import optuna
import pytest
import yaml

from sal.core.names import ATTR_TRACKING_URI, TAG_KEY
from sal.queue.engine import KEY, STATUS, WORKER, StorageRef
from sal.queue.workqueue import Queue
from sal.spec.study_spec import StudySpec, build_sampler
from sal.sweeps.ablation import load_ablation, run_ablation
from tests.helpers import ABLATION_RUNS, TINY_BASE


@pytest.fixture()
def pg_url(pg_database):
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    return pg_database()


@pytest.mark.postgres
def test_an_ablation_runs_on_postgresql(tmp_path, pg_url, mlflow_uri):
    path = tmp_path / "pg.yaml"
    path.write_text(yaml.safe_dump({"name": "pg", "base": TINY_BASE, "seeds": 2, "baseline": "adam",
                                    "cells": {"adam": {"method.name": "base"}, "sam": {"method.name": "sam"}}}))
    spec, items = load_ablation(path)
    out = run_ablation(spec, items, ref=StorageRef.resolve(pg_url, spec.name, "ablation"), uri=mlflow_uri)
    assert out["states"] == {"COMPLETE": 4}
    study = optuna.load_study(study_name="pg", storage=pg_url)  # readable by plain Optuna
    assert sorted(t.user_attrs[KEY] for t in study.trials) == sorted(i.key for i in items)


@pytest.mark.postgres
def test_heartbeats_fail_a_silent_remote_worker_and_queue_its_trial_again(pg_url):
    ref = StorageRef(pg_url, heartbeat_s=1)  # grace period: 3 s
    queue = Queue(ref, "beats")
    queue.study.enqueue_trial({}, user_attrs={KEY: "cell|seed=1"})
    [(tid, _)] = queue.claim().trials
    queue.storage.set_trial_user_attr(tid, WORKER, "another-machine:4242")  # not this host: only heartbeats tell
    queue.storage.record_heartbeat(tid)
    assert queue.reap() == []  # still within its grace period
    time.sleep(4)
    queue.reap()
    trials = queue.study.get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "WAITING"]
    assert trials[1].user_attrs[KEY] == "cell|seed=1"
    assert trials[1].system_attrs["failed_trial"] == 0


def test_a_dead_local_worker_is_reaped_on_a_journal(tmp_path):
    queue = Queue(StorageRef(str(tmp_path / "j.journal")), "local")
    queue.study.enqueue_trial({}, user_attrs={KEY: "cell|seed=1"})
    [(tid, _)] = queue.claim().trials
    import socket

    queue.storage.set_trial_user_attr(tid, WORKER, f"{socket.gethostname()}:999999")  # no such pid
    assert queue.reap() == [0]
    trials = queue.study.get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "WAITING"]
    assert trials[0].user_attrs[STATUS] == "worker died"


def test_each_worker_samples_with_its_own_seed():
    spec = StudySpec(name="s", space={"method.rho": {"low": 1e-4, "high": 1e-2}})

    def first_draw(worker: int) -> float:
        return optuna.create_study(sampler=build_sampler(spec, worker)).ask().suggest_float("x", 0, 1)

    assert first_draw(0) == first_draw(0)  # seeded
    assert len({first_draw(i) for i in range(3)}) == 3  # but not the same seed in every worker


def test_an_ablation_and_a_study_cannot_share_a_name_in_one_storage(tmp_path):
    from sal.spec.config import SpecError

    ref = StorageRef(str(tmp_path / "shared.journal"))
    Queue(ref, "quick", kind="ablation")
    with pytest.raises(SpecError, match="already holds the ablation 'quick'"):
        Queue(ref, "quick", kind="study")
    assert StorageRef.resolve(None, "quick", "ablation").url != StorageRef.resolve(None, "quick", "study").url


def test_sal_worker_joins_a_queued_ablation_and_logs_where_the_launcher_logs(tmp_path, mlflow_uri, capsys):
    from sal.cli import main
    from sal.sweeps.ablation import queue_grid
    from sal.tracking.store import runs_frame

    path = tmp_path / "joined.yaml"
    path.write_text(yaml.safe_dump({"name": "joined", "base": TINY_BASE, "seeds": 2, "baseline": "adam",
                                    "cells": {"adam": {"method.name": "base"}, "sam": {"method.name": "sam"}}}))
    spec, items = load_ablation(path)
    ref = StorageRef(str(tmp_path / "q.journal"))
    queue_grid(ref, spec, items, retry_failed=False, uri=mlflow_uri)  # a launcher queued it and went away
    assert main(["worker", "joined", "--storage", ref.url]) == 0  # no --tracking-uri: the queue's
    assert f"MLflow {mlflow_uri}" in capsys.readouterr().out
    assert Queue(ref, "joined").counts() == {"COMPLETE": 4}
    runs = runs_frame(mlflow_uri, ["sal-ablation-joined"], filter_string=ABLATION_RUNS)
    assert sorted(runs[f"tags.{TAG_KEY}"]) == sorted(i.key for i in items)


def test_sal_worker_errors_name_the_fix(tmp_path, capsys):
    from sal.cli import main

    journal = tmp_path / "q.journal"
    assert main(["worker", "nope", "--storage", str(journal)]) == 2
    assert "fix:" in capsys.readouterr().err and not journal.exists()
    queue = Queue(StorageRef(str(journal)), "secretive", kind="ablation")
    queue.study.set_user_attr(ATTR_TRACKING_URI, "postgresql://u:***@db/mlflow")  # as a launcher masked it
    assert main(["worker", "secretive", "--storage", str(journal)]) == 2
    err = capsys.readouterr().err
    assert "pass --tracking-uri" in err and "***" in err
    assert main(["worker", "secretive", "--storage", str(journal), "--workers", "0"]) == 2


def test_a_zombie_worker_counts_as_dead():
    import subprocess
    import sys

    from sal.queue.engine import alive

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.time() + 30
    while alive(child.pid) and time.time() < deadline:  # exited but not waited for: a zombie
        time.sleep(0.05)
    assert not alive(child.pid) and child.poll() == 0  # poll() reaps it only now
    import os

    assert alive(os.getpid())


def test_a_trial_claimed_by_a_worker_killed_before_it_signed_is_queued_again(tmp_path):
    # A claim is two writes: WAITING -> RUNNING, then the worker's name. A worker killed between them left
    # a RUNNING trial no reaper could attribute, and the next launcher waited for it forever (seen in CI).
    from optuna.trial import TrialState

    queue = Queue(StorageRef(str(tmp_path / "q.journal")), "orphan")
    queue.study.enqueue_trial({}, user_attrs={KEY: "adam|digits||h|seed=1"})
    queue.storage.set_trial_state_values(queue.trial_id(0), TrialState.RUNNING)  # killed here
    assert queue.reap() == []  # within the grace a live claimer may still be writing its name
    queue.orphan_grace_s = 0.0
    assert queue.reap() == [0]
    trials = queue.trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[0].user_attrs[STATUS] == "worker died" and trials[1].user_attrs[KEY] == "adam|digits||h|seed=1"
