"""What a sweep says at its end: failed runs make it exit 1 with their messages grouped; duplicates and
given-back trials are named as such, not as failures; --tracking-uri and -v work after the subcommand."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
import yaml

from sal.cli import main
from sal.core.names import ATTR_KEY
from sal.queue.engine import StorageRef
from sal.queue.workqueue import Queue
from sal.sweeps.ablation import load_ablation, queue_grid
from sal.tracking.store import runs_frame
from tests.helpers import ABLATION_RUNS, TINY_BASE


def test_a_sweep_with_failed_runs_exits_1_and_says_why(tmp_path, mlflow_uri, capsys):
    empty = tmp_path / "no_images"
    empty.mkdir()  # exists (so the spec is valid), but holds no images: every run of the cell crashes
    path = tmp_path / "crash.yaml"
    path.write_text(yaml.safe_dump({"name": "crash", "base": TINY_BASE, "seeds": 2, "baseline": "ok", "cells": {
        "ok": {"method.name": "base"},
        "broken": {"method.name": "base", "data.name": "imagefolder", "data.root": str(empty)}}}))
    code = main(["ablate", str(path), "--storage", str(tmp_path / "q.journal"), "--tracking-uri", mlflow_uri])
    out, err = capsys.readouterr()
    assert code == 1
    assert "trials: 2 complete, 2 failed" in out
    assert "2 run(s) failed:" in err
    [group] = [line for line in err.splitlines() if line.strip().startswith("2 x ")]
    assert "no_images" in group and "(trials " in group
    assert "--retry-failed" in err
    # Re-running without --retry-failed leaves them failed: still exit 1
    assert main(["ablate", str(path), "--storage", str(tmp_path / "q.journal"), "--tracking-uri", mlflow_uri]) == 1


def test_duplicates_and_given_back_trials_are_named_not_counted_as_failures(tmp_path, mlflow_uri, capsys):
    path = tmp_path / "twice.yaml"
    path.write_text(yaml.safe_dump({"name": "twice", "base": TINY_BASE, "seeds": 2,
                                    "cells": {"adam": {"method.name": "base"}}}))
    spec, items = load_ablation(path)
    ref = StorageRef(str(tmp_path / "q.journal"))
    queue_grid(ref, spec, items, retry_failed=False)
    queue = Queue(ref, spec.name)
    for t in queue.study.get_trials(deepcopy=True):  # a second launcher queued the same grid at the same moment
        queue.study.enqueue_trial({}, user_attrs=t.user_attrs, skip_if_exists=False)
    queue.give_back(queue.claim(), "interrupted")  # a worker took trial 0 and was interrupted (Ctrl-C)
    code = main(["ablate", str(path), "--storage", str(ref.url), "--tracking-uri", mlflow_uri])
    out, err = capsys.readouterr()
    assert code == 0 and "failed:" not in err
    assert ("trials: 2 complete, 2 duplicate (closed: an older trial holds the cell), "
            "1 given back (interrupted), queued again") in out
    assert "fail 3" not in out
    seeds = runs_frame(mlflow_uri, ["sal-ablation-twice"], ABLATION_RUNS)
    assert len(seeds) == 2  # each seed trained once


@pytest.mark.store
def test_tracking_uri_and_verbose_after_the_subcommand(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'after.db'}"
    assert main(["train", "--tracking-uri", uri, "-v", "--experiment", "after", "--set", "train.epochs=1",
                 "--set", "data.name=synthetic", "--set", "model.name=mlp", "--set", "method.name=base"]) == 0
    assert len(runs_frame(uri, ["after"])) == 1
    assert f"in {uri}" in capsys.readouterr().out
    # before the subcommand still works, and a value after it wins over one before it
    other = f"sqlite:///{tmp_path / 'other.db'}"
    assert main(["--tracking-uri", other, "train", "--tracking-uri", uri, "--experiment", "after",
                 "--set", "train.epochs=1", "--set", "data.name=synthetic", "--set", "model.name=mlp",
                 "--set", "method.name=base"]) == 0
    assert len(runs_frame(uri, ["after"])) == 2 and not (tmp_path / "other.db").exists()


def _crashing_study(tmp_path, *, n_trials: int):
    """A study whose every trial crashes: its image folder has no class folders."""
    empty = tmp_path / "no_images"
    empty.mkdir()
    path = tmp_path / "crashing.yaml"
    path.write_text(yaml.safe_dump({"name": "crashing", "seeds": 1, "n_trials": n_trials, "pruner": {"name": "none"},
                                    "base": {**TINY_BASE, "data": {"name": "imagefolder", "root": str(empty)}},
                                    "space": {"optim.lr": {"low": 1e-3, "high": 1e-1, "log": True}}}))
    return path


def test_a_study_whose_trials_crash_exits_1_with_their_message(tmp_path, mlflow_uri, capsys):
    path = _crashing_study(tmp_path, n_trials=2)
    code = main(["study", "run", str(path), "--storage", str(tmp_path / "s.journal"), "--tracking-uri", mlflow_uri])
    out, err = capsys.readouterr()
    assert code == 1 and "trials: 2 failed" in out
    assert "2 x FileNotFoundError: Couldn't find any class folder" in err


def test_worker_died_and_heartbeat_lost_are_named(tmp_path):
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    from sal.outcomes import describe_outcomes, unresolved_failures
    from sal.queue.engine import STATUS, WORKER

    ref = StorageRef(str(tmp_path / "q.journal"))
    queue = Queue(ref, "deaths")
    study, storage = queue.study, queue.storage
    for key in ("a", "b", "c"):
        study.enqueue_trial({}, user_attrs={ATTR_KEY: key})
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs on this host
    [(tid, _)] = queue.claim().trials
    storage.set_trial_user_attr(tid, WORKER, f"{socket.gethostname()}:{dead.pid}")
    assert queue.reap() == [0]
    [(tid, trial)] = queue.claim().trials  # trial 1: its heartbeat went stale; Optuna failed and retried it
    storage.set_trial_state_values(tid, TrialState.FAIL)
    RetryHeartbeatStaleTrialCallback()(study, storage.get_trial(tid))
    [(tid, trial)] = queue.claim().trials  # trial 2: really crashed
    storage.set_trial_user_attr(tid, STATUS, "failed")
    storage.set_trial_state_values(tid, TrialState.FAIL)
    assert describe_outcomes(study) == ("2 waiting, 1 re-queued (its worker died), 1 re-queued (heartbeat lost), "
                                        "1 failed")
    assert [t.number for t in unresolved_failures(study)] == [2]


@pytest.mark.subprocess
def test_a_crashing_trial_reaches_the_user_as_one_line_not_a_traceback(tmp_path):
    import subprocess
    import sys

    path = _crashing_study(tmp_path, n_trials=1)
    proc = subprocess.run([sys.executable, "-m", "sal", "study", "run", str(path), "--storage",
                           str(tmp_path / "s.journal"), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "Couldn't find any class folder" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout  # Optuna logged it with its traceback on old main
