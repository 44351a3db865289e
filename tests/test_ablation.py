"""Ablation grids on Optuna's queue: expansion, resuming, several workers, a killed worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from sal.core.names import (
    ATTR_CELL,
    ATTR_CONTEXT,
    ATTR_KEY,
    ATTR_STATUS,
    ATTR_TRIAL_SPEC,
    ATTR_WORKER,
    EVENT_DEFORM,
    EVENT_NOISE,
    TAG_CELL,
)
from sal.queue.engine import StorageRef
from sal.spec.config import SpecError, flatten
from sal.sweeps.ablation import load_ablation, queue_grid, run_ablation
from sal.tracking.store import client_for, runs_frame
from tests.helpers import ABLATION_RUNS, TINY_BASE, start_until, write_ablation

REPO = Path(__file__).resolve().parents[1]


def _trials(ref, name):
    return optuna.load_study(study_name=name, storage=ref.open()).get_trials(deepcopy=False)


def _finished_runs(uri, name):
    """The FINISHED training runs (seed runs, not the parent runs that group them)."""
    runs = runs_frame(uri, [f"sal-ablation-{name}"], filter_string=ABLATION_RUNS)
    return runs[runs["status"] == "FINISHED"] if len(runs) else runs


def test_grid_is_cells_times_axes_times_seeds(tmp_path):
    path = write_ablation(tmp_path, "grid", axes={"optim.lr": [0.01, 0.001], "data.name": ["synthetic", "digits"]})
    spec, items = load_ablation(path)
    assert len(items) == 2 * 2 * 2 * 3
    assert {i.context for i in items} == {"lr=0.01", "lr=0.001"}
    assert {i.spec.data.name for i in items} == {"synthetic", "digits"}
    assert len({i.key for i in items}) == len(items)
    sal_items = [i for i in items if i.cell == "sal"]
    assert all(i.spec.method.warmup == 0 for i in sal_items)


def test_bundles_and_placeholders(tmp_path):
    path = write_ablation(tmp_path, "bundles",
                          base={**TINY_BASE, "model": {"name": "resnet50", "weights": "w/{model.name}.pt"}},
                          axes={"dataset": [{"label": "a", "data.label": "set_a"},
                                            {"label": "b", "data.label": "set_b"}]})
    _, items = load_ablation(path)
    assert {i.spec.data.display_name for i in items} == {"set_a", "set_b"}
    assert {i.context for i in items} == {""}
    assert items[0].spec.model.weights == "w/resnet50.pt"


def test_bad_grids_fail_before_any_run(tmp_path):
    with pytest.raises(SpecError, match="cell sal: method.rhoo: unknown setting"):
        load_ablation(write_ablation(tmp_path, "bad1", cells={"sal": {"method.name": "sal", "method.rhoo": 1}}))
    with pytest.raises(SpecError, match="baseline='nope' is not a cell"):
        load_ablation(write_ablation(tmp_path, "bad2", baseline="nope"))
    with pytest.raises(SpecError, match="seeds"):
        load_ablation(write_ablation(tmp_path, "bad3", seeds=0))


CPU_PRESETS = ("quick", "flatness_quick", "attribution", "noise_dose", "paper_constants",
               "campaign_attribution_mnist1d", "campaign_attribution_digits", "campaign_dose_mnist1d",
               "campaign_dose_digits")


def test_paper_presets_name_their_missing_data(tmp_path, monkeypatch):
    monkeypatch.setenv("SAL_DATA", str(tmp_path))
    for preset in sorted((REPO / "ablations").glob("*.yaml")):
        if preset.stem not in CPU_PRESETS:  # the CPU presets need no data
            with pytest.raises(SpecError, match=f"needs '{tmp_path}/"):
                load_ablation(preset)


def test_every_preset_expands_when_its_data_is_there(tmp_path, monkeypatch):
    monkeypatch.setenv("SAL_DATA", str(tmp_path))
    for folder in ("imagenette", "imagewoof2", "tiny_imagenet", "eurosat_rgb", "pacs", "cifar10", "corel1k", "weights"):
        (tmp_path / folder).mkdir()
    (tmp_path / "weights" / "densenet201.pth").touch()
    counts = {p.stem: len(load_ablation(p)[1]) for p in (REPO / "ablations").glob("*.yaml")}
    assert counts == {"quick": 35, "flatness_quick": 9, "paper_table1": 200, "paper_table2": 140, "paper_table3": 80,
                      "paper_table4": 80, "stable_vs_degraded": 180, "attribution": 50, "noise_dose": 60,
                      "paper_constants": 40, "campaign_attribution_mnist1d": 50, "campaign_attribution_digits": 50,
                      "campaign_dose_mnist1d": 60, "campaign_dose_digits": 60}


@pytest.mark.store
def test_rerun_finishes_only_what_is_missing(tmp_path, mlflow_uri):
    spec, items = load_ablation(write_ablation(tmp_path, "resume"))
    ref = StorageRef(str(tmp_path / "q.journal"))
    first = run_ablation(spec, items[:2], ref=ref, uri=mlflow_uri)
    assert first["queue"]["queued"] == [i.key for i in items[:2]]
    second = run_ablation(spec, items, ref=ref, uri=mlflow_uri)
    assert len(second["queue"]["done"]) == 2 and len(second["queue"]["queued"]) == 4
    assert second["states"] == {"COMPLETE": 6}
    runs = _finished_runs(mlflow_uri, "resume")
    assert len(runs) == 6
    assert sorted(zip(runs[f"tags.{TAG_CELL}"], runs["tags.seed"])) == sorted((i.cell, str(i.seed)) for i in items)


@pytest.mark.store
def test_noise_only_never_deforms_and_deform_only_never_injects_noise(tmp_path, mlflow_uri):
    stressful = {"method.warmup": 1, "method.theta": 0.01, "method.eps_acc": 0.01}
    path = write_ablation(tmp_path, "parts", seeds=2, baseline="noise",
                          base={**TINY_BASE, "data": {"name": "digits"}, "train": {"epochs": 6}},
                          cells={"noise": {"method.name": "sal_noise_only", **stressful},
                                 "deform": {"method.name": "sal_deform_only", **stressful}})
    spec, items = load_ablation(path)
    run_ablation(spec, items, ref=StorageRef(str(tmp_path / "q.journal")), uri=mlflow_uri)
    client = client_for(mlflow_uri)
    runs = _finished_runs(mlflow_uri, "parts")
    assert len(runs) == 4
    for _, run in runs.iterrows():
        noise = sum(m.value for m in client.get_metric_history(run["run_id"], EVENT_NOISE))
        deform = sum(m.value for m in client.get_metric_history(run["run_id"], EVENT_DEFORM))
        if run[f"tags.{TAG_CELL}"] == "noise":
            assert deform == 0 and noise > 0
        else:
            assert noise == 0 and deform > 0


@pytest.mark.subprocess
def test_two_workers_and_two_launchers_run_each_cell_once(tmp_path, mlflow_uri):
    spec, items = load_ablation(write_ablation(tmp_path, "pair"))
    ref = StorageRef(str(tmp_path / "q.journal"))
    # Two launchers queue the same grid at once: every key is queued twice.
    queue_grid(ref, spec, items, retry_failed=False)
    study = optuna.load_study(study_name=spec.name, storage=ref.open())
    for i in items:
        study.enqueue_trial({}, user_attrs={ATTR_KEY: i.key, ATTR_CELL: i.cell, ATTR_CONTEXT: i.context,
                                            "seed": i.seed, ATTR_TRIAL_SPEC: flatten(i.spec)})
    out = run_ablation(spec, items, ref=ref, uri=mlflow_uri, workers=2)
    assert out["failed_workers"] == 0
    trials = _trials(ref, spec.name)
    complete = [t.user_attrs[ATTR_KEY] for t in trials if t.state.name == "COMPLETE"]
    assert sorted(complete) == sorted(i.key for i in items)  # each once
    dupes = [t for t in trials if t.state.name == "FAIL"]
    assert len(dupes) == len(items) and all("duplicate" in t.user_attrs[ATTR_STATUS] for t in dupes)
    workers = {t.user_attrs[ATTR_WORKER] for t in trials if t.state.name == "COMPLETE"}
    assert len(workers) == 2  # both processes took work
    assert len(_finished_runs(mlflow_uri, "pair")) == len(items)


@pytest.mark.subprocess
def test_a_killed_worker_is_reaped_and_the_grid_completes_without_duplicates(tmp_path, mlflow_uri):
    path = write_ablation(tmp_path, "killed", seeds=4,
                          base={**TINY_BASE, "data": {"name": "digits"}, "train": {"epochs": 8}})
    journal = tmp_path / "q.journal"
    cmd = [sys.executable, "-m", "sal", "--tracking-uri", mlflow_uri, "ablate", str(path), "--storage", str(journal)]
    proc = start_until(cmd, journal, "killed", complete=2)
    ref = StorageRef(str(journal))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    states = [t.state.name for t in _trials(ref, "killed")]
    assert "RUNNING" in states and states.count("COMPLETE") < 8
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    trials = _trials(ref, "killed")
    complete = [t.user_attrs[ATTR_KEY] for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == 8 and len(set(complete)) == 8
    died = [t for t in trials if t.state.name == "FAIL"]
    assert died and all(t.user_attrs[ATTR_STATUS] == "worker died" for t in died)
    runs = _finished_runs(mlflow_uri, "killed")
    assert len(runs) == 8 and len(set(zip(runs[f"tags.{TAG_CELL}"], runs["tags.seed"]))) == 8


@pytest.mark.subprocess
@pytest.mark.parametrize("pack,running", [("off", 1), ("on", 3)])  # packed: the cell's 3 seeds run together
def test_ctrl_c_gives_the_running_trial_back_and_stops(tmp_path, mlflow_uri, pack, running):
    # packed seeds train fast: enough epochs that the interrupt always lands while the first cell trains
    path = write_ablation(tmp_path, "interrupted", seeds=3, base={**TINY_BASE, "data": {"name": "digits"},
                                                                  "train": {"epochs": 10 if pack == "off" else 600,
                                                                            "pack": pack}})
    journal = tmp_path / "q.journal"
    cmd = [sys.executable, "-m", "sal", "--tracking-uri", mlflow_uri, "ablate", str(path), "--storage", str(journal)]
    proc = start_until(cmd, journal, "interrupted", complete=0)
    ref = StorageRef(str(journal))
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "re-run the same command to resume" in err, err[-3000:]
    trials = _trials(ref, "interrupted")
    given_back = [t for t in trials if t.state.name == "FAIL"]
    assert len(given_back) == running and all(t.user_attrs[ATTR_STATUS] == "interrupted" for t in given_back)
    for back in given_back:
        retries = [t for t in trials if t.system_attrs.get("failed_trial") == back.number]
        assert len(retries) == 1 and retries[0].state.name == "WAITING"
        assert retries[0].user_attrs[ATTR_KEY] == back.user_attrs[ATTR_KEY]
    assert subprocess.run(cmd, capture_output=True, timeout=300).returncode == 0
    complete = [t.user_attrs[ATTR_KEY] for t in _trials(ref, "interrupted") if t.state.name == "COMPLETE"]
    assert len(complete) == 6 and len(set(complete)) == 6
