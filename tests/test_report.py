"""Reports end to end: a real ablation in MLflow, `sal report`, its files, its errors, its HTML in Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
import yaml

from sal.cli import main
from sal.core.names import TAG_CELL, TAG_KIND
from sal.queue.engine import StorageRef
from sal.report.build import paper_numbers
from sal.spec.analysis import legacy_plan
from sal.stats.inference import adjust
from sal.stats.summary import SUMMARY_COLUMNS, ReportOptions, summarize
from sal.sweeps.ablation import load_ablation, run_ablation
from sal.tracking.store import runs_frame

CONTRACT = ["dataset", "metric", "method", "baseline", "n", "mean", "sd", "ci_low", "ci_high", "delta", "delta_ci_low",
            "delta_ci_high", "p_ttest", "p_wilcoxon", "p_holm", "effect_dz", "win_rate", "verdict"]


@pytest.fixture(scope="module")
def ablation(tmp_path_factory, mlflow_uri):
    """A 3-cell x 5-seed ablation on digits plus a cell that always diverges, in the session's store."""
    tmp = tmp_path_factory.mktemp("abl")
    doc = {"name": "rep", "seeds": 5, "baseline": "adam",
           "base": {"data": {"name": "digits"}, "model": {"name": "mlp", "width": 16},
                    "optim": {"lr": 0.003}, "train": {"epochs": 5, "batch_size": 64}},
           "cells": {"adam": {"method.name": "base"},
                     "sal": {"method.name": "sal", "method.warmup": 1, "method.theta": 0.01, "method.eps_acc": 0.01},
                     "sam": {"method.name": "sam"},
                     "blowup": {"method.name": "base", "optim.name": "sgd", "optim.lr": 1.0e6}}}
    path = tmp / "rep.yaml"
    path.write_text(yaml.safe_dump(doc))
    spec, items = load_ablation(path)
    run_ablation(spec, items, ref=StorageRef(str(tmp / "q.journal")), uri=mlflow_uri)
    return tmp


def _report(mlflow_uri, out, *extra):
    return main(["--tracking-uri", mlflow_uri, "report", "rep", "--out", str(out), *extra])


@pytest.mark.store
def test_report_writes_every_output_with_the_contract_columns(ablation, mlflow_uri, capsys):
    out = ablation / "report"
    assert _report(mlflow_uri, out, "--metric", "test/acc", "--metric", "test/loss", "--filter",
                   f"tags.`{TAG_CELL}` != 'blowup'") == 0
    # the marker lists the files sal wrote; every run logs per-class F1 and its cost, so those families are there
    assert {p.name for p in out.iterdir()} == {"summary.csv", "report.md", "report.html", "table.tex", "figures",
                                               "per_class_f1.csv", "cost.csv", ".sal-report"}
    summary = pd.read_csv(out / "summary.csv", keep_default_na=False, na_values=[""])
    assert set(CONTRACT) <= set(summary.columns)
    # default plan: the treatment sal against every other cell (blowup filtered out), one family per metric;
    # one row per (dataset, metric, contrast) plus a reference row for each cell that is only compared with
    assert len(summary) == 2 * (2 + 2)
    assert not summary.duplicated(["dataset", "metric", "method", "baseline"]).any()
    acc = summary[summary["metric"] == "test/acc"]
    contrasts = acc[acc["verdict"] != "reference"]
    assert sorted(zip(contrasts["method"], contrasts["baseline"])) == [("sal", "adam"), ("sal", "sam")]
    assert set(contrasts["treatment"]) == {"sal"} and set(contrasts["family"]) == {"all"}
    assert sorted(acc.loc[acc["verdict"] == "reference", "method"]) == ["adam", "sam"] and (acc["n"] == 5).all()
    # p_holm is Holm over the family {sal vs adam, sal vs sam} for this metric
    assert contrasts["p_holm"].tolist() == pytest.approx(adjust(contrasts["p_ttest"]))
    assert contrasts["exploratory"].all()
    md = (out / "report.md").read_text()
    assert "cannot reach significance" in md and "exploratory" in md
    assert "contrasts dropped because --filter left no runs of ['blowup']" in md
    figures = {p.name for p in (out / "figures").iterdir()}
    assert {"strip.png", "slopes.png", "forest.png", "learning_curves.png", "stress_trace.png", "loss_vs_stress.png",
            "stress_histogram.png", "accuracy_gap.png"} <= figures
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(figures)
    assert "\\begin{tabular}" in (out / "table.tex").read_text()
    reports = runs_frame(mlflow_uri, ["sal-ablation-rep"], f"tags.`{TAG_KIND}` = 'report'")
    assert len(reports) >= 1
    printed = capsys.readouterr().out
    assert re.search(r"sal vs adam\s+delta [+-]\d\.\d{4}", printed)


