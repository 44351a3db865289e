"""The engine on real storages: PostgreSQL for several machines (heartbeats), journal files locally."""

from __future__ import annotations

import time
import uuid

import optuna
import psycopg
import pytest
import yaml

from sal.ablation import load_ablation, run_ablation
from sal.engine import KEY, STATUS, WORKER, StorageRef, claim_next, open_study, reap_dead_workers
from sal.study_spec import StudySpec, build_sampler
from tests.test_ablation import TINY_BASE

PG = dict(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")


@pytest.fixture()
def pg_url():
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    name = f"sal_test_{uuid.uuid4().hex[:10]}"
    admin = psycopg.connect(autocommit=True, **PG)
    admin.execute(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql://{PG['user']}@{PG['host']}:{PG['port']}/{name}"
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def test_an_ablation_runs_on_postgresql(tmp_path, pg_url, mlflow_uri):
    path = tmp_path / "pg.yaml"
    path.write_text(yaml.safe_dump({"name": "pg", "base": TINY_BASE, "seeds": 2,
                                    "cells": {"adam": {"method.name": "base"}, "sam": {"method.name": "sam"}}}))
    spec, items = load_ablation(path)
    out = run_ablation(spec, items, ref=StorageRef.resolve(pg_url, spec.name, "ablation"), uri=mlflow_uri)
    assert out["states"] == {"COMPLETE": 4}
    study = optuna.load_study(study_name="pg", storage=pg_url)  # readable by plain Optuna
    assert sorted(t.user_attrs[KEY] for t in study.trials) == sorted(i.key for i in items)


def test_heartbeats_fail_a_silent_remote_worker_and_queue_its_trial_again(pg_url):
    ref = StorageRef(pg_url, heartbeat_s=1)  # grace period: 3 s
    study, storage = open_study(ref, "beats")
    study.enqueue_trial({}, user_attrs={KEY: "cell|seed=1"})
    tid, trial = claim_next(study, storage)
    storage.set_trial_user_attr(tid, WORKER, "another-machine:4242")  # not this host: only heartbeats can tell
    storage.record_heartbeat(tid)
    assert reap_dead_workers(study, storage) == []  # still within its grace period
    time.sleep(4)
    reap_dead_workers(study, storage)
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "WAITING"]
    assert trials[1].user_attrs[KEY] == "cell|seed=1"
    assert trials[1].system_attrs["failed_trial"] == 0


def test_a_dead_local_worker_is_reaped_on_a_journal(tmp_path):
    study, storage = open_study(StorageRef(str(tmp_path / "j.journal")), "local")
    study.enqueue_trial({}, user_attrs={KEY: "cell|seed=1"})
    tid, _ = claim_next(study, storage)
    import socket

    storage.set_trial_user_attr(tid, WORKER, f"{socket.gethostname()}:999999")  # no such pid
    assert reap_dead_workers(study, storage) == [0]
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "WAITING"]
    assert trials[0].user_attrs[STATUS] == "worker died"


def test_each_worker_samples_with_its_own_seed():
    spec = StudySpec(name="s", space={"method.rho": {"low": 1e-4, "high": 1e-2}})

    def first_draw(worker: int) -> float:
        return optuna.create_study(sampler=build_sampler(spec, worker)).ask().suggest_float("x", 0, 1)

    assert first_draw(0) == first_draw(0)  # seeded
    assert len({first_draw(i) for i in range(3)}) == 3  # but not the same seed in every worker


def test_an_ablation_and_a_study_cannot_share_a_name_in_one_storage(tmp_path):
    from sal.config import SpecError

    ref = StorageRef(str(tmp_path / "shared.journal"))
    open_study(ref, "quick", kind="ablation")
    with pytest.raises(SpecError, match="already holds the ablation 'quick'"):
        open_study(ref, "quick", kind="study")
    assert StorageRef.resolve(None, "quick", "ablation").url != StorageRef.resolve(None, "quick", "study").url
