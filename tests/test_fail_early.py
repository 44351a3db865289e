"""Refused before any compute, exit 2, nothing written (issue 29, "Failing late, or writing where it should
not", and its smaller ones): a spec that could only fail after training, a store URL of the other tool, a
store that does not exist yet for a command that only reads, and the command line's own mistakes. Every test
here failed on the code before the fix."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sal.cli import main
from sal.spec.config import SpecError
from tests.helpers import STUDY_BASE, TINY_BASE, free_port, wait_until_serving, write_ablation, write_study


def _tables(path: Path) -> list[str]:
    """The tables of a SQLite file, read with sqlite3 itself (never through MLflow or Optuna)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))


def _optuna_db(path: Path) -> str:
    import optuna

    url = f"sqlite:///{path}"
    optuna.create_study(study_name="q", storage=url)
    return url


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


# ---------------------------------------------------------------- specs that could only fail after training


def test_a_robustness_objective_needs_robustness_on(tmp_path, capsys):
    """Before: accepted; every trial trained, then failed with 'value nan' (no run logs val/robust/*)."""
    spec = write_study(tmp_path, "rob", n_trials=1, seeds=1, objective={"metric": "val/robust/worst/acc"})
    before = _files(tmp_path)
    code = main(["--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "study", "run", str(spec),
                 "--storage", str(tmp_path / "q.journal")])
    err = capsys.readouterr().err
    assert code == 2 and "val/robust/worst/acc" in err and "robustness" in err and "fix:" in err
    assert _files(tmp_path) == before


def test_a_robustness_objective_must_name_a_perturbation_the_runs_score(tmp_path):
    from sal.spec.study_spec import load_study_spec

    base = {**STUDY_BASE, "robustness": {"noise": [0.5]}}
    for metric in ("val/robust/worst/acc", "val/robust/mean/acc", "val/robust/noise_0.5/acc"):
        load_study_spec(write_study(tmp_path, "ok", base=base, objective={"metric": metric}))
    with pytest.raises(SpecError, match=r"val/robust/noise_0.25/acc.*noise_0.5"):
        load_study_spec(write_study(tmp_path, "bad", base=base, objective={"metric": "val/robust/noise_0.25/acc"}))


_ROBUST_1D = {**STUDY_BASE, "data": {"name": "mnist1d", "num_samples": 300}, "model": {"name": "mnist1d_mlp"},
              "robustness": {"noise": [0.5], "corruptions": ["blur"], "levels": [1]}}


