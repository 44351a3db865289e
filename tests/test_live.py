"""Live MLflow runs: RUNNING while training with streamed epochs, nested under cell/trial runs, ended
KILLED when their worker dies, logged exactly once when a worker dies between MLflow and Optuna;
workers that stop with their launcher; queue directions; progress lines."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from sal.core.names import (
    ATTR_KEY,
    ATTR_REUSED,
    ATTR_RUN,
    ATTR_WORKER,
    TAG_CELL,
    TAG_CONTEXT,
    TAG_KEY,
    TAG_KIND,
    TAG_STATUS,
)
from sal.queue.engine import MLFLOW_RUNS, StorageRef
from sal.report.build import load_runs
from sal.spec.config import config_hash
from sal.spec.study_spec import load_study_spec
from sal.sweeps.ablation import EXIT_AFTER_LOG_ENV, load_ablation, metric_direction, queue_grid, run_ablation
from sal.sweeps.study import run_study
from sal.tracking.store import LiveRun, client_for, runs_frame
from sal.training.run import train
from tests.helpers import ABLATION_RUNS, TINY_BASE, start_until, tiny_spec, write_ablation, write_study

REPO = Path(__file__).resolve().parents[1]


def _sal(mlflow_uri: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "sal", "--tracking-uri", mlflow_uri, *args]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **extra}


def test_a_live_run_is_running_with_its_params_and_epochs_while_it_trains(mlflow_uri):
    spec = tiny_spec(train={"epochs": 4, "batch_size": 32})
    live = LiveRun(mlflow_uri, "live-unit", kind="train", tags={TAG_CELL: "x"}, flush_s=0.05)
    client = client_for(mlflow_uri)
    seen = {}

    def on_epoch(epoch, row):
        live.log_epoch(epoch, row)
        if epoch == 2:
            time.sleep(0.5)  # several flush periods
            run = client.get_run(live.run_id)
            seen.update(status=run.info.status, params=dict(run.data.params), tags=dict(run.data.tags),
                        losses=[m.step for m in client.get_metric_history(live.run_id, "train/loss")])

    with live:
        live.start(spec)
        result = train(spec, on_epoch=on_epoch)
        live.finish(result)
    assert seen["status"] == "RUNNING"
    assert seen["params"]["optim.lr"] == str(spec.optim.lr) and seen["tags"]["config_hash"] == config_hash(spec)
    assert seen["tags"][TAG_CELL] == "x" and seen["tags"][TAG_STATUS] == "running"
    assert seen["losses"] == [1, 2]  # streamed while the run trained
    run = client.get_run(live.run_id)
    assert run.info.status == "FINISHED" and run.data.tags[TAG_STATUS] == "finished"
    assert [m.step for m in client.get_metric_history(live.run_id, "val/acc")] == [1, 2, 3, 4]
    assert run.data.metrics["test/acc"] == result.final["test/acc"]
    dataset = run.inputs.dataset_inputs[0].dataset
    assert dataset.name == "synthetic" and len(dataset.digest) == 16


def test_a_crash_inside_a_live_run_ends_it_failed_and_a_diverged_one_failed(mlflow_uri):
    live = LiveRun(mlflow_uri, "live-unit", kind="train")
    with pytest.raises(RuntimeError), live:
        live.start(tiny_spec())
        raise RuntimeError("boom")
    assert client_for(mlflow_uri).get_run(live.run_id).info.status == "FAILED"
    spec = tiny_spec(optim={"lr": 1e12})
    with LiveRun(mlflow_uri, "live-unit", kind="train") as live:
        live.start(spec)
        result = live.finish(train(spec, on_epoch=live.log_epoch))
    run = client_for(mlflow_uri).get_run(result)
    assert run.info.status == "FAILED" and run.data.tags[TAG_STATUS] == "diverged"


@pytest.mark.store
def test_an_ablation_nests_its_seeds_under_cell_runs_and_the_report_reads_only_seeds(tmp_path, mlflow_uri):
    spec, items = load_ablation(write_ablation(tmp_path, "nested", seeds=2, axes={"optim.lr": [0.01, 0.001]}))
    ref = StorageRef(str(tmp_path / "q.journal"))
    run_ablation(spec, items, ref=ref, uri=mlflow_uri)
    client = client_for(mlflow_uri)
    experiment = client.get_experiment_by_name("sal-ablation-nested")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the model-training view
    runs = runs_frame(mlflow_uri, ["sal-ablation-nested"])
    parents = runs[runs[f"tags.{TAG_KIND}"] == "cell"].set_index("run_id")
    seeds = runs[runs[f"tags.{TAG_KIND}"] == "ablation"]
    assert len(parents) == 4 and len(seeds) == 8  # 2 cells x 2 contexts, each with 2 seeds
    assert set(parents["status"]) == {"FINISHED"} and set(parents["metrics.seeds/n"]) == {2}
    for _, parent in parents.iterrows():  # the result in the name: the runs table shows no metric by default
        mean = parent["metrics.seeds/mean_val_acc"]
        assert client.get_run(parent.name).info.run_name.endswith(
            f": {mean:.4f} ± {parent['metrics.seeds/sd_val_acc']:.4f} val/acc (2 seeds)")
    for _, seed_run in seeds.iterrows():
        parent_id = client.get_run(seed_run["run_id"]).data.tags["mlflow.parentRunId"]
        parent = parents.loc[parent_id]
        assert (parent[f"tags.{TAG_CELL}"], parent[f"tags.{TAG_CONTEXT}"]) == (seed_run[f"tags.{TAG_CELL}"],
                                                                               seed_run[f"tags.{TAG_CONTEXT}"])
    for cell_id, parent in parents.iterrows():
        mine = seeds[seeds["run_id"].map(lambda r: client.get_run(r).data.tags["mlflow.parentRunId"]) == cell_id]
        assert parent["metrics.seeds/mean_val_acc"] == pytest.approx(mine["metrics.val/acc"].mean())
    assert sorted(load_runs(mlflow_uri, "nested")["run_id"]) == sorted(seeds["run_id"])
    assert set(seeds[f"tags.{TAG_KEY}"]) == {i.key for i in items}
    study = optuna.load_study(study_name="nested", storage=ref.open())
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE  # values are accuracies
    assert all(t.user_attrs[MLFLOW_RUNS] == [t.user_attrs[ATTR_RUN]] for t in study.trials)


def test_queue_directions_follow_the_metric_and_an_old_minimize_queue_still_opens(tmp_path, caplog):
    assert [metric_direction(m) for m in ("val/acc", "test/top5", "test/loss", "time/train_s")] == \
        ["maximize", "maximize", "minimize", "minimize"]
    spec, items = load_ablation(write_ablation(tmp_path, "old", seeds=1))
    ref = StorageRef(str(tmp_path / "old.journal"))
    optuna.create_study(study_name="old", storage=ref.open())  # as older sal created it: MINIMIZE
    with caplog.at_level(logging.WARNING, logger="sal"):
        report = queue_grid(ref, spec, items, retry_failed=False)
    assert len(report["queued"]) == 2
    assert "optuna-dashboard's 'best' is the worst trial" in caplog.text


def test_a_study_nests_each_trials_seeds_under_a_trial_run(tmp_path, mlflow_uri):
    spec = load_study_spec(write_study(tmp_path, "nest", n_trials=2))
    run_study(spec, ref=StorageRef(str(tmp_path / "s.journal")), uri=mlflow_uri)
    runs = runs_frame(mlflow_uri, ["sal-study-nest"])
    trials = runs[runs[f"tags.{TAG_KIND}"] == "trial"]
    seeds = runs[runs[f"tags.{TAG_KIND}"] == "study"]
    assert len(trials) == 2 and len(seeds) == 4 and set(trials["status"]) == {"FINISHED"}
    client = client_for(mlflow_uri)
    for _, t in trials.iterrows():
        children = [r for r in seeds["run_id"] if client.get_run(r).data.tags["mlflow.parentRunId"] == t["run_id"]]
        assert len(children) == 2
        assert t["metrics.cvar_val_acc"] == pytest.approx(
            seeds[seeds["run_id"].isin(children)]["metrics.study/cvar/val/acc"].iloc[0])
    assert set(trials["params.method.rho"].dropna()) == set(seeds["params.method.rho"])


def _yaml(tmp_path: Path, name: str, *, seeds: int, epochs: int, model: str = "mlp") -> Path:
    base = {**TINY_BASE, "data": {"name": "digits"}, "model": {"name": model, "width": 8}, "train": {"epochs": epochs}}
    doc = {"name": name, "seeds": seeds, "base": base,
           "cells": {"adam": {"method.name": "base"}, "sal": {"method.name": "sal", "method.warmup": 0}}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.subprocess
def test_a_killed_workers_run_shows_live_and_is_ended_killed_when_the_sweep_resumes(tmp_path, mlflow_uri):
    journal = tmp_path / "q.journal"
    # A small CNN: epochs of ~0.3 s, so a run lasts several of the LiveRun's 2 s flush periods.
    spec_file = _yaml(tmp_path, "livekill", seeds=2, epochs=30, model="cnn")
    cmd = _sal(mlflow_uri, "ablate", str(spec_file), "--storage", str(journal))
    client = client_for(mlflow_uri)
    client.search_experiments()  # the store exists before the sweep starts (concurrent creation: test_store_lock.py)
    log_file = tmp_path / "sweep.log"
    with log_file.open("w") as log_out:
        proc = subprocess.Popen(cmd, stdout=log_out, stderr=subprocess.STDOUT, env=_env(), start_new_session=True)
    live_run, deadline = None, time.time() + 300  # generous: a loaded machine starts workers slowly
    while live_run is None and time.time() < deadline:
        time.sleep(0.5)
        runs = runs_frame(mlflow_uri, ["sal-ablation-livekill"], ABLATION_RUNS) if client.get_experiment_by_name(
            "sal-ablation-livekill") else []
        for run_id in (runs["run_id"] if len(runs) else []):
            run = client.get_run(run_id)
            if run.info.status == "RUNNING" and len(client.get_metric_history(run_id, "train/loss")) >= 3:
                live_run = run
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert live_run is not None, "no RUNNING run with streamed epochs while the sweep trained:\n" + \
        log_file.read_text()[-3000:]
    assert live_run.data.params["train.epochs"] == "30" and live_run.data.tags[TAG_CELL] in ("adam", "sal")
    assert client.get_run(live_run.info.run_id).info.status == "RUNNING"  # the kill left a trace
    assert subprocess.run(cmd, capture_output=True, env=_env(), timeout=400).returncode == 0
    killed = client.get_run(live_run.info.run_id)
    assert killed.info.status == "KILLED" and killed.data.tags[TAG_STATUS] == "killed"
    runs = runs_frame(mlflow_uri, ["sal-ablation-livekill"], ABLATION_RUNS)
    finished = runs[runs["status"] == "FINISHED"]
    assert len(finished) == 4 and len(set(zip(finished[f"tags.{TAG_CELL}"], finished["tags.seed"]))) == 4


@pytest.mark.subprocess
def test_a_worker_killed_between_mlflow_and_optuna_leaves_one_finished_run_per_seed(tmp_path, mlflow_uri):
    journal = tmp_path / "q.journal"
    # one seed at a time, so exactly one run is logged before the worker dies (packed seeds log together)
    cmd = _sal(mlflow_uri, "ablate", str(_yaml(tmp_path, "once", seeds=2, epochs=2)), "--storage", str(journal),
               "--set", "train.pack=off")
    first = subprocess.run(cmd, capture_output=True, text=True, env=_env(**{EXIT_AFTER_LOG_ENV: "1"}), timeout=300)
    assert first.returncode == 3, first.stderr  # died after logging its first run, before closing the trial
    runs = runs_frame(mlflow_uri, ["sal-ablation-once"], ABLATION_RUNS)
    assert list(runs["status"]) == ["FINISHED"]
    rerun = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    runs = runs_frame(mlflow_uri, ["sal-ablation-once"], ABLATION_RUNS)
    finished = runs[runs["status"] == "FINISHED"]
    assert len(runs) == 4 and len(finished) == 4
    assert len(set(zip(finished[f"tags.{TAG_CELL}"], finished["tags.seed"]))) == 4
    trials = optuna.load_study(study_name="once", storage=StorageRef(str(journal)).open()).trials
    reused = [t for t in trials if t.user_attrs.get(ATTR_REUSED)]
    assert len(reused) == 1 and reused[0].state.name == "COMPLETE"
    first_run = runs[runs[f"tags.{TAG_KEY}"] == reused[0].user_attrs[ATTR_KEY]].iloc[0]
    assert reused[0].user_attrs[ATTR_RUN] == first_run["run_id"]
    assert reused[0].value == pytest.approx(first_run["metrics.val/acc"])


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "State:\tZ" in state


@pytest.mark.subprocess
def test_workers_stop_when_their_launcher_is_killed(tmp_path, mlflow_uri):
    journal = tmp_path / "q.journal"
    cmd = _sal(mlflow_uri, "ablate", str(_yaml(tmp_path, "orphans", seeds=3, epochs=60)), "--storage", str(journal),
               "--workers", "2")
    proc = start_until(cmd, journal, "orphans", complete=0)
    try:
        deadline = time.time() + 60
        workers: set[int] = set()
        while len(workers) < 2 and time.time() < deadline:
            time.sleep(0.3)
            trials = optuna.load_study(study_name="orphans", storage=StorageRef(str(journal)).open()).trials
            workers = {int(t.user_attrs[ATTR_WORKER].rpartition(":")[2]) for t in trials
                       if t.state.name == "RUNNING" and ATTR_WORKER in t.user_attrs}
        assert len(workers) == 2 and proc.pid not in workers
        os.kill(proc.pid, signal.SIGKILL)  # the launcher only, not its process group
        proc.wait()
        deadline = time.time() + 5
        while not all(_gone(w) for w in workers) and time.time() < deadline:
            time.sleep(0.2)
        assert all(_gone(w) for w in workers), "workers kept training after their launcher died"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of this test's processes


@pytest.mark.subprocess
def test_ablate_prints_progress_lines_when_not_on_a_terminal(tmp_path, mlflow_uri):
    cmd = _sal(mlflow_uri, "ablate", str(_yaml(tmp_path, "progress", seeds=2, epochs=2)), "--storage",
               str(tmp_path / "q.journal"))
    out = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert out.returncode == 0, out.stderr
    lines = re.findall(r"^\d\d:\d\d:\d\d progress: (\d)/4 done, (\d) running, ETA (\S+)(; latest .*)?$",
                       out.stdout, re.M)
    assert lines and lines[-1][:2] == ("4", "0"), out.stdout
    assert [int(n) for n, *_ in lines] == sorted(int(n) for n, *_ in lines)  # counts only go up
    assert re.search(r"; latest (adam|sal) +seed [12]: val/acc 0\.\d+$", out.stdout, re.M), out.stdout
    assert any(eta not in ("?",) and re.fullmatch(r"\d\d:\d\d:\d\d", eta) for _, _, eta, _ in lines)
