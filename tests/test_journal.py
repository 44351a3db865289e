"""Journals after a crash, and journals with real damage; a resumed study's sampler.

A cut last line (a full disk or a kill mid-append) is moved aside and the re-run resumes; an unknown op code,
a missing create-study line or a refused re-run leave the journal byte for byte as it was (exit 2, naming the
file, the line and the fix)."""

from __future__ import annotations

import json
import subprocess
import sys

import optuna
import pytest
import yaml

from sal.cli import main
from sal.core.names import ATTR_REUSED
from sal.queue.engine import KEY, StorageRef
from sal.queue.journal import CUT_SUFFIX
from sal.queue.workqueue import Queue
from sal.spec.config import SpecError
from sal.spec.study_spec import load_study_spec
from sal.sweeps.study import DEFINITION, definition_hash, open_queue, suggest
from tests.helpers import TINY_BASE, write_study


@pytest.fixture()
def ablation_file(tmp_path):
    path = tmp_path / "jr.yaml"
    path.write_text(yaml.safe_dump({"name": "jr", "base": TINY_BASE, "seeds": 1,
                                    "cells": {"adam": {"method.name": "base"}}}))
    return path


def _ablate(tmp_path, path, journal, *extra):
    return main(["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "ablate", str(path), "--storage",
                 str(journal), *extra])


def _queued_journal(tmp_path):
    """A journal of the ablation ``jr`` with one queued trial, written by Optuna (nothing trained)."""
    journal = tmp_path / "q.journal"
    queue = Queue(StorageRef(str(journal)), "jr", kind="ablation")
    queue.study.enqueue_trial({}, user_attrs={KEY: "x|seed=1"})
    return journal


def _refused_unchanged(tmp_path, capsys, path, journal, line: int, needle: str):
    before = journal.read_bytes()
    capsys.readouterr()
    code = _ablate(tmp_path, path, journal)
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"{journal} line {line}" in err and needle in err and "fix:" in err and "Traceback" not in err
    assert journal.read_bytes() == before  # nothing appended, nothing repaired
    assert not (tmp_path / "mlflow.db").exists()


def test_an_unknown_op_code_exits_2_naming_the_line(tmp_path, capsys, ablation_file):
    """Before: AssertionError ("Should not reach"), exit 1, after the MLflow store was created."""
    journal = _queued_journal(tmp_path)
    lines = journal.read_bytes().splitlines(keepends=True)
    lines.insert(2, json.dumps({"op_code": 99, "worker_id": "w"}).encode() + b"\n")
    journal.write_bytes(b"".join(lines))
    _refused_unchanged(tmp_path, capsys, ablation_file, journal, 3, "op_code 99")


def test_a_journal_missing_its_create_study_line_exits_2(tmp_path, capsys, ablation_file):
    """Before: Optuna ignored every line of the uncreated study, sal created it again and trained (exit 0)."""
    journal = _queued_journal(tmp_path)
    lines = journal.read_bytes().splitlines(keepends=True)
    assert json.loads(lines[0])["op_code"] == 0
    journal.write_bytes(b"".join(lines[1:]))
    _refused_unchanged(tmp_path, capsys, ablation_file, journal, 1, "create-study line is missing")


def test_a_refused_study_rerun_writes_nothing_to_the_journal(tmp_path, capsys):
    """Before: the re-run with another base appended a create-study line (and metric names) before the refusal."""
    journal = tmp_path / "s.journal"
    spec = load_study_spec(write_study(tmp_path, "rr", objective={"metric": "val/acc", "aggregate": "mean"}))
    queue = open_queue(spec, StorageRef(str(journal)))
    queue.study.set_user_attr(DEFINITION, definition_hash(spec))
    trial = queue.study.ask()
    suggest(trial, spec)
    queue.study.tell(trial, 0.5)
    before = journal.read_bytes()
    other = write_study(tmp_path, "rr", objective={"metric": "val/loss", "aggregate": "mean"})
    capsys.readouterr()
    code = main(["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "study", "run", str(other), "--storage",
                 str(journal)])
    err = capsys.readouterr().err
    assert code == 2 and "--force-new" in err, err
    assert journal.read_bytes() == before