@pytest.mark.store
def test_diverged_seeds_count_against_the_method_with_the_worst_score(ablation, mlflow_uri, capsys):
    # old main: exit 2 with "--retry-failed", which re-runs nothing for a diverged run
    assert _report(mlflow_uri, ablation / "r2", "--baseline", "adam") == 0
    summary = pd.read_csv(ablation / "r2" / "summary.csv", keep_default_na=False, na_values=[""])
    blowup = summary[(summary["method"] == "blowup") & (summary["metric"] == "test/acc")].iloc[0]
    assert (blowup["n"], blowup["n_diverged"], blowup["diverged_seeds"]) == (5, 5, "1,2,3,4,5")
    assert blowup["mean"] == 0.0 and blowup["delta"] < -0.5  # every seed scored 0 accuracy
    md = (ablation / "r2" / "report.md").read_text()
    assert "blowup diverged on seed(s) 1,2,3,4,5" in md and "departs from the plan" in md


def test_unknown_ablation_and_missing_baseline_exit_2(ablation, mlflow_uri, capsys):
    assert main(["--tracking-uri", mlflow_uri, "report", "nope", "--out", str(ablation / "r3")]) == 2
    assert "no runs of ablation 'nope'" in capsys.readouterr().err
    assert _report(mlflow_uri, ablation / "r4", "--baseline", "adamw", "--filter",
                   f"tags.`{TAG_CELL}` != 'blowup'") == 2
    assert "--baseline='adamw' has no runs" in capsys.readouterr().err
    assert not (ablation / "r3").exists() and not (ablation / "r4").exists()


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed (scripts/test.sh "
                    "installs it when run as root with apt-get)")
@pytest.mark.browser
def test_report_html_renders_with_every_figure_in_chromium(ablation, mlflow_uri):
    out = ablation / "report_html"
    assert _report(mlflow_uri, out, "--filter", f"tags.`{TAG_CELL}` != 'blowup'") == 0
    dom = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={ablation / 'chrome'}", "--virtual-time-budget=5000", "--dump-dom",
         (out / "report.html").as_uri()], capture_output=True, text=True, timeout=120).stdout
    images = re.findall(r"<img[^>]*>", dom)
    assert len(images) >= 8
    assert all('data-loaded="1"' in img for img in images)  # each PNG decoded by the browser
    assert "Significance report: rep" in dom


def _tidy(deltas: dict[str, list[float]], base: list[float]) -> pd.DataFrame:
    rows = [("d", "", "test/acc", "base", s + 1, v, False) for s, v in enumerate(base)]
    for method, d in deltas.items():
        rows += [("d", "", "test/acc", method, s + 1, b + x, False) for s, (b, x) in enumerate(zip(base, d))]
    return pd.DataFrame(rows, columns=["dataset", "context", "metric", "method", "seed", "value", "diverged"])


def test_verdicts_on_crafted_ablations():
    base = list(0.90 + np.linspace(-0.004, 0.004, 10))
    rng = np.random.default_rng(0)
    tidy = _tidy({"win": list(0.01 + rng.normal(0, 0.001, 10)), "same": list(rng.normal(0, 0.0003, 10)),
                  "noisy": list(rng.normal(0.002, 0.01, 10))}, base)
    plan = legacy_plan(["base", "win", "same", "noisy"], "base", ["test/acc"])
    s = summarize(tidy, ReportOptions(plan=plan)).set_index("method")
    assert list(s.columns) == [c for c in SUMMARY_COLUMNS if c != "method"]
    assert s.loc["win", "verdict"] == "better" and s.loc["same", "verdict"] == "equivalent"
    assert s.loc["noisy", "verdict"] == "inconclusive" and s.loc["base", "verdict"] == "reference"
    assert s.loc["win", "p_holm"] == pytest.approx(adjust(s.loc[["noisy", "same", "win"], "p_ttest"])[2])


def test_paper_numbers_sit_beside_ours():
    tidy = pd.DataFrame({"dataset": ["imagenette"] * 2, "context": ["model=resnet50"] * 2, "method": ["adam", "sal"],
                         "model.name": ["resnet50"] * 2, "optim.name": ["adam"] * 2, "data.resolution": [64, 64],
                         "method.name": ["base", "sal"]})
    summary = pd.DataFrame({"dataset": ["imagenette"] * 2, "context": ["model=resnet50"] * 2, "method": ["adam", "sal"],
                            "metric": ["test/acc"] * 2, "baseline": ["adam"] * 2})
    assert paper_numbers(summary, tidy, 1).tolist() == pytest.approx([0.8143, 0.8204])
