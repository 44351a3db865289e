"""Optuna studies: multi-seed trials, the paper's defaults first, pruning, resuming, Optuna's own CLI."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from sal.cli import main
from sal.core.names import ATTR_PER_SEED, ATTR_STATUS, ATTR_STUDY_BASE, TAG_STATUS, TAG_TRIAL, TAG_TRIAL_STATE
from sal.queue.engine import StorageRef
from sal.spec.config import flatten, validate_run
from sal.spec.study_spec import load_study_spec
from sal.sweeps.objectives import aggregate
from sal.sweeps.study import best_spec, create_study, run_study
from sal.tracking.store import runs_frame
from tests.helpers import STUDY_BASE, STUDY_RUNS, start_until, write_study

KNOBS = ["method.rho", "method.theta", "method.s_noise", "method.s_yield", "method.delta", "method.lambda",
         "method.sigma_y"]


@pytest.mark.store
def test_a_short_study_records_knobs_seeds_and_aggregates(tmp_path, mlflow_uri):
    spec = load_study_spec(write_study(tmp_path, "short"))
    study = run_study(spec, ref=StorageRef(str(tmp_path / "s.journal")), uri=mlflow_uri)
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 5
    defaults = flatten(validate_run(STUDY_BASE))
    assert trials[0].params == {k: defaults[k] for k in KNOBS}  # the paper's defaults first
    assert trials[0].params["method.rho"] == 0.0005 and trials[0].params["method.s_yield"] == 0.01
    for t in trials:
        assert set(t.params) == set(KNOBS)
        assert t.params["method.s_noise"] < t.params["method.s_yield"]
        per_seed = t.user_attrs[f"{ATTR_PER_SEED}.val/acc"]
        assert set(per_seed) == {"1", "2"}
        assert t.value == pytest.approx(aggregate("cvar", list(per_seed.values()), maximize=True, alpha=0.5))
        assert t.user_attrs["sal.cvar.val/acc"] == t.value
    runs = runs_frame(mlflow_uri, ["sal-study-short"], STUDY_RUNS)
    assert len(runs) == 10  # one per (trial, seed)
    assert set(runs[f"tags.{TAG_TRIAL}"]) == {str(i) for i in range(5)}
    first = runs[runs[f"tags.{TAG_TRIAL}"] == "0"]
    assert sorted(first["params.method.rho"]) == ["0.0005", "0.0005"]
    assert (first["metrics.study/cvar/val/acc"] == trials[0].value).all()


def test_a_pruned_trial_is_pruned_in_optuna_and_mlflow(tmp_path, mlflow_uri):
    space = {"optim.lr": {"low": 1e-7, "high": 1e-1, "log": True}}
    spec = load_study_spec(write_study(tmp_path, "prune", space=space, n_trials=2, enqueue_defaults=False,
                                       pruner={"name": "median", "options": {"n_startup_trials": 1,
                                                                                          "n_warmup_steps": 0}}),
                           {"train.epochs": 5})
    ref = StorageRef(str(tmp_path / "p.journal"))
    study = create_study(spec, ref)
    study.enqueue_trial({"optim.lr": 0.03})  # learns
    study.enqueue_trial({"optim.lr": 1e-7})  # stays at chance: below the median from epoch 1
    study = run_study(spec, ref=ref, uri=mlflow_uri)
    assert [t.state.name for t in study.get_trials()] == ["COMPLETE", "PRUNED"]
    runs = runs_frame(mlflow_uri, ["sal-study-prune"], STUDY_RUNS)
    pruned = runs[runs[f"tags.{TAG_TRIAL}"] == "1"]
    assert len(pruned) == 2
    assert set(pruned[f"tags.{TAG_TRIAL_STATE}"]) == {"pruned"} and set(pruned["status"]) == {"KILLED"}
    assert set(pruned[f"tags.{TAG_STATUS}"]) == {"pruned"}
    assert (pruned["params.train.epochs"] == "5").all()


def test_wilcoxon_with_few_seeds_warns(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        load_study_spec(write_study(tmp_path, "wil", pruner={"name": "wilcoxon"}, seeds=3))
    assert "WilcoxonPruner" in caplog.text and "5 or more seeds" in caplog.text


@pytest.mark.store
def test_multi_objective_gives_a_pareto_front(tmp_path, mlflow_uri):
    spec = load_study_spec(write_study(tmp_path, "pareto", n_trials=4, sampler={"name": "nsga2", "seed": 0},
                                       objective=None,
                                       objectives=[{"metric": "val/acc"},
                                                   {"metric": "time/train_s", "direction": "minimize"}]))
    study = run_study(spec, ref=StorageRef(str(tmp_path / "m.journal")), uri=mlflow_uri)
    assert len(study.directions) == 2 and study.best_trials
    assert all(len(t.values) == 2 for t in study.best_trials)


@pytest.mark.parametrize("space,needle", [
    ({"method.rho": {"low": 0.1, "high": 0.01}}, "space.method.rho: low=0.1 is not below high=0.01"),
    ({"method.rho": {"low": 0.0, "high": 0.01, "log": True}}, "log scale needs low > 0"),
    ({"method.rhoo": {"low": 0.001, "high": 0.01}}, "space.method.rhoo: unknown setting"),
    ({"method.s_noise": {"low": 0.001, "high": 0.5}}, "space.method.s_noise=0.5 is above method.s_yield"),
])
def test_bad_search_spaces_exit_2_before_any_trial(tmp_path, space, needle, capsys):
    path = write_study(tmp_path, "bad", space=space)
    journal = tmp_path / "bad.journal"
    assert main(["--tracking-uri", f"sqlite:///{tmp_path}/m.db", "study", "run", str(path), "--storage",
                 str(journal)]) == 2
    err = capsys.readouterr().err
    assert needle in err and "fix:" in err
    assert not journal.exists() and not (tmp_path / "m.db").exists()


def test_test_metrics_cannot_be_the_objective(tmp_path, capsys):
    path = write_study(tmp_path, "peek", objective={"metric": "test/acc"})
    assert main(["study", "run", str(path), "--storage", str(tmp_path / "x.journal")]) == 2
    assert "selects on test data" in capsys.readouterr().err


@pytest.mark.store
def test_best_spec_trains_and_optunas_cli_reads_the_storage(tmp_path, mlflow_uri, capsys):
    path = write_study(tmp_path, "bestof", n_trials=3)
    journal = tmp_path / "b.journal"
    assert main(["--tracking-uri", mlflow_uri, "study", "run", str(path), "--storage", str(journal)]) == 0
    out = tmp_path / "best.yaml"
    assert main(["study", "best", "bestof", "--storage", str(journal), "--out", str(out)]) == 0
    study = optuna.load_study(study_name="bestof", storage=StorageRef(str(journal)).open())
    spec = validate_run(yaml.safe_load(out.read_text()))
    assert spec == best_spec(study)
    assert spec.method.rho == study.best_trial.params["method.rho"]
    assert main(["--tracking-uri", mlflow_uri, "train", "--config", str(out), "--experiment", "from-best"]) == 0
    assert len(runs_frame(mlflow_uri, ["from-best"])) == 1
    assert main(["study", "status", "bestof", "--storage", str(journal)]) == 0
    assert "trials: 3 complete" in capsys.readouterr().out
    optuna_cli = shutil.which("optuna", path=str(Path(sys.executable).parent))
    listed = subprocess.run([optuna_cli, "trials", "--storage", str(journal), "--study-name", "bestof", "-f", "yaml"],
                            capture_output=True, text=True, check=True)
    rows = yaml.safe_load(listed.stdout)
    assert len(rows) == 3 and {r["state"] for r in rows} == {"COMPLETE"}


@pytest.mark.subprocess
def test_a_killed_study_resumes_to_n_trials_without_duplicates(tmp_path, mlflow_uri):
    path = write_study(tmp_path, "resumed", n_trials=6, base={**STUDY_BASE, "data": {"name": "digits"},
                                                              "train": {"epochs": 6, "batch_size": 32}})
    journal = tmp_path / "r.journal"
    cmd = [sys.executable, "-m", "sal", "--tracking-uri", mlflow_uri, "study", "run", str(path), "--storage",
           str(journal)]
    proc = start_until(cmd, journal, "resumed", complete=1)
    ref = StorageRef(str(journal))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    trials = optuna.load_study(study_name="resumed", storage=ref.open()).trials
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 6
    died = [t for t in trials if t.state.name == "FAIL"]
    assert len(died) == 1 and died[0].user_attrs[ATTR_STATUS] == "worker died"
    retried = [t for t in finished if t.system_attrs.get("failed_trial") == died[0].number]
    # the killed trial ran again, once, with every parameter it had drawn before the kill
    assert len(retried) == 1
    assert {k: retried[0].params[k] for k in died[0].params} == died[0].params


@pytest.mark.subprocess
def test_ctrl_c_gives_the_running_trial_back_with_its_parameters(tmp_path, mlflow_uri):
    path = write_study(tmp_path, "interrupted", n_trials=3, base={**STUDY_BASE, "data": {"name": "digits"},
                                                                  "train": {"epochs": 40, "batch_size": 32}})
    journal = tmp_path / "i.journal"
    cmd = [sys.executable, "-m", "sal", "--tracking-uri", mlflow_uri, "study", "run", str(path), "--storage",
           str(journal)]
    proc = start_until(cmd, journal, "interrupted", complete=0)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "re-run the same command to resume" in err, err[-3000:]
    trials = optuna.load_study(study_name="interrupted", storage=StorageRef(str(journal)).open()).trials
    [back] = [t for t in trials if t.state.name == "FAIL"]
    [waiting] = [t for t in trials if t.state.name == "WAITING"]
    assert waiting.system_attrs["failed_trial"] == back.number
    assert waiting.system_attrs["fixed_params"] == back.params  # drawn again exactly as before


def test_study_presets_validate_and_name_missing_data(tmp_path, monkeypatch):
    from sal.spec.config import SpecError

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.setenv("SAL_DATA", str(tmp_path))
    with pytest.raises(SpecError, match=f"needs '{tmp_path}/imagenette'"):
        load_study_spec(repo / "studies" / "paper_stable.yaml")
    for folder in ("imagenette", "corel1k", "weights"):
        (tmp_path / folder).mkdir()
    for weights in ("densenet201.pth", "resnet50.pth"):
        (tmp_path / "weights" / weights).touch()
    specs = {p.stem: load_study_spec(p) for p in (repo / "studies").glob("*.yaml")}
    assert set(specs) == {"quick", "paper_stable", "paper_degraded"}
    assert all(set(KNOBS) <= set(s.space) for s in specs.values())
    assert specs["paper_degraded"].directions == ["maximize", "minimize"]


@pytest.mark.store
def test_a_rerun_with_another_base_or_space_exits_2_and_force_new_starts_fresh(tmp_path, mlflow_uri, capsys):
    path = write_study(tmp_path, "drift", n_trials=2)
    journal = tmp_path / "d.journal"
    run = ["--tracking-uri", mlflow_uri, "study", "run", str(path), "--storage", str(journal)]
    assert main(run) == 0
    # old main resumed it and mixed trials of two base specs in one study
    assert main([*run, "--set", "optim.lr=0.02"]) == 2
    err = capsys.readouterr().err
    assert "study 'drift'" in err and "--force-new" in err
    assert main([*run, "--set", "optim.lr=0.02", "--force-new", "--n-trials", "1"]) == 0
    storage = StorageRef(str(journal)).open()
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage))
    assert names[0] == "drift" and names[1].startswith("drift@")  # the old study is kept, renamed
    fresh = optuna.load_study(study_name="drift", storage=storage)
    assert len(fresh.trials) == 1
    assert len(optuna.load_study(study_name=names[1], storage=storage).trials) == 2
    capsys.readouterr()
    assert main([*run, "--n-trials", "2"]) == 2  # the fresh study has the new base now: the old one is the odd one
    err = capsys.readouterr().err
    assert "another base spec" in err and "backup" not in err, err  # not refused as a damaged journal
    # resuming the fresh study: its journal (a study deleted and created again) was refused as damaged
    assert main([*run, "--set", "optim.lr=0.02", "--n-trials", "2"]) == 0, capsys.readouterr().err
    assert len(optuna.load_study(study_name="drift", storage=StorageRef(str(journal)).open()).trials) == 2


def test_study_best_writes_what_the_best_trial_trained(tmp_path, mlflow_uri):
    path = write_study(tmp_path, "bestbase", n_trials=2)
    journal = tmp_path / "b.journal"
    spec = load_study_spec(path)
    study = run_study(spec, ref=StorageRef(str(journal)), uri=mlflow_uri)
    # the stored base is overwritten (old main wrote base + params: a configuration no trial trained)
    study.set_user_attr(ATTR_STUDY_BASE, {**STUDY_BASE, "optim": {"lr": 0.5}})
    out = tmp_path / "best.yaml"
    assert main(["study", "best", "bestbase", "--storage", str(journal), "--out", str(out)]) == 0
    best = validate_run(yaml.safe_load(out.read_text()))
    assert best.optim.lr == 0.01 and best.method.rho == study.best_trial.params["method.rho"]


def test_a_trial_whose_every_seed_diverged_ranks_below_any_trained_trial():
    from sal.sweeps.objectives import trial_value

    trained = trial_value("lcb", [0.1, 0.9, 0.5], [False] * 3, metric="val/acc", maximize=True)
    dead = trial_value("lcb", [0.0, 0.0, 0.0], [True] * 3, metric="val/acc", maximize=True)
    # old main: lcb of the trained seeds was about -0.89, below the 0.0 of the dead trial. The value is a
    # ranking score, never clipped to [0, 1] (clipped values tied at 0), so it stays -0.49
    assert trained == pytest.approx(-0.4937, abs=1e-4) and dead == float("-inf") and trained > dead
    one_diverged = trial_value("lcb", [0.8, 0.81, 0.0], [False, False, True], metric="val/acc", maximize=True)
    assert dead < one_diverged < trained
    assert trial_value("mean", [1.0, 2.0], [True, True], metric="val/loss", maximize=False) == float("inf")


def test_a_default_the_space_cannot_take_is_left_to_the_sampler(tmp_path, mlflow_uri):
    # SWA's swa_lr defaults to None (= the base lr): old main enqueued None and trial 0 failed
    base = {**STUDY_BASE, "method": {"name": "swa", "swa_start": 0.5}}
    spec = load_study_spec(write_study(tmp_path, "swadef", base=base, n_trials=1,
                                       space={"method.swa_lr": {"low": 1e-3, "high": 1e-2, "log": True},
                                              "method.swa_start": {"low": 0.3, "high": 0.6}}))
    study = run_study(spec, ref=StorageRef(str(tmp_path / "w.journal")), uri=mlflow_uri)
    (trial,) = study.get_trials()
    assert trial.state.name == "COMPLETE" and trial.params["method.swa_start"] == 0.5


def test_the_queues_name_their_objective_values_for_the_dashboard(tmp_path):
    # optuna-dashboard and Optuna's plots showed "Objective 0": the queue now names each value
    spec = load_study_spec(write_study(tmp_path, "named"))
    ref = StorageRef(str(tmp_path / "named.journal"))
    create_study(spec, ref)
    assert optuna.load_study(study_name="named", storage=ref.open()).metric_names == ["cvar(val/acc)"]


@pytest.mark.parametrize("seeds", [0, [1, 1], [0, 2]])
def test_a_studys_seeds_are_checked_like_an_ablations(tmp_path, seeds):
    # one Seeds type for every spec: a study accepted seeds: 0 and repeated seeds before
    from sal.spec.config import SpecError

    with pytest.raises(SpecError, match="seeds"):
        load_study_spec(write_study(tmp_path, "badseeds", seeds=seeds))


@pytest.mark.store
def test_a_stalled_workers_study_trial_retried_elsewhere_ends_killed_not_finished(tmp_path, mlflow_uri, monkeypatch):
    """A study trial failed as stale while its worker still trains it (the worker was suspended, its
    heartbeats stopped) and queued again: that worker must not finish it. Its seed runs end KILLED saying
    why, the retry trains the same parameters, and each (parameters, seed) has one FINISHED run."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    from sal.core.names import TAG_MESSAGE
    from sal.queue.workqueue import Queue
    from sal.sweeps.study import study_worker
    from sal.tracking.store import LiveRun, client_for

    spec = load_study_spec(write_study(tmp_path, "stalled", n_trials=1))  # 3 epochs, 2 seeds in lockstep
    journal = tmp_path / "st.journal"
    reaped: list[int] = []
    log_epoch = LiveRun.log_epoch

    def reaped_after_first_epoch(live, epoch, row):
        """The event: trial 0's first epoch is handed to its MLflow run. Then another worker's reaper, on its
        own view of the storage, does what Optuna's fail_stale_trials and sal's retry callback do."""
        log_epoch(live, epoch, row)
        if live.tags[TAG_TRIAL] == 0 and not reaped:
            reaper = Queue(StorageRef(str(journal)), "stalled")
            [running] = reaper.trials(optuna.trial.TrialState.RUNNING)
            assert running.number == 0
            reaper.storage.set_trial_state_values(reaper.trial_id(0), optuna.trial.TrialState.FAIL)
            RetryHeartbeatStaleTrialCallback(max_retry=None)(reaper.study, running)
            reaped.append(epoch)

    monkeypatch.setattr(LiveRun, "log_epoch", reaped_after_first_epoch)
    run_study(spec, ref=StorageRef(str(journal)), uri=mlflow_uri)  # the stalled worker, back from its stall
    assert reaped == [1]
    # the worker that reaped it trains the retry (a no-op if the stalled worker already went on with it)
    study_worker(worker_index=1, device=None, ref=StorageRef(str(journal)), spec_json=spec.model_dump_json(),
                 uri=mlflow_uri, poll_s=0)

    trials = optuna.load_study(study_name="stalled", storage=StorageRef(str(journal)).open()).get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    stalled, retry = trials
    assert retry.system_attrs["failed_trial"] == 0 and retry.params == stalled.params

    runs = runs_frame(mlflow_uri, ["sal-study-stalled"], STUDY_RUNS)
    old = runs[runs[f"tags.{TAG_TRIAL}"] == "0"]
    assert len(old) == 2 and set(old["status"]) == {"KILLED"}  # without the check: FINISHED, a 2nd result per seed
    assert set(old[f"tags.{TAG_STATUS}"]) == {"killed"}
    assert all("failed as stale" in m and "duplicate" in m for m in old[f"tags.{TAG_MESSAGE}"])
    client = client_for(mlflow_uri)  # stopped at the next epoch's check, not trained to its end
    assert [[m.step for m in client.get_metric_history(r, "val/acc")] for r in old["run_id"]] == [[1], [1]]
    new = runs[runs[f"tags.{TAG_TRIAL}"] == "1"]
    assert len(new) == 2 and set(new["status"]) == {"FINISHED"}
    finished = runs[runs["status"] == "FINISHED"]
    cell = [f"params.{k}" for k in KNOBS] + ["params.seed"]
    assert finished.groupby(cell).size().tolist() == [1, 1]  # one FINISHED run per (trial parameters, seed)
    assert sorted(finished["params.seed"]) == ["1", "2"]