def test_a_study_deleted_and_created_again_passes_the_check(tmp_path):
    """Optuna frees a deleted study's name: created again, it gets a new id (here 2: ``a`` is 0, its copy 1).
    Before: check_journal kept every name it had seen, gave the new ``a`` no id and refused its lines ("line N
    is for study 2, which no earlier line creates"). Trial ids too are counted as Optuna replays them."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from sal.queue.journal import check_journal

    journal = tmp_path / "a.journal"
    storage = JournalStorage(JournalFileBackend(str(journal)))
    optuna.create_study(study_name="a", storage=storage).optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    optuna.copy_study(from_study_name="a", from_storage=storage, to_storage=storage, to_study_name="a@1")
    optuna.delete_study(study_name="a", storage=storage)
    again = optuna.create_study(study_name="a", storage=storage)
    again.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    assert again._study_id == 2 and again.trials[0]._trial_id == 2  # what Optuna's replay assigned
    check_journal(journal)
    replayed = JournalStorage(JournalFileBackend(str(journal)))
    assert sorted(s.study_name for s in replayed.get_all_studies()) == ["a", "a@1"]
    # a line for a trial id one past the last Optuna created is still refused
    line = {"op_code": 8, "worker_id": "w", "trial_id": 3, "user_attr": {"k": 1}}
    journal.write_bytes(journal.read_bytes() + json.dumps(line).encode() + b"\n")
    with pytest.raises(SpecError, match=f"{journal} line {len(journal.read_bytes().splitlines())} is for trial 3"):
        check_journal(journal)


def test_a_create_trial_for_a_deleted_study_assigns_no_trial_id(tmp_path):
    """Optuna skips a create-trial line for a deleted study (another worker's, racing the delete) and gives it no
    trial id; a later line for that id is for a trial no line created."""
    from sal.queue.journal import check_journal

    journal = _queued_journal(tmp_path)  # study 0 with trial 0
    tail = [{"op_code": 1, "worker_id": "w", "study_id": 0},
            {"op_code": 4, "worker_id": "w", "study_id": 0, "datetime_start": None},
            {"op_code": 8, "worker_id": "w", "trial_id": 1, "user_attr": {"k": 1}}]
    journal.write_bytes(journal.read_bytes() + b"".join(json.dumps(x).encode() + b"\n" for x in tail))
    n = len(journal.read_bytes().splitlines())
    with pytest.raises(SpecError, match=f"line {n} is for trial 1"):
        check_journal(journal)


def test_study_status_after_force_new_is_accepted(tmp_path, capsys):
    """`sal study run --force-new` archives the study (copy, then delete) and starts it again under its name;
    the next command on that journal was refused (exit 2, "restore the journal from a backup")."""
    from sal.sweeps.study import archive_study

    journal, ref = tmp_path / "s.journal", StorageRef(str(tmp_path / "s.journal"))
    spec = load_study_spec(write_study(tmp_path, "fn"))
    queue = open_queue(spec, ref)
    trial = queue.study.ask()
    suggest(trial, spec)
    queue.study.tell(trial, 0.5)
    archived = archive_study(ref, spec.name)  # what run_study(force_new=True) does first
    assert archived and archived.startswith("fn@")
    queue = open_queue(spec, ref)  # the fresh study the forced run then fills
    queue.study.tell(queue.study.ask(), 0.25)
    capsys.readouterr()
    code = main(["study", "status", "fn", "--storage", str(journal)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Traceback" not in err and "backup" not in err


def test_opening_a_stored_queue_appends_nothing(tmp_path):
    """Before: every open of a journal appended a create-study line (Optuna's create_study(load_if_exists))."""
    journal = _queued_journal(tmp_path)
    before = journal.read_bytes()
    Queue(StorageRef(str(journal)), "jr", kind="ablation").counts()
    assert journal.read_bytes() == before


@pytest.mark.store
@pytest.mark.subprocess
def test_a_cut_last_line_is_moved_aside_and_the_rerun_resumes(tmp_path, caplog, ablation_file):
    """A crash mid-append (a full disk) cuts the journal's last line. Before: the re-run was refused for good
    ("line N is cut off"). Now the cut bytes are kept aside, with a warning, and the re-run finishes."""
    journal = tmp_path / "q.journal"
    first = subprocess.run([sys.executable, "-m", "sal", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                            "ablate", str(ablation_file), "--storage", str(journal)], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr  # another process: its trial is reaped as a dead worker's
    whole = journal.read_bytes()
    last = whole.rstrip(b"\n").rfind(b"\n") + 1
    cut = whole[: last + (len(whole) - last) // 2]  # the last line, half written
    journal.write_bytes(cut)
    assert _ablate(tmp_path, ablation_file, journal, "--seeds", "2") == 0
    [kept] = tmp_path.glob(f"q.journal{CUT_SUFFIX}*")
    assert kept.read_bytes() == cut[last:] and f"moved it to {kept}" in caplog.text and "cut off" in caplog.text
    assert journal.read_bytes().startswith(cut[:last])  # every whole line is kept as it was
    trials = optuna.load_study(study_name="jr", storage=StorageRef(str(journal)).open()).get_trials()
    complete = sorted(t.user_attrs[KEY] for t in trials if t.state.name == "COMPLETE")
    assert len(complete) == 2 and len(set(complete)) == 2
    # the trial whose close was cut is reaped and closed with the run it had logged, not trained again
    assert [t.user_attrs.get(ATTR_REUSED) for t in trials if t.state.name == "COMPLETE"].count(True) == 1


def test_a_journal_still_being_appended_to_is_not_cut(tmp_path):
    """The repair takes Optuna's lock: a last line without its newline while another process holds the lock
    is that process's write in progress, not a crash."""
    from optuna.storages.journal import JournalFileSymlinkLock

    from sal.queue.journal import repair_cut_tail

    journal = _queued_journal(tmp_path)
    whole = journal.read_bytes()
    lock = JournalFileSymlinkLock(str(journal))
    lock.acquire()
    journal.write_bytes(whole + b'{"op_code": 8, "wor')
    import threading

    done = []
    repairer = threading.Thread(target=lambda: done.append(repair_cut_tail(journal)))
    repairer.start()
    repairer.join(timeout=0.5)
    assert repairer.is_alive() and not done  # it waits for the writer
    journal.write_bytes(whole + b'{"op_code": 8, "worker_id": "w", "trial_id": 0, "user_attr": {"a": 1}}\n')
    lock.release()
    repairer.join(timeout=30)
    assert done == [None] and not list(tmp_path.glob(f"*{CUT_SUFFIX}*"))


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_an_extended_study_draws_new_parameters(tmp_path, sampler):
    """Every launch seeded its sampler with seed + worker index, so the first draw after a restart repeated
    trial 0's. A study of 3 trials, extended by 3 in a second launch: 6 different parameter sets."""
    spec = load_study_spec(write_study(tmp_path, "ext", sampler={"name": sampler, "seed": 1}))
    ref = StorageRef(str(tmp_path / "s.journal"))
    drawn = []
    for _launch in range(2):
        queue = open_queue(spec, ref, worker_index=0)
        for _ in range(3):
            trial = queue.study.ask()
            drawn.append(tuple(sorted(suggest(trial, spec).items())))
            queue.study.tell(trial, 0.5)
    assert len(set(drawn)) == 6, drawn


@pytest.mark.store
@pytest.mark.subprocess
def test_a_full_mlflow_store_is_one_clear_error_and_the_rerun_resumes(tmp_path, ablation_file):
    """The store's file may not grow (RLIMIT_FSIZE at its size: writes past it fail as on a full disk). Before:
    MLflow's SQLAlchemy traceback, then "MlflowException ... re-run". Now one line that names the cause and the
    fix, exit 1; with space again the same command finishes the sweep."""
    import resource

    db, journal = tmp_path / "mlflow.db", tmp_path / "q.journal"
    cmd = [sys.executable, "-m", "sal", "--tracking-uri", f"sqlite:///{db}", "ablate", str(ablation_file),
           "--storage", str(journal)]
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    limit = db.stat().st_size

    def full_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    full = subprocess.run([*cmd, "--seeds", "2"], capture_output=True, text=True, preexec_fn=full_disk)
    assert full.returncode == 1 and "Traceback" not in full.stderr + full.stdout, full.stderr
    assert "the disk is full" in full.stderr and "fix: free space" in full.stderr
    again = subprocess.run([*cmd, "--seeds", "2"], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    trials = optuna.load_study(study_name="jr", storage=StorageRef(str(journal)).open()).get_trials()
    complete = [t.user_attrs[KEY] for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == 2 and len(set(complete)) == 2


def test_a_worker_whose_trial_was_retried_elsewhere_stops_it_and_goes_on(tmp_path):
    """The check a stalled worker makes (every epoch, before a run ends FINISHED): once its trial was failed as
    stale and queued again, Superseded stops that unit, and the work loop goes on with the queue."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    from sal.queue.workqueue import Superseded, work

    queue = _queued_journal(tmp_path)  # one queued trial
    queue = Queue(StorageRef(str(queue)), "jr")
    ran: list[int] = []

    class StallingJob:
        wait = False

        def claim(self, q):
            return q.claim()

        def run(self, q, claimed):
            [(tid, trial)] = claimed.trials
            q.ensure_held(tid, trial.number)  # still ours
            ran.append(trial.number)
            if trial.number == 0:  # meanwhile another worker failed it as stale and queued it again
                q.storage.set_trial_state_values(tid, optuna.trial.TrialState.FAIL)
                RetryHeartbeatStaleTrialCallback(max_retry=3)(q.study, trial)
                with pytest.raises(Superseded, match="failed as stale"):
                    q.ensure_held(tid, trial.number)
                q.ensure_held(tid, trial.number)
            q.finish(tid, trial, value=1.0)

    assert work(queue, StallingJob(), poll_s=0) == 1  # the superseded unit is not counted; the retry ran
    assert ran == [0, 1] and [t.state.name for t in queue.trials()] == ["FAIL", "COMPLETE"]
