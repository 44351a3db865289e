"""Scale out and survive, for real: workers on the machine's PostgreSQL, one MLflow tracking
server (mlflow/server.sh) with its own PostgreSQL store, workers SIGKILLed mid-trial, two launchers on one
grid, the database restarted under a running worker. Every test here starts processes: all are slow."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
import yaml

from sal.core.names import ATTR_REUSED, TAG_CELL
from sal.queue.engine import KEY, MLFLOW_RUNS, STATUS, WORKER
from tests.helpers import ABLATION_RUNS, free_port, restart_postgresql

pytestmark = pytest.mark.postgres
REPO = Path(__file__).resolve().parents[1]
CELLS = {"adam": {"method.name": "base"}, "sgd": {"method.name": "base", "optim.name": "sgd"},
         "sal": {"method.name": "sal", "method.warmup": 0},
         "noise": {"method.name": "sal_noise_only", "method.warmup": 0}}
# one (cell, seed) per trial, a few seconds each, so kills land mid-trial
BASE = {"data": {"name": "synthetic", "num_samples": 400}, "model": {"name": "mlp", "width": 16},
        "method": {"name": "base"}, "train": {"epochs": 6, "batch_size": 32, "pack": "off"}}


def _grid(tmp_path: Path, name: str, *, seeds: int, cells: dict | None = None, epochs: int = 6) -> Path:
    path = tmp_path / f"{name}.yaml"
    base = {**BASE, "train": {**BASE["train"], "epochs": epochs}}
    path.write_text(yaml.safe_dump({"name": name, "base": base, "seeds": seeds, "cells": cells or CELLS}))
    return path


def _sal(*args: str) -> list[str]:
    return [sys.executable, "-m", "sal", *args]


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # 5 processes share 2 cores
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _trials(storage: str, name: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    except KeyError:
        return []


def _holds_a_trial(storage: str, name: str, proc: subprocess.Popen) -> bool:
    """``proc`` holds a RUNNING trial whose MLflow run it has created (it is training)."""
    return any(t.state.name == "RUNNING" and str(t.user_attrs.get(WORKER, "")).endswith(f":{proc.pid}")
               and t.user_attrs.get(MLFLOW_RUNS) for t in _trials(storage, name))


def _kill_mid_trial(storage: str, name: str, proc: subprocess.Popen, timeout_s: float = 120) -> bool:
    """SIGKILL ``proc`` while it holds a trial. Once it is seen holding one it is frozen (SIGSTOP) and checked
    again, so it cannot finish that trial between the check and the kill (a trial lasts a second or two); if
    it finished in the meantime it thaws and the wait goes on. Freezing only then keeps it claiming trials."""
    deadline = time.time() + timeout_s
    while time.time() < deadline and proc.poll() is None:
        if not _holds_a_trial(storage, name, proc):  # it runs freely while the test waits
            time.sleep(0.2)
            continue
        os.kill(proc.pid, signal.SIGSTOP)
        if _holds_a_trial(storage, name, proc):  # still holding it, and now it cannot finish it
            os.kill(proc.pid, signal.SIGKILL)
            return True
        os.kill(proc.pid, signal.SIGCONT)
    return False


@pytest.fixture()
def mlflow_server(tmp_path, pg_database):
    """mlflow/server.sh on a free port with a fresh PostgreSQL backend store; yields its URL."""
    port = free_port()
    log = tmp_path / "mlflow-server.log"
    proc = _start([str(REPO / "mlflow" / "server.sh"), "--backend", pg_database(), "--artifacts",
                   str(tmp_path / "artifacts"), "--port", str(port), "--workers", "2"], log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180  # the first start creates MLflow's tables in PostgreSQL
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                break
        except OSError:
            time.sleep(1)
            if proc.poll() is not None:
                raise AssertionError(f"mlflow/server.sh exited {proc.returncode}: {log.read_text()[-2000:]}") from None
    else:
        raise AssertionError(f"the MLflow server did not answer within 180 s: {log.read_text()[-2000:]}")
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def _runs(url: str, name: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(url)
    experiment = client.get_experiment_by_name(f"sal-ablation-{name}")
    return client.search_runs([experiment.experiment_id], ABLATION_RUNS, max_results=1000)


def test_server_script_binds_to_localhost_and_refuses_unsafe_settings(tmp_path):
    script = str(REPO / "mlflow" / "server.sh")
    for args, needle in ((["--backend", "sqlite:///x.db"], "is not a PostgreSQL URL"),
                         (["--backend", "postgresql://u:secret@h/db"], "holds a password"),
                         (["--backend", "postgresql://u@h/db", "--host", "0.0.0.0"], "--allowed-hosts")):
        proc = subprocess.run([script, *args], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2 and needle in proc.stderr and "secret" not in proc.stderr + proc.stdout


def test_chaos_four_workers_two_kills_two_launchers_one_server(tmp_path, pg_database, mlflow_server):
    """40 (cell, seed) trials, 2 launchers + 2 joined workers on PostgreSQL, logging to one MLflow server;
    a worker holding a trial is SIGKILLed twice (each replaced by a new one). Every trial ends COMPLETE
    exactly once, every finished run is in MLflow exactly once, and the killed runs are KILLED."""
    name = "chaos"
    storage = pg_database()
    path = _grid(tmp_path, name, seeds=10)
    launch = _sal("--tracking-uri", mlflow_server, "ablate", str(path), "--storage", storage)
    launchers = [_start(launch, tmp_path / f"launcher{i}.log") for i in range(2)]
    deadline = time.time() + 120
    while len(_trials(storage, name)) < 40 and time.time() < deadline:
        assert all(p.poll() is None for p in launchers), (tmp_path / "launcher0.log").read_text()
        time.sleep(0.5)
    join = _sal("worker", name, "--storage", storage)  # the tracking URI comes from the queue
    workers = [_start(join, tmp_path / f"worker{i}.log") for i in range(2)]
    rng, killed = random.Random(11), []
    for kill in range(2):
        time.sleep(rng.uniform(2, 8))
        victim = workers[kill]
        assert _kill_mid_trial(storage, name, victim), f"worker {kill} never held a trial to be killed in"
        killed.append(victim)
        workers.append(_start(join, tmp_path / f"worker{len(workers)}.log"))
    for proc in launchers + workers:
        proc.wait(timeout=600)
    logs = {p.name: p.read_text() for p in tmp_path.glob("*.log")}
    for proc in launchers + [w for w in workers if w not in killed]:
        assert proc.returncode == 0, logs
    assert [p.returncode for p in killed] == [-signal.SIGKILL] * 2
    assert not any("Traceback" in text for text in logs.values()), logs

    trials = _trials(storage, name)
    complete = [t.user_attrs[KEY] for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == 40 and len(set(complete)) == 40  # every trial COMPLETE exactly once
    assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]
    runs = _runs(mlflow_server, name)
    by_status = {}
    for r in runs:
        by_status.setdefault(r.info.status, []).append(r)
    finished_keys = [r.data.tags[KEY] for r in by_status.get("FINISHED", [])]
    assert sorted(finished_keys) == sorted(complete)  # every finished run exactly once, one per trial
    assert set(by_status) <= {"FINISHED", "KILLED"}  # nothing left RUNNING
    # the killed workers are zombies (this test never reaps them early): still found dead at once, by pid
    assert sum(t.user_attrs.get(STATUS) == "worker died" for t in trials if t.state.name == "FAIL") == 2
    # Each kill leaves its run KILLED, or (killed after the run ended in MLflow, before its trial closed)
    # FINISHED and reused by the retry, never trained twice; a kill right after a trial closed leaves neither.
    killed_runs = by_status.get("KILLED", [])
    reused = [t for t in trials if t.state.name == "COMPLETE" and t.user_attrs.get(ATTR_REUSED)]
    assert 1 <= len(killed_runs) + len(reused) <= 2
    assert {r.data.tags[KEY] for r in killed_runs} <= set(complete)  # every killed run's seed was retried
    states: dict[str, int] = {}
    for t in trials:  # FAIL trials by why: duplicates of the second launcher's copy, the killed workers' trials
        state = t.state.name if t.state.name != "FAIL" else f"FAIL ({t.user_attrs.get(STATUS, '?')[:12]})"
        states[state] = states.get(state, 0) + 1
    print(f"\nchaos: Optuna trials by state {states}; MLflow runs by status "
          f"{ {k: len(v) for k, v in by_status.items()} }; finished runs reused by a retry {len(reused)}")


def test_a_database_restart_under_a_running_worker(tmp_path, pg_database, mlflow_uri):
    """PostgreSQL restarts while a worker trains: it reconnects, or exits with one line; a re-run finishes
    every trial exactly once."""
    name = "restart"
    storage = pg_database()
    path = _grid(tmp_path, name, seeds=3, cells={k: CELLS[k] for k in ("adam", "sal")}, epochs=20)
    cmd = _sal("--tracking-uri", mlflow_uri, "ablate", str(path), "--storage", storage)
    proc = _start(cmd, tmp_path / "first.log")
    deadline = time.time() + 120
    while not _holds_a_trial(storage, name, proc) and time.time() < deadline:
        time.sleep(0.2)
    restart_postgresql()
    proc.wait(timeout=600)
    first = (tmp_path / "first.log").read_text()
    assert proc.returncode in (0, 1) and "Traceback" not in first, first
    if proc.returncode == 1:
        assert "re-run the same command to resume" in first
    last = first.strip().splitlines()[-1]
    print(f"\nrestart: the worker under the restart exited {proc.returncode}; last line: {last}")
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr
    trials = _trials(storage, name)
    complete = [t.user_attrs[KEY] for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == 6 and len(set(complete)) == 6


def test_a_killed_trial_resumes_from_its_checkpoint_and_logs_the_uninterrupted_history(tmp_path, mlflow_uri):
    """SIGKILL a worker mid-run; the re-run's retried trial resumes from the checkpoint, and the run it logs
    has the same per-epoch history as the run trained in one go (CPU: bit for bit)."""
    from mlflow.tracking import MlflowClient

    from sal.spec.config import validate_run
    from sal.training.run import train

    name, ckpt = "resumed", tmp_path / "ckpt"
    cells = {"a_sal": {"method": {"name": "sal", "warmup": 0}}, "b_adam": {"method": {"name": "base"}}}
    path = tmp_path / f"{name}.yaml"
    base = {**BASE, "data": {"name": "digits"}, "train": {**BASE["train"], "epochs": 12, "checkpoint_every": 2}}
    path.write_text(yaml.safe_dump({"name": name, "base": base, "seeds": [1], "baseline": "b_adam", "cells": cells}))
    journal = tmp_path / "q.journal"
    cmd = _sal("--tracking-uri", mlflow_uri, "ablate", str(path), "--storage", str(journal), "--checkpoint-dir",
               str(ckpt))
    proc = _start(cmd, tmp_path / "first.log")
    deadline = time.time() + 120
    while not list(ckpt.glob("*-s1.pt")) and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "resumed from epoch" in again.stderr
    assert not list(ckpt.glob("*.pt"))  # deleted when the run ended

    client = MlflowClient(mlflow_uri)
    experiment = client.get_experiment_by_name(f"sal-ablation-{name}")
    runs = client.search_runs([experiment.experiment_id], ABLATION_RUNS)
    finished = {r.data.tags[TAG_CELL]: r for r in runs if r.info.status == "FINISHED"}
    assert sorted(finished) == ["a_sal", "b_adam"] and {r.info.status for r in runs} <= {"FINISHED", "KILLED"}
    for cell, run in finished.items():
        logged = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val/acc"))
        spec = validate_run({**base, **cells[cell], "seed": 1})
        assert logged == [(int(row["epoch"]), row["val/acc"]) for row in train(spec).history], cell


def _stop_mid_trial(storage: str, name: str, proc: subprocess.Popen, timeout_s: float = 120) -> bool:
    """SIGSTOP ``proc`` while it holds a trial (and leave it stopped): ``_kill_mid_trial`` without the kill."""
    deadline = time.time() + timeout_s
    while time.time() < deadline and proc.poll() is None:
        if not _holds_a_trial(storage, name, proc):
            time.sleep(0.2)
            continue
        os.kill(proc.pid, signal.SIGSTOP)
        if _holds_a_trial(storage, name, proc):
            return True
        os.kill(proc.pid, signal.SIGCONT)
    return False


@pytest.mark.subprocess
def test_a_stalled_worker_does_not_log_its_retried_trial_again(tmp_path, pg_database, mlflow_server, monkeypatch):
    """A worker holding a trial is suspended (SIGSTOP: `scontrol suspend`, a paused VM, a long stall) past the
    heartbeat grace; its trial is failed as stale and another worker trains the retry; then the first worker
    resumes (SIGCONT). Before: it finished too and ended its run FINISHED, two finished runs for that seed.
    Now it sees the trial is no longer its own, ends its run KILLED as a duplicate and stops: exactly one
    FINISHED run per (cell, seed)."""
    from sal.core.names import TAG_MESSAGE, TAG_STATUS

    monkeypatch.setenv("SAL_HEARTBEAT_S", "2")  # grace period 6 s, for every process of this test
    name = "stalled"
    storage = pg_database()
    path = _grid(tmp_path, name, seeds=2, cells={"adam": CELLS["adam"]}, epochs=15)
    first = _start(_sal("--tracking-uri", mlflow_server, "ablate", str(path), "--storage", storage),
                   tmp_path / "first.log")
    assert _stop_mid_trial(storage, name, first), (tmp_path / "first.log").read_text()
    [stalled] = [t for t in _trials(storage, name) if t.state.name == "RUNNING"]
    other = _start(_sal("worker", name, "--storage", storage), tmp_path / "other.log")
    other.wait(timeout=600)  # it trains the other seed, and the stalled trial once it is failed as stale
    os.kill(first.pid, signal.SIGCONT)
    first.wait(timeout=300)
    logs = {p.name: p.read_text() for p in tmp_path.glob("*.log")}
    assert other.returncode == 0 and first.returncode in (0, 1), logs
    assert not any("Traceback" in text for text in logs.values()), logs

    trials = _trials(storage, name)
    assert trials[stalled.number].state.name == "FAIL"  # failed as stale, and retried
    complete = sorted(t.user_attrs[KEY] for t in trials if t.state.name == "COMPLETE")
    assert len(complete) == 2 and len(set(complete)) == 2
    runs = _runs(mlflow_server, name)
    finished: dict[str, int] = {}
    for r in runs:
        if r.info.status == "FINISHED":
            finished[r.data.tags[KEY]] = finished.get(r.data.tags[KEY], 0) + 1
    assert finished == {key: 1 for key in complete}  # exactly once per (cell, seed)
    [run_id] = stalled.user_attrs[MLFLOW_RUNS]
    duplicate = next(r for r in runs if r.info.run_id == run_id)
    assert duplicate.info.status == "KILLED" and duplicate.data.tags[TAG_STATUS] == "killed"
    # ended by the stalled worker itself ("failed as stale"), or, when it closed the run between its last check
    # and the close, re-marked by the worker that trained the retry: both leave one FINISHED run per seed
    message = duplicate.data.tags[TAG_MESSAGE]
    assert "failed as stale" in message or "queued again while its worker stalled" in message, message
    print(f"\nstalled worker: FINISHED runs per (cell, seed) {finished}; the stalled worker's run "
          f"{duplicate.info.status} ({duplicate.data.tags[TAG_MESSAGE][:60]}...); it exited {first.returncode}")
