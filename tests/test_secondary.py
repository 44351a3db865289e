"""The report's secondary families, end to end: a real ablation on digits with the grad norm per epoch,
robustness and per-class metrics, and its report's sections checked against a recomputation."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats as sps

from sal.queue.engine import StorageRef
from sal.report.build import analyse, write_report
from sal.report.event_sharpness import (
    LAG,
    event_contrasts,
    event_seed_levels,
    event_sharpness_section,
    history_from_epochs,
)
from sal.report.secondary import class_section, cost_section, robustness_section
from sal.spec.analysis import Contrast, Plan
from sal.stats.inference import adjust
from sal.sweeps.ablation import load_ablation, run_ablation

pytestmark = pytest.mark.store


@pytest.fixture(scope="module")
def measured(tmp_path_factory, mlflow_uri):
    tmp = tmp_path_factory.mktemp("sec")
    doc = {"name": "secondary", "seeds": 4, "baseline": "adam",
           "base": {"data": {"name": "digits"}, "model": {"name": "mlp", "width": 16}, "optim": {"lr": 0.003},
                    "train": {"epochs": 6, "batch_size": 64, "sharpness_samples": 0},
                    "analysis": {"sharpness": ["grad_norm"], "samples": 128},
                    "robustness": {"noise": [0.5, 1.0], "corruptions": ["blur"], "levels": [3]}},
           "cells": {"adam": {"method.name": "base"},
                     "sal": {"method.name": "sal", "method.warmup": 0, "method.theta": 0.5, "method.eps_acc": 0.5,
                             "method.rho": 0.01}}}
    path = tmp / "secondary.yaml"
    path.write_text(yaml.safe_dump(doc))
    spec, items = load_ablation(path)
    run_ablation(spec, items, ref=StorageRef(str(tmp / "q.journal")), uri=mlflow_uri)
    return analyse(mlflow_uri, "secondary"), tmp


def test_per_class_f1_is_one_family_per_data_set_corrected_across_classes(measured):
    a, _ = measured
    runs = a.selection.runs
    [section] = class_section(runs, a.opts.plan, level=0.95)
    table = section.tables[0][1]
    assert len(table) == 10 and list(table["class"]) == [f"class {k}" for k in range(10)]
    # recompute: paired t-test per class over seeds, Holm over the 10 classes
    runs = runs.assign(cell=runs["tags.sal.cell"], seed=runs["tags.seed"].astype(int))
    raw = []
    for k in range(10):
        wide = runs.pivot(index="seed", columns="cell", values=f"metrics.test/class{k}/f1")
        d = wide["sal"] - wide["adam"]
        raw.append(sps.ttest_rel(wide["sal"], wide["adam"]).pvalue if d.std() > 0 else math.nan)
    shown = [float(v.replace("<", "")) if v else math.nan for v in table["p_holm"]]
    expected = adjust(np.array(raw), "holm")
    for got, want in zip(shown, expected):
        if not math.isnan(want) and want >= 1e-4:
            assert got == pytest.approx(want, abs=1e-4)


def test_cost_contrasts_say_where_they_ran(measured):
    a, _ = measured
    [section] = cost_section(a.selection.runs, a.opts.plan, level=0.95)
    table = section.tables[0][1]
    assert set(table["metric"]) == {"time/train_s", "mem/peak_mb"}
    assert "cpu" in section.paragraphs[0]
    assert (table["seeds per model"] == "4 / 4").all() or (table["seeds per model"] == "1 / 1").all()
    assert any("peak resident memory" in p for p in section.paragraphs)


def test_robustness_contrasts_and_figure(measured):
    a, _ = measured
    [section] = robustness_section(a.selection.runs, a.opts.plan, level=0.95, draw_figures=True)
    summary_table, per_table = (t for _, t in section.tables)
    assert set(summary_table["metric"]) == {"test/robust/mean/acc", "test/robust/worst/acc"}
    assert set(per_table["metric"]) == {"test/robust/noise_0.5/acc", "test/robust/noise_1/acc",
                                        "test/robust/blur_3/acc"}
    assert list(section.figures) == ["Accuracy against perturbation severity"]
    runs = a.selection.runs
    sal = runs[runs["tags.sal.cell"] == "sal"].sort_values("tags.seed")
    adam = runs[runs["tags.sal.cell"] == "adam"].sort_values("tags.seed")
    delta = (sal["metrics.test/robust/worst/acc"].to_numpy() - adam["metrics.test/robust/worst/acc"].to_numpy()).mean()
    row = summary_table[summary_table["metric"] == "test/robust/worst/acc"].iloc[0]
    assert float(row["delta"]) == pytest.approx(delta, abs=1e-4)


def test_grad_norm_after_events_is_recomputed_from_the_histories_and_the_campaigns_epochs(measured):
    a, tmp = measured
    from sal.report.build import _histories

    history = _histories(a.uri, a.selection.runs)
    assert history["train/grad_norm"].notna().all()
    per_seed = event_seed_levels(history, a.opts.plan)
    noise = per_seed[per_seed["event"] == "noise"]
    assert len(noise) > 0
    row = noise.iloc[0]
    h = history[(history["seed"] == row["seed"])]
    mine, base = h[h["method"] == "sal"].set_index("epoch"), h[h["method"] == "adam"].set_index("epoch")
    epochs = [e for e in mine.index if mine.loc[e, "sal/noise"] > 0 and e + LAG in mine.index]
    want = np.mean([math.log(mine.loc[e + LAG, "train/grad_norm"] / base.loc[e + LAG, "train/grad_norm"])
                    for e in epochs])
    assert row["events"] == len(epochs) and row["against"] == "same epochs"  # adam never makes the event
    assert row["difference"] == pytest.approx(want)

    [section] = event_sharpness_section(history, a.opts.plan, level=0.95, draw_figures=True)
    figure = next(iter(section.figures.values()))
    assert figure.axes[0].get_yscale() == "log"  # ratios around events read as equal heights

    out = write_report(a, tmp / "report")
    text = (out / "report.md").read_text()
    for title in ("Sharpness around plastic events", "Robustness to perturbed inputs", "Per-class F1",
                  "Cost: training time and memory"):
        assert title in text
    assert (out / "figures").is_dir() and len(list((out / "figures").glob("*.png"))) >= 5

    # the campaign's committed per-epoch file recomputes the report's table
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from campaign import write_epochs

    write_epochs(a.uri, "secondary", tmp / "findings", "digits/attribution_epochs.csv")
    published = pd.read_csv(out / "event_sharpness.csv")
    epochs_csv = pd.read_csv(tmp / "findings" / "digits" / "attribution_epochs.csv")
    assert set(epochs_csv["cell"]) == {"adam", "sal"} and len(epochs_csv) == 4 * 2 * 6
    again = event_contrasts(history_from_epochs(epochs_csv, published["dataset"].iloc[0]), a.opts.plan, level=0.95)
    numbers = ["seeds", "events", "level", "effect", "effect_ci_low", "effect_ci_high"]
    pd.testing.assert_frame_equal(again[numbers], published[numbers], rtol=1e-4, check_dtype=False)


def test_a_contrast_without_the_metric_has_no_section():
    runs = pd.DataFrame({"tags.sal.cell": ["a", "b"], "tags.seed": ["1", "1"], "tags.dataset": ["d", "d"],
                         "run_id": ["x", "y"]})
    plan = Plan([Contrast("baselines", "a", "b")], ["test/acc"], treatment="a")
    assert robustness_section(runs, plan, level=0.95, draw_figures=False) == []
    assert class_section(runs, plan, level=0.95) == []
