"""``sal landscape`` on a real ablation in a real MLflow store, and the report's flatness section."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats as sps

from sal.cli import main
from sal.core.names import TAG_CELL
from sal.queue.engine import StorageRef
from sal.report.build import build_report, load_runs
from sal.report.flatness_report import flatness_sections, flatness_tables, has_flatness
from sal.sweeps.ablation import load_ablation, run_ablation
from sal.tracking.store import client_for

BASE = {"data": {"name": "synthetic", "num_samples": 300}, "model": {"name": "cnn", "width": 4},
        "train": {"epochs": 2, "batch_size": 32, "sharpness_samples": 0}}
CELLS = {"adam": {"method.name": "base"}, "sam": {"method.name": "sam", "method.rho": 0.05}}
SEEDS = ("1", "2")


def _ablate(tmp_path, uri, name, analysis, seeds=len(SEEDS)):
    doc = {"name": name, "base": {**BASE, "analysis": analysis}, "seeds": seeds, "baseline": "adam", "cells": CELLS}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    spec, items = load_ablation(path)
    run_ablation(spec, items, ref=StorageRef(str(tmp_path / f"{name}.journal")), uri=uri)
    return spec


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """A 2-cell x 2-seed ablation that kept its weights and trajectories and measured its trace in-run."""
    tmp = tmp_path_factory.mktemp("flat")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    _ablate(tmp, uri, "flat", {"sharpness": ["trace"], "probes": 8, "samples": 64, "save_weights": True,
                               "trajectory": True})
    return tmp, uri


@pytest.mark.training  # trains 4 small CNNs and measures them
def test_landscape_logs_sharpness_and_barriers_back_to_the_runs_and_the_report_shows_them(measured, capsys):
    tmp, uri = measured
    code = main(["--tracking-uri", uri, "landscape", "flat", "--what",
                 "trace,eig,adaptive,barrier,fourier,kpca,slice2d,trajectory", "--samples", "64", "--probes", "8",
                 "--fourier-steps", "2", "--slice-steps", "3", "--device", "cpu"])
    assert code == 0
    out = capsys.readouterr().out
    assert "barrier within: mean" in out and "barrier between: mean" in out and "logged to 4 runs" in out
    runs = load_runs(uri, "flat")
    assert len(runs) == 4
    for col in ("trace", "trace_se", "eig", "adaptive", "barrier_within", "fourier_within", "kpca1", "slice_rise",
                "trajectory_pc1"):
        assert runs[f"metrics.landscape/{col}"].notna().all(), col
    # between-method barriers pair the runs of one seed: adam's value to sam equals sam's value to adam
    by = runs.assign(cell=runs[f"tags.{TAG_CELL}"], seed=runs["tags.seed"]).set_index(["cell", "seed"])
    for seed in SEEDS:
        assert by.loc[("adam", seed), "metrics.landscape/barrier_vs/sam"] == \
            by.loc[("sam", seed), "metrics.landscape/barrier_vs/adam"] >= 0
    assert (runs["metrics.landscape/fourier_within"] <= runs["metrics.landscape/barrier_within"] + 1e-9).all()
    # Same weights, same data subset (the run's seed draws it), other probes: the final-weight trace agrees
    # with the in-run trace of the last epoch within their standard errors
    gap = (runs["metrics.landscape/trace"] - runs["metrics.sharpness/trace"]).abs()
    se = np.hypot(runs["metrics.landscape/trace_se"], runs["metrics.sharpness/trace_se"])
    assert (gap < 4 * se).all()
    artifacts = {a.path for a in client_for(uri).list_artifacts(runs["run_id"].iloc[0])}
    assert {"weights.pt", "trajectory.pt", "slice2d.png", "trajectory.png"} <= artifacts

    folder, _ = build_report(uri, "flat", tmp / "report")
    md = (folder / "report.md").read_text()
    assert "## Flatness" in md and "Hessian trace" in md and "straight line" in md and "adam - sam" in md
    assert "Sharpness on the declared contrasts" in md
    assert (folder / "figures" / "sharpness_trace.png").is_file()  # Fig. 7: trace per epoch, plastic events
    assert "<h2>Flatness</h2>" in (folder / "report.html").read_text()


@pytest.mark.training
def test_runs_without_saved_weights_exit_2_and_nothing_is_logged(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _ablate(tmp_path, uri, "bare", {}, seeds=1)
    before = load_runs(uri, "bare")
    assert main(["--tracking-uri", uri, "landscape", "bare"]) == 2
    err = capsys.readouterr().err
    assert "2 finished run(s) have no saved weights" in err and "analysis.save_weights" in err
    after = load_runs(uri, "bare")
    assert not any(c.startswith("metrics.landscape/") for c in after.columns)
    assert sorted(before.columns) == sorted(after.columns)


@pytest.mark.parametrize("args, says", [
    (["--what", "trace,hessian"], "unknown measure(s) ['hessian']"),
    (["--probes", "1"], "--probes=1 must be >= 2"),
    (["--device", "gpu0"], "--device='gpu0' is not a device"),
    (["--slice-steps", "4"], "--slice-steps=4 must be odd"),
])
def test_bad_landscape_options_exit_2_before_reading_runs(tmp_path, capsys, args, says):
    uri = f"sqlite:///{tmp_path / 'none.db'}"
    assert main(["--tracking-uri", uri, "landscape", "nothing", *args]) == 2
    err = capsys.readouterr().err
    assert says in err and "fix:" in err


def _frame():
    """Hand-made runs frame: 3 seeds x 2 methods, trace per run, one barrier column each way."""
    trace = {"adam": [10.0, 12.0, 11.0], "sal": [8.0, 9.0, 11.5]}
    rows = []
    for method, values in trace.items():
        for seed, v in zip((1, 2, 3), values):
            rows.append({"status": "FINISHED", f"tags.{TAG_CELL}": method, "tags.method": method,
                         "tags.seed": str(seed),
                         "metrics.landscape/trace": v, "metrics.sharpness/eig": v / 2,
                         "metrics.landscape/barrier_within": 0.1 * seed,
                         f"metrics.landscape/barrier_vs/{'sal' if method == 'adam' else 'adam'}": 0.5 + seed,
                         "metrics.time/landscape_trace_s": 2.0, "metrics.time/sharpness_eig_s": 1.0})
    rows.append({**rows[0], "status": "FAILED", "metrics.landscape/trace": 999.0})  # ignored
    return pd.DataFrame(rows), trace


def test_flatness_tables_match_scipy_and_count_each_pair_once():
    runs, trace = _frame()
    t = flatness_tables(runs, reference="adam")
    s = t["sharpness"].set_index(["measure", "method"])
    sal = s.loc[("Hessian trace", "sal")]
    low, high = sps.t.interval(0.95, 2, loc=np.mean(trace["sal"]), scale=sps.sem(trace["sal"]))
    assert (sal["n"], sal["mean"]) == (3, pytest.approx(np.mean(trace["sal"])))
    assert (sal["ci_low"], sal["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    d = np.subtract(trace["sal"], trace["adam"])
    assert sal["delta"] == pytest.approx(d.mean())
    assert sal["p_ttest"] == pytest.approx(sps.ttest_rel(trace["sal"], trace["adam"]).pvalue)
    assert math.isnan(s.loc[("Hessian trace", "adam")]["delta"])  # the reference is not tested against itself
    assert s.loc[("top eigenvalue", "sal")]["source"].startswith("last measured epoch")
    b = t["barriers"].set_index(["kind", "methods"])
    assert b.loc[("between", "adam - sal")]["mean"] == pytest.approx(2.5) and len(b) == 3
    assert b.loc[("within", "sal")]["mean"] == pytest.approx(0.2)
    cost = t["cost"].set_index("measure")
    assert cost.loc["trace", "mean_s"] == 2.0 and cost.loc["eig", "when"] == "per measured epoch"
    section = flatness_sections(runs, reference="adam")[0]  # as the report renders it
    shown = section.tables[0][1].set_index(["measure", "method"])
    assert section.title == "Flatness" and shown.loc[("Hessian trace", "sal"), "mean"] == "9.5"


@pytest.mark.store
def test_the_declared_contrasts_are_tested_and_corrected_within_their_family():
    from sal.report.flatness_report import contrast_table
    from sal.spec.analysis import Contrast
    from sal.stats.inference import adjust

    runs, trace = _frame()
    table = contrast_table(runs, [Contrast("baselines", "sal", "adam")]).set_index(["measure", "contrast"])
    row = table.loc[("Hessian trace", "sal vs adam")]
    p = sps.ttest_rel(trace["sal"], trace["adam"]).pvalue
    assert row["n"] == 3 and float(row["p (t)"]) == pytest.approx(p, abs=5e-4)
    assert float(row["p corrected"]) == pytest.approx(adjust([p])[0], abs=5e-4)  # a family of one per measure


def test_no_flatness_metrics_no_section():
    runs, _ = _frame()
    bare = runs[[c for c in runs.columns if not c.startswith("metrics.")]]
    assert not has_flatness(bare) and flatness_sections(bare, reference="adam") == []


def test_the_landscape_flags_default_to_the_landscape_options():
    # the CLI wrote its own defaults (probes 32, 100 Fourier steps, 21 slice steps) beside LandscapeOptions'
    from sal.cli import _parser
    from sal.spec.landscape_options import LandscapeOptions

    args = _parser().parse_args(["landscape", "some-ablation"])
    assert (args.probes, args.fourier_steps, args.slice_steps) == (
        LandscapeOptions.probes, LandscapeOptions.fourier_steps, LandscapeOptions.slice_steps)