def test_a_corruption_objective_on_data_that_are_not_images_is_refused(tmp_path, capsys):
    """MNIST-1D inputs are 1-D signals: a run scores the noise alone and logs no corruption. Before: the check
    listed blur_1 as logged, the study started and every trial scored NaN."""
    from sal.spec.study_spec import load_study_spec

    spec = write_study(tmp_path, "c1d", base=_ROBUST_1D, objective={"metric": "val/robust/blur_1/acc"})
    before = _files(tmp_path)
    code = main(["--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "study", "run", str(spec),
                 "--storage", str(tmp_path / "q.journal")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "objectives.0.metric='val/robust/blur_1/acc'" in err and "data.name='mnist1d'" in err
    assert "fix:" in err and "val/robust/noise_0.5/acc" in err and "Traceback" not in err
    assert _files(tmp_path) == before
    for metric in ("val/robust/noise_0.5/acc", "val/robust/worst/acc"):  # what these runs do log
        load_study_spec(write_study(tmp_path, "ok1d", base=_ROBUST_1D, objective={"metric": metric}))
    image = {**_ROBUST_1D, "data": STUDY_BASE["data"], "model": STUDY_BASE["model"]}  # synthetic: 1 x 8 x 8 images
    load_study_spec(write_study(tmp_path, "img", base=image, objective={"metric": "val/robust/blur_1/acc"}))


def test_corruptions_alone_on_data_that_are_not_images_score_nothing(tmp_path):
    """With corruptions and no noise, a 1-D run scores no perturbation, so not their mean or worst either."""
    from sal.spec.study_spec import load_study_spec

    base = {**_ROBUST_1D, "robustness": {"corruptions": ["blur"], "levels": [1]}}
    with pytest.raises(SpecError, match=r"objectives\.0\.metric='val/robust/worst/acc'.*data\.name='mnist1d'"):
        load_study_spec(write_study(tmp_path, "w1d", base=base, objective={"metric": "val/robust/worst/acc"}))


def test_a_compare_corruption_objective_on_1d_data_is_refused(tmp_path, capsys):
    """`sal compare` tunes each method with a study: its objective goes through the same check."""
    path = tmp_path / "cmp.yaml"
    path.write_text(yaml.safe_dump({
        "name": "c1d", "base": _ROBUST_1D, "methods": {"adam": {"method.name": "base"}, "sam": {"method.name": "sam"}},
        "tuning": {"trials": 1, "seeds": 1, "pruner": {"name": "none"},
                   "objective": {"metric": "val/robust/blur_1/acc"}},
        "evaluation": {"seeds": 2, "first_seed": 1001},
        "analysis": {"treatment": "sam", "contrasts": [["sam", "adam"]], "metrics": ["test/acc"]}}))
    assert main(["compare", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "metric='val/robust/blur_1/acc'" in err and "data.name='mnist1d'" in err and "fix:" in err


def test_which_built_in_data_are_images_matches_what_they_load():
    """The check's fact (DataSpec.images) against the loader's shapes, for the sets that need no files."""
    from sal.spec.config import DataSpec
    from sal.training.data import load_data

    for name in ("digits", "mnist1d", "synthetic"):
        data = DataSpec(name=name, num_samples=100)
        assert data.images is (len(load_data(data).in_shape) == 3), name
    assert DataSpec(name="tests.helpers:anything").images is None  # a loader's shape is known once it loads


def _compare_file(tmp_path, evaluation) -> Path:
    doc = {"name": "ev", "base": TINY_BASE, "methods": {"adam": {"method.name": "base"}, "sam": {"method.name": "sam"}},
           "tuning": {"trials": 1, "seeds": 1, "pruner": {"name": "none"}}, "evaluation": evaluation,
           "analysis": {"treatment": "sam", "contrasts": [["sam", "adam"]], "metrics": ["test/acc"]}}
    path = tmp_path / "ev.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("seeds", [[5, 5], 0, -3, [0, 7]])
def test_compare_evaluation_seeds_are_checked_before_tuning(tmp_path, capsys, seeds):
    """Before: they passed --dry-run; every method tuned, then a raw pydantic ValidationError."""
    from sal.sweeps.compare import load_compare

    path = _compare_file(tmp_path, {"seeds": seeds, "first_seed": 1001})
    with pytest.raises(SpecError, match=r"evaluation\.seeds"):
        load_compare(path)
    assert main(["compare", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "evaluation.seeds" in err and "fix:" in err


def test_an_ablation_with_nothing_to_compare_is_refused(tmp_path, capsys):
    """Before: two cells, no baseline, no sal cell: the grid trained, then its report crashed (KeyError 'family')."""
    from sal.sweeps.ablation import load_ablation

    path = write_ablation(tmp_path, "nocmp", seeds=1, cells={"a": {"method.name": "base"}, "b": {"method.name": "sam"}})
    with pytest.raises(SpecError, match="baseline"):
        load_ablation(path)
    before = _files(tmp_path)
    assert main(["--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "ablate", str(path),
                 "--storage", str(tmp_path / "q.journal")]) == 2
    assert "nothing to compare" in capsys.readouterr().err
    assert _files(tmp_path) == before
    load_ablation(write_ablation(tmp_path, "withbase", seeds=1, baseline="a",
                                 cells={"a": {"method.name": "base"}, "b": {"method.name": "sam"}}))
    alone = write_ablation(tmp_path, "alone", seeds=1)  # the base spec alone (no cells): nothing to compare by design
    alone.write_text(yaml.safe_dump({k: v for k, v in yaml.safe_load(alone.read_text()).items() if k != "cells"}))
    load_ablation(alone)


@pytest.mark.parametrize("std", [1e16, 1e6, float("inf")])
def test_a_noise_std_no_metric_can_name_is_refused(std):
    """Before: 1e16 trained, then MLflow refused the metric name val/robust/noise_1e+16/acc."""
    from sal.spec.config import validate_run

    with pytest.raises(SpecError, match=r"robustness\.noise"):
        validate_run({"robustness": {"noise": [0.5, std]}})


def test_every_accepted_noise_std_gives_a_metric_name_sal_knows():
    from sal.metrics.metricnames import unknown_metric
    from sal.spec.config import MAX_NOISE_STD, validate_run
    from sal.training.robustness import label, metric_name

    for std in (1e-7, 0.25, 1.0, 99.5, MAX_NOISE_STD):
        spec = validate_run({"robustness": {"noise": [std]}})
        assert unknown_metric(metric_name("val", label("noise", spec.robustness.noise[0]))) is None


def test_landscape_checks_its_device_first(tmp_path, capsys):
    """Before: --device cuda:7 was not checked (the store was read, the weights loaded, then torch failed)."""
    import torch

    missing = f"cuda:{torch.cuda.device_count() + 7}"
    db = tmp_path / "m.db"
    assert main(["--tracking-uri", f"sqlite:///{db}", "landscape", "any", "--device", missing]) == 2
    err = capsys.readouterr().err
    assert f"--device={missing!r}" in err and "no such device" in err
    assert not db.exists()


# ---------------------------------------------------------------- a store of the other kind, or none yet


@pytest.mark.store
def test_a_report_on_the_optuna_database_names_it_and_writes_nothing(tmp_path, capsys):
    """Before: MLflow added its tables to the Optuna database, then 'Can't locate revision'."""
    path = tmp_path / "optuna.db"
    url = _optuna_db(path)
    tables = _tables(path)
    for command in (["report", "x", "--out", str(tmp_path / "r")], ["landscape", "x"]):
        assert main(["--tracking-uri", url, *command]) == 2
        err = capsys.readouterr().err
        assert "is an Optuna storage, not an MLflow tracking store" in err and "fix:" in err
        assert _tables(path) == tables
    # a launch that would log there is refused the same way, before anything trains
    spec = write_ablation(tmp_path, "mix", seeds=1)
    assert main(["--tracking-uri", url, "ablate", str(spec), "--storage", str(tmp_path / "q.journal")]) == 2
    assert "is an Optuna storage" in capsys.readouterr().err and _tables(path) == tables
    assert not (tmp_path / "q.journal").exists()


@pytest.mark.store
def test_a_storage_on_the_mlflow_database_names_it_and_writes_nothing(tmp_path, capsys):
    """Before: Optuna added its tables to the MLflow store, then advised `pip install -U optuna`."""
    from sal.tracking.store import client_for

    path = tmp_path / "mlflow.db"
    client_for(f"sqlite:///{path}")
    tables = _tables(path)
    spec = write_ablation(tmp_path, "mix", seeds=1)
    for command in (["study", "status", "x", "--storage", f"sqlite:///{path}"],
                    ["ablate", str(spec), "--storage", f"sqlite:///{path}"]):
        assert main(["--tracking-uri", f"sqlite:///{tmp_path / 'other.db'}", *command]) == 2
        err = capsys.readouterr().err
        assert "is an MLflow tracking store, not an Optuna storage" in err and "pip install" not in err
        assert _tables(path) == tables
    assert not (tmp_path / "other.db").exists()


@pytest.mark.parametrize("command", [["report", "x", "--no-figures"], ["landscape", "x"]])
def test_reading_an_empty_database_creates_nothing(tmp_path, capsys, command):
    """Before: an empty SQLite file got MLflow's 65 tables, then 'no runs'."""
    path = tmp_path / "empty.db"
    path.touch()
    out = ["--out", str(tmp_path / "r")] if command[0] == "report" else []
    assert main(["--tracking-uri", f"sqlite:///{path}", *command, *out]) == 2
    err = capsys.readouterr().err
    assert "holds no MLflow tracking store" in err and "fix:" in err
    assert path.stat().st_size == 0 and _tables(path) == []


def test_another_programs_sqlite_database_is_left_alone(tmp_path, capsys):
    """Before: MLflow (or Optuna) wrote its tables into it beside the user's."""
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE people (name TEXT)")
    spec = write_ablation(tmp_path, "other", seeds=1)
    for args in (["--tracking-uri", f"sqlite:///{path}", "report", "x", "--out", str(tmp_path / "r")],
                 ["--tracking-uri", f"sqlite:///{path}", "ablate", str(spec), "--storage", str(tmp_path / "q.journal")],
                 ["--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "ablate", str(spec), "--storage",
                  f"sqlite:///{path}"]):
        assert main(args) == 2
        assert "a SQLite database of another program (tables people)" in capsys.readouterr().err
        assert _tables(path) == ["people"]
    assert _files(tmp_path) == ["app.db", "other.yaml"]


def test_querying_an_empty_storage_creates_nothing(tmp_path, capsys):
    path = tmp_path / "empty.db"
    path.touch()
    assert main(["study", "status", "x", "--storage", f"sqlite:///{path}"]) == 2
    assert "holds no Optuna storage" in capsys.readouterr().err
    assert path.stat().st_size == 0


@pytest.mark.postgres
def test_a_refused_launch_creates_no_optuna_tables(tmp_path, pg_database, capsys, monkeypatch):
    """Before: the queue's record of its MLflow store was read through Optuna, which created its tables in the
    empty PostgreSQL database; then the launch was refused (a local artifact root for several machines)."""
    import sqlalchemy

    storage, uri = pg_database(), pg_database()
    monkeypatch.delenv("SAL_ARTIFACT_ROOT", raising=False)
    assert main(["--tracking-uri", uri, "ablate", str(write_ablation(tmp_path, "pg", seeds=1)),
                 "--storage", storage]) == 2
    assert "artifact root" in capsys.readouterr().err
    for url in (storage, uri):
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        try:
            assert sqlalchemy.inspect(engine).get_table_names() == []
        finally:
            engine.dispose()


@pytest.mark.postgres
def test_a_connect_timeout_libpq_cannot_read_is_refused(pg_database):
    """Before: the preflight set its own timeout over it and passed; MLflow then retried for two minutes."""
    from sal.queue.preflight import check_database

    url = pg_database()
    check_database(url + "?connect_timeout=3", setting="--tracking-uri")
    with pytest.raises(SpecError, match=r"connect_timeout='abc'.*fix:"):
        check_database(url + "?connect_timeout=abc", setting="--tracking-uri")


# ---------------------------------------------------------------- smaller ones


def test_a_yaml_nested_a_thousand_deep_is_a_spec_error(tmp_path, capsys):
    """Before: RecursionError (PyYAML composes nodes recursively)."""
    for body in ("{a: " * 1000 + "x" + "}" * 1000, "[" * 1000 + "]" * 1000):
        path = tmp_path / "deep.yaml"
        path.write_text(f"name: deep\nseeds: 1\nbase: {{data: {body}}}\n")
        assert main(["ablate", str(path), "--dry-run"]) == 2
        err = capsys.readouterr().err
        assert "nests deeper than" in err and "RecursionError" not in err


def test_a_spec_nested_as_deep_as_sal_reads_still_loads():
    from sal.core.yamlio import MAX_DEPTH, load_unique

    text = "{a: " * (MAX_DEPTH - 1) + "x" + "}" * (MAX_DEPTH - 1)
    node, depth = load_unique(text), 1
    while isinstance(node, dict):
        node, depth = node["a"], depth + 1
    assert node == "x" and depth == MAX_DEPTH


@pytest.mark.parametrize("count", [1_000_000, 300_000_000])
def test_an_absurd_seed_count_is_refused_without_building_it(tmp_path, count, capsys):
    """Before: 300000000 built a list of 300 million seeds (16 GB, MemoryError); 10**6 was accepted."""
    from sal.core.spec_base import MAX_SEEDS

    assert count > MAX_SEEDS
    for kind, path in (("ablate", write_ablation(tmp_path, "many-ablation", seeds=count)),
                       ("study", write_study(tmp_path, "many-study", seeds=count)),
                       ("compare", _compare_file(tmp_path, {"seeds": count}))):
        args = ["study", "run"] if kind == "study" else [kind]
        assert main([*args, str(path), "--dry-run"]) == 2
        err = capsys.readouterr().err
        assert f"{count}" in err and f"at most {MAX_SEEDS}" in err, err


def test_a_name_too_long_for_a_file_is_refused_before_writing(tmp_path, capsys, monkeypatch):
    """Before: the MLflow store was created, then 'File name too long' for the default journal."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sal.queue.engine.default_base", lambda: tmp_path)
    monkeypatch.setattr("sal.tracking.store.default_base", lambda: tmp_path)
    long_name = "n" * 300
    spec = write_ablation(tmp_path, "long-ablation", seeds=1)
    spec.write_text(spec.read_text().replace("name: long-ablation", f"name: {long_name}"))
    study = write_study(tmp_path, "long-study")
    study.write_text(study.read_text().replace("name: long-study", f"name: {long_name}"))
    for command in (["ablate", str(spec)], ["study", "run", str(study)]):
        assert main(["--tracking-uri", "sqlite:///m.db", *command]) == 2
        assert "300 characters" in capsys.readouterr().err
        assert _files(tmp_path) == ["long-ablation.yaml", "long-study.yaml"]


def test_report_out_a_dangling_symlink_is_refused_first(tmp_path, capsys):
    """Before: the report was computed, then mkdir failed on the link (FileExistsError)."""
    link = tmp_path / "out"
    link.symlink_to(tmp_path / "gone")
    assert main(["--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "report", "x", "--out", str(link)]) == 2
    err = capsys.readouterr().err
    assert "--out=" in err and "link" in err and str(tmp_path / "gone") in err
    assert link.is_symlink() and not (tmp_path / "gone").exists()


@pytest.mark.parametrize("model", ["mlp", "cnn", "resnet18", "mnist1d_mlp"])
def test_model_weights_are_refused_for_sals_own_models(model):
    """Before: silently ignored (the run trained from scratch while the spec said pretrained)."""
    from sal.spec.config import validate_run

    with pytest.raises(SpecError, match=rf"model\.weights=.*model\.name={model!r}.*fix:"):
        validate_run({"model": {"name": model, "weights": "/w/x.pth"}})
    with pytest.raises(SpecError, match=r"model\.freeze_backbone"):
        validate_run({"model": {"name": model, "freeze_backbone": True}})
    validate_run({"model": {"name": "resnet50", "weights": "/w/x.pth", "freeze_backbone": True}})


@pytest.mark.parametrize("path", ["/proc/sal-h8/q.journal", "/proc/q.journal", "/sys/q.journal"])
def test_a_folder_that_takes_no_files_fails_the_writability_check(path):
    """Before: /proc and /sys passed (os.access says writable to root), then the journal could not be made."""
    from sal.queue.preflight import check_storage

    with pytest.raises(SpecError, match="cannot create"):
        check_storage(path)


def test_report_out_under_proc_is_refused(tmp_path, capsys):
    assert main(["--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "report", "x", "--out", "/proc/sal-h8"]) == 2
    assert "not writable" in capsys.readouterr().err


def test_only_commands_that_train_promise_a_resume(tmp_path, capsys, monkeypatch):
    """Before: every unexpected error said 'finished runs are kept; re-run the same command to resume'."""
    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("sal.sweeps.datacheck.preset_path", boom)
    assert main(["data", "check", "x"]) == 1
    err = capsys.readouterr().err
    assert "RuntimeError: boom" in err and "resume" not in err and "-v" in err
    monkeypatch.setattr("sal.sweeps.ablation.run_ablation", boom)
    spec = write_ablation(tmp_path, "resume", seeds=1)
    assert main(["--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "ablate", str(spec),
                 "--storage", str(tmp_path / "q.journal")]) == 1
    assert "finished runs are kept; re-run the same command to resume" in capsys.readouterr().err


def test_sal_ui_on_a_busy_port_exits_2_before_creating_the_store(tmp_path, capsys):
    """Before: mlflow's server failed to bind and sal ui exited 0."""
    db = tmp_path / "m.db"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["--tracking-uri", f"sqlite:///{db}", "ui", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"--port={port}" in err and "in use" in err and "fix:" in err
    assert not db.exists()


def _processes() -> dict[int, tuple[str, int, int]]:
    """pid -> (state, parent pid, process group) of every process, from /proc."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # it ended while we looked
            continue
        out[int(stat.parent.name)] = (fields[0], int(fields[1]), int(fields[2]))
    return out


def _group_alive(pgid: int) -> bool:
    """A process of group ``pgid`` runs (a zombie not yet reaped counts as gone)."""
    return any(group == pgid and state != "Z" for state, _, group in _processes().values())


@pytest.mark.subprocess
def test_sighup_to_sal_ui_stops_its_mlflow_processes(tmp_path):
    """Before: SIGHUP (the terminal closed) ended sal ui and left mlflow ui and its server holding the port."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "sal", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "ui",
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until_serving(proc, port)
        groups = {group for _, parent, group in _processes().values() if parent == proc.pid}
        assert len(groups) == 1 and os.getpgid(proc.pid) not in groups  # mlflow runs in a group of its own
        group = groups.pop()
        proc.send_signal(signal.SIGHUP)
        assert proc.wait(timeout=60) == 0
        deadline = time.time() + 30
        while time.time() < deadline and _group_alive(group):
            time.sleep(0.5)
        assert not _group_alive(group)
    finally:
        if proc.poll() is None:
            proc.kill()
