"""sal writes only its own files: `sal report --out` and `sal study best --out` never delete or overwrite a
user's files, refuse a folder of them with exit 2, and replace only what an earlier sal run wrote."""

from __future__ import annotations

import json
import os

import optuna
import pytest
import yaml

from sal.cli import main
from sal.core.names import ATTR_STUDY_BASE
from sal.queue.engine import StorageRef
from sal.sweeps.ablation import load_ablation, run_ablation
from tests.helpers import TINY_BASE


@pytest.fixture(scope="module")
def tiny_ablation(tmp_path_factory, mlflow_uri):
    """2 cells x 3 seeds on the synthetic set, in the session's MLflow store."""
    tmp = tmp_path_factory.mktemp("outs")
    path = tmp / "outs.yaml"
    path.write_text(yaml.safe_dump({"name": "outs", "base": TINY_BASE, "seeds": 3, "baseline": "adam",
                                    "cells": {"adam": {"method.name": "base"},
                                              "sal": {"method.name": "sal", "method.warmup": 0}}}))
    spec, items = load_ablation(path)
    run_ablation(spec, items, ref=StorageRef(str(tmp / "q.journal")), uri=mlflow_uri)
    return tmp


def _report(uri, out, *extra):
    return main(["--tracking-uri", uri, "report", "outs", "--out", str(out), "--no-figures", *extra])


def _tree(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_folder_of_user_files_is_refused_and_left_alone(tiny_ablation, mlflow_uri, capsys):
    out = tiny_ablation / "mine"
    (out / "data").mkdir(parents=True)
    (out / "thesis.tex").write_text("two years of work")
    (out / "data" / "raw.csv").write_text("1,2,3")
    before = _tree(out)
    assert _report(mlflow_uri, out) == 2
    err = capsys.readouterr().err
    assert "already holds files sal did not write" in err and "thesis.tex" in err and "fix:" in err
    assert _tree(out) == before
    assert sorted(p.name for p in out.iterdir()) == ["data", "thesis.tex"]  # no staging folder left behind


def test_out_dot_in_a_working_folder_deletes_nothing(tiny_ablation, mlflow_uri, monkeypatch, capsys):
    work = tiny_ablation / "project"
    (work / "src").mkdir(parents=True)
    (work / "src" / "train.py").write_text("print('hi')")
    (work / "notes.md").write_text("notes")
    before = _tree(work)
    monkeypatch.chdir(work)
    assert _report(mlflow_uri, ".") == 2
    assert "--out=" in capsys.readouterr().err
    assert _tree(work) == before and sorted(p.name for p in work.iterdir()) == ["notes.md", "src"]


@pytest.mark.store
def test_rerun_into_its_own_folder_replaces_only_its_files(tiny_ablation, mlflow_uri, capsys):
    out = tiny_ablation / "rep"
    assert main(["--tracking-uri", mlflow_uri, "report", "outs", "--out", str(out)]) == 0  # with figures
    marker = json.loads((out / ".sal-report").read_text())
    first = set(marker["files"])
    assert {"summary.csv", "report.md", "report.html", "table.tex", "figures/strip.png"} <= first
    assert set(_tree(out)) == first | {".sal-report"}
    # Again, without figures: the earlier report's figures go (sal wrote them), nothing else changes.
    assert _report(mlflow_uri, out) == 0
    # every run logs per-class F1 and its cost, so their families' rows are written beside summary.csv
    written = {"summary.csv", "report.md", "report.html", "table.tex", "per_class_f1.csv", "cost.csv"}
    assert set(json.loads((out / ".sal-report").read_text())["files"]) == written
    assert not (out / "figures").exists()
    assert sorted(p.name for p in out.iterdir()) == sorted(written | {".sal-report"})
    # A file the user put beside the report since: the folder is no longer sal's alone, so it is refused.
    (out / "my_notes.txt").write_text("keep me")
    assert _report(mlflow_uri, out) == 2
    assert (out / "my_notes.txt").read_text() == "keep me" and (out / "summary.csv").exists()
    capsys.readouterr()


def test_an_out_below_a_file_is_refused_before_any_work(tiny_ablation, mlflow_uri, capsys):
    blocker = tiny_ablation / "a_file"
    blocker.write_text("x")
    assert _report(mlflow_uri, blocker / "sub") == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and "--out" in err and "Traceback" not in err
    assert blocker.read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any folder")
def test_an_unwritable_out_is_refused(tiny_ablation, mlflow_uri, capsys):
    locked = tiny_ablation / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert _report(mlflow_uri, locked / "rep") == 2
        assert "is not writable" in capsys.readouterr().err
    finally:
        locked.chmod(0o700)


def _study_with_one_trial(journal, name="bestof"):
    storage = StorageRef(str(journal)).open()
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    study.set_user_attr(ATTR_STUDY_BASE, {"data": {"name": "digits"}, "method": {"name": "sal"}})
    study.add_trial(optuna.trial.create_trial(
        params={"method.rho": 0.002}, distributions={"method.rho": optuna.distributions.FloatDistribution(1e-4, 1e-2)},
        value=0.9))


def test_study_best_never_overwrites_a_file_sal_did_not_write(tmp_path, capsys):
    journal = tmp_path / "s.journal"
    _study_with_one_trial(journal)
    theirs = tmp_path / "best.yaml"
    theirs.write_text("my: hand-written spec\n")
    args = ["study", "best", "bestof", "--storage", str(journal), "--out"]
    assert main([*args, str(theirs)]) == 2
    assert "sal did not write it" in capsys.readouterr().err
    assert theirs.read_text() == "my: hand-written spec\n"
    ours = tmp_path / "out" / "best.yaml"
    assert main([*args, str(ours)]) == 0
    assert yaml.safe_load(ours.read_text())["method"]["rho"] == 0.002
    assert main([*args, str(ours)]) == 0  # its own file: replaced
    assert sorted(p.name for p in ours.parent.iterdir()) == ["best.yaml"]  # no temp file left


def test_an_unknown_report_metric_names_the_metrics_there_are(tiny_ablation, mlflow_uri, capsys):
    assert _report(mlflow_uri, tiny_ablation / "r_metric", "--metric", "test/accuracy") == 2
    err = capsys.readouterr().err
    assert "--metric='test/accuracy': no run of this ablation logged it" in err and "test/acc" in err
    assert "do not pair" not in err
    assert not (tiny_ablation / "r_metric").exists()


def test_an_empty_user_folder_or_a_link_inside_out_counts_as_the_users(tiny_ablation, mlflow_uri, capsys):
    out = tiny_ablation / "links"
    (out / "empty_but_mine").mkdir(parents=True)
    assert _report(mlflow_uri, out) == 2
    (out / "empty_but_mine").rmdir()
    (out / "link").symlink_to(tiny_ablation)
    assert _report(mlflow_uri, out) == 2
    assert "link" in capsys.readouterr().err and (out / "link").is_symlink()
