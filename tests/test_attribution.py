"""Which part of SAL matters: controls that differ from SAL in one thing only (sal/methods/pdo.py,
sal/methods/sal.py). Each test failed on the main of 2026-12-02."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sal.core.names import (
    EVENT_DEFORM,
    EVENT_NOISE,
    EVENT_REVERT,
    METRIC_NOISE_STD,
    TAG_CELL,
    TAG_COMPUTE_DTYPE,
)
from sal.methods import EpochStats, MethodContext, build_method
from sal.methods.pdo import PDO, RandomTriggerPDO
from sal.methods.sal import SALSpec
from sal.spec.config import config_hash, validate_run
from tests.helpers import ABLATION_RUNS
from tests.helpers import log_cells as _log_cells

PAPER = dict(rho=5e-4, theta=5e-3, s_noise=5e-3, s_yield=1e-2)  # the paper's constants (Sec. 3.1)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8))
        self.head = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 6), nn.Linear(6, 3))


def _method(name: str, **knobs):
    torch.manual_seed(0)
    spec = validate_run({"method": {"name": name, **knobs}, "train": {"epochs": 60}})
    ctx = MethodContext(model=_Net(), spec=spec, loss_fn=F.cross_entropy, generator=torch.Generator().manual_seed(0),
                        method_seed=7, autocast=contextlib.nullcontext, train_batches=lambda: iter(()))
    return build_method(ctx)


def _curve(epochs: int = 50) -> list[tuple[float, float]]:
    """A loss curve that learns for 10 epochs, then stalls with a little wobble (no epoch is progress)."""
    out = []
    for e in range(1, epochs + 1):
        loss = 2.0 / e if e <= 10 else 0.2 + 0.001 * (e % 3)
        out.append((loss, 0.9 if e > 10 else 0.05 * e))
    return out


def _drive(method, curve) -> list[dict[str, float]]:
    return [method.intervene(EpochStats(e, loss, acc, math.nan, math.nan))
            for e, (loss, acc) in enumerate(curve, start=1)]


def test_recovery_never_fires_at_the_paper_constants_with_patience_3():
    # the stress is at the yield point again two stagnant epochs after a deformation; each new deformation
    # replaces the watched one, so a patience of 3 never sees its end: no revert, and sal_no_recovery is SAL
    rows = _drive(_method("sal", **PAPER, warmup=15), _curve())
    assert sum(r[EVENT_DEFORM] for r in rows) == 18 and sum(r[EVENT_REVERT] for r in rows) == 0
    deforms = [i + 1 for i, r in enumerate(rows) if r[EVENT_DEFORM]]
    assert {b - a for a, b in zip(deforms, deforms[1:])} == {2}


def test_noise_only_follows_sals_noise_schedule_by_default():
    # old main: noise-only never reset its stress, so from the first yield point on it injected noise at
    # other epochs (every epoch) and with a growing std (about 10x SAL's by epoch 50)
    sal = _drive(_method("sal", **PAPER, warmup=15), _curve())
    noise_only = _drive(_method("sal_noise_only", **PAPER, warmup=15), _curve())
    assert [r[EVENT_NOISE] for r in noise_only] == [r[EVENT_NOISE] for r in sal]
    assert [r[METRIC_NOISE_STD] for r in noise_only] == pytest.approx([r[METRIC_NOISE_STD] for r in sal], rel=1e-12)
    assert sum(r[EVENT_NOISE] for r in sal) == 18
    assert all(r[EVENT_DEFORM] == 0 for r in noise_only)


def test_noise_only_keeps_the_unreset_schedule_on_request():
    rows = _drive(_method("sal_noise_only", **PAPER, warmup=15, reset_at_yield=False), _curve())
    assert sum(r[EVENT_NOISE] for r in rows) == 35  # every epoch from 16 on
    assert rows[-1][METRIC_NOISE_STD] > 10 * 2e-7


def _yoked(mode: str, events: dict, epochs: int = 60, warmup: int = 15, seed: int = 3) -> list:
    torch.manual_seed(0)
    knobs = SALSpec(**PAPER, warmup=warmup, recovery=False)
    pdo = RandomTriggerPDO(_Net(), knobs, generator=torch.Generator().manual_seed(0), trigger_prob=0.1,
                           trigger_seed=seed, epochs=epochs, yoked=events, yoke_mode=mode)
    return [pdo.end_epoch(e, 1.0, 0.5) for e in range(1, epochs + 1)]


SAL_EVENTS = {"deform": [20, 22, 30, 41], "noise": [19, 20, 21, 22, 30, 41],
              "noise_std": [1e-7, 2e-7, 1.5e-7, 2e-7, 2e-7, 2e-7]}


@pytest.mark.parametrize("mode", ["count", "shift", "shuffle"])
def test_a_yoked_control_makes_as_many_interventions_as_its_sal_run(mode):
    events = _yoked(mode, SAL_EVENTS)
    deform = [i + 1 for i, e in enumerate(events) if e.deform]
    noise = [(i + 1, e.noise_std) for i, e in enumerate(events) if e.noise]
    assert len(deform) == 4 and len(noise) == 6 and min(deform) > 15
    assert sorted(s for _, s in noise) == sorted(SAL_EVENTS["noise_std"])  # SAL's noise sizes, re-timed
    if mode == "shift":  # SAL's pattern moved as a whole
        offset = deform[0] - 20
        assert deform == [e + offset for e in SAL_EVENTS["deform"]] and offset != 0
    if mode == "shuffle":  # SAL's gaps in another order
        assert sorted(b - a for a, b in zip(deform, deform[1:])) == [2, 8, 11]


def test_a_yoked_control_draws_its_epochs_from_its_own_seed():
    a = [e.deform for e in _yoked("count", SAL_EVENTS, seed=1)]
    b = [e.deform for e in _yoked("count", SAL_EVENTS, seed=2)]
    assert a != b and sum(a) == sum(b) == 4


def test_the_yoked_partners_events_are_not_part_of_the_controls_identity():
    base = {"method": {"name": "random_trigger", "yoke": "sal"}, "train": {"epochs": 30}}
    a = validate_run(base)
    b = validate_run({**base, "method": {**base["method"], "yoked_events": SAL_EVENTS}})
    assert config_hash(a) == config_hash(b)
    c = validate_run({**base, "method": {**base["method"], "yoke_mode": "shift"}})
    assert config_hash(c) != config_hash(a)


def test_a_yoked_control_without_its_partners_events_refuses_to_train():
    from sal.training.run import train
    from tests.helpers import tiny_spec

    with pytest.raises(ValueError, match="method.yoke"):
        train(tiny_spec(method={"name": "random_trigger", "yoke": "sal", "warmup": 1}))


def test_plain_pdo_unchanged_by_the_yoke_option():
    # SAL's own schedule on the stall curve is what it was
    pdo = PDO(_Net(), SALSpec(**PAPER, warmup=0, recovery=False), generator=torch.Generator().manual_seed(0))
    events = [pdo.end_epoch(e, 1.0, 0.5) for e in range(1, 8)]
    assert [e.deform for e in events] == [False, False, True, False, True, False, True]


# ---------------------------------------------------------------- yoked controls in an ablation

def _ablation(tmp_path, name, cells, *, seeds=3, epochs=10, **fields):
    import yaml

    doc = {"name": name, "seeds": seeds, "baseline": "adam",
           "base": {"data": {"name": "digits"}, "model": {"name": "mlp", "width": 16},
                    "train": {"epochs": epochs, "batch_size": 64}, "optim": {"lr": 0.01}},
           "cells": cells, **fields}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


STRESSFUL = {"method.warmup": 1, "method.theta": 0.01, "method.s_noise": 0.005, "method.s_yield": 0.01,
             "method.eps_acc": 0.01, "method.eps_loss": 0.01, "method.delta": 1e-4}


@pytest.mark.training
def test_a_yoked_cell_copies_each_seeds_intervention_counts_from_its_sal_run(tmp_path, mlflow_uri):
    from sal.queue.engine import StorageRef
    from sal.sweeps.ablation import load_ablation, run_ablation
    from sal.tracking.store import client_for, runs_frame

    # the yoked cell comes first in the file: the grid still trains each SAL seed before its control
    path = _ablation(tmp_path, "yoked", {"yoked": {"method.name": "random_trigger", "method.yoke": "sal",
                                                   **STRESSFUL},
                                         "adam": {"method.name": "base"}, "sal": {"method.name": "sal", **STRESSFUL}})
    spec, items = load_ablation(path, seeds=2)
    out = run_ablation(spec, items, ref=StorageRef(str(tmp_path / "q.journal")), uri=mlflow_uri)
    assert out["states"] == {"COMPLETE": 6}
    runs = runs_frame(mlflow_uri, ["sal-ablation-yoked"], filter_string=ABLATION_RUNS)
    runs = runs[runs["status"] == "FINISHED"]
    counts = runs.pivot_table(index="tags.seed", columns=f"tags.{TAG_CELL}", values="metrics.sal/n_deform")
    noise = runs.pivot_table(index="tags.seed", columns=f"tags.{TAG_CELL}", values="metrics.sal/n_noise")
    assert (counts["sal"] > 0).all()
    assert counts["yoked"].tolist() == counts["sal"].tolist() and noise["yoked"].tolist() == noise["sal"].tolist()
    client = client_for(mlflow_uri)

    def epochs(cell, seed):
        rid = runs[(runs[f"tags.{TAG_CELL}"] == cell) & (runs["tags.seed"] == str(seed))]["run_id"].iloc[0]
        return [int(m.step) for m in client.get_metric_history(rid, EVENT_DEFORM) if m.value]

    assert any(epochs("yoked", s) != epochs("sal", s) for s in (1, 2))  # the timing is its own
    # the control's identity does not depend on what its partner did
    assert runs[runs[f"tags.{TAG_CELL}"] == "yoked"]["tags.config_hash"].nunique() == 1


def test_a_yoke_to_a_missing_or_unstressed_cell_is_a_spec_error(tmp_path):
    from sal.spec.config import SpecError
    from sal.sweeps.ablation import load_ablation

    with pytest.raises(SpecError, match="method.yoke='sall' is not a cell"):
        load_ablation(_ablation(tmp_path, "y1", {"sal": {"method.name": "sal"},
                                                 "y": {"method.name": "random_trigger", "method.yoke": "sall"}},
                                   epochs=20))
    with pytest.raises(SpecError, match="not stress-driven"):
        load_ablation(_ablation(tmp_path, "y2", {"adam": {"method.name": "base"},
                                                 "y": {"method.name": "random_trigger", "method.yoke": "adam"}},
                                   epochs=20))


# ---------------------------------------------------------------- what the report says of the controls

def _report(uri, name, tmp_path, *extra):
    import pandas as pd

    from sal.cli import main

    out = tmp_path / name
    assert main(["--tracking-uri", uri, "report", name, "--out", str(out), "--no-figures", *extra]) == 0
    summary = pd.read_csv(out / "summary.csv", keep_default_na=False, na_values=[""])
    return summary[summary["verdict"] != "reference"], (out / "report.md").read_text()


SAL_PARAMS = {"method.name": "sal", "method.recovery": True, "method.recovery_patience": 3, "method.rho": 0.0005,
              "method.s_yield": 0.01, "method.delta": 1e-7, "method.lambda": 1e-5}


@pytest.mark.store
def test_a_contrast_between_identical_trainings_is_same_by_construction(tmp_path, mlflow_uri):
    # sal and sal_no_recovery at the paper's constants: recovery never fired, so both made the same
    # interventions on every seed and trained the same runs. Old main: a verdict (here "inconclusive", and
    # with another draw of the noise "equivalent"), as if the seeds had shown that recovery does not matter.
    import numpy as np

    rng = np.random.default_rng(0)
    adam = list(0.9 + rng.normal(0, 0.01, 6))
    sal = [a + 0.004 + e for a, e in zip(adam, rng.normal(0, 0.004, 6))]
    events = ["noise=16,18,20;deform=16,18,20;revert=;std=2e-07,2e-07,2e-07"] * 6
    _log_cells(mlflow_uri, "construct", {
        "adam": {"acc": adam, "params": {"method.name": "base"}},
        "sal": {"acc": sal, "params": SAL_PARAMS, "events": events},
        "sal_no_recovery": {"acc": sal, "params": {**SAL_PARAMS, "method.name": "sal_no_recovery"},
                            "events": events},
        "sal_noise_only": {"acc": adam, "params": {**SAL_PARAMS, "method.name": "sal_noise_only"},
                           "events": ["noise=16,18,20;deform=;revert=;std=2e-07,2e-07,2e-07"] * 6},
    }, seeds=6, plan={"families": {"baselines": ["adam"], "ablations": ["sal_no_recovery", "sal_noise_only"]}})
    rows, md = _report(mlflow_uri, "construct", tmp_path)
    by = rows.set_index(["method", "baseline"])
    assert by.loc[("sal", "sal_no_recovery"), "verdict"] == "same by construction"
    assert by.loc[("sal", "sal_noise_only"), "verdict"] != "same by construction"  # the deformation fired
    assert by.loc[("sal", "adam"), "verdict"] != "same by construction"
    assert "Recovery never fired: method.recovery_patience=3 is not below the epochs between deformations " \
           "(as few as 2)" in md


@pytest.mark.store
def test_a_cell_that_never_acted_is_its_base_optimizer_by_construction(tmp_path, mlflow_uri):
    accs = [0.9 + 0.001 * s for s in range(4)]
    _log_cells(mlflow_uri, "idle", {"adam": {"acc": accs, "params": {"method.name": "base"}},
                                    "sal": {"acc": accs, "params": SAL_PARAMS}}, seeds=4)
    rows, _ = _report(mlflow_uri, "idle", tmp_path)
    assert rows.set_index("method").loc["sal", "verdict"] == "same by construction"
    # another learning rate: the same events do not make the same training
    _log_cells(mlflow_uri, "idle_lr", {"adam": {"acc": accs, "params": {"method.name": "base", "optim.lr": 0.01}},
                                       "sal": {"acc": accs, "params": SAL_PARAMS}}, seeds=4)
    rows, _ = _report(mlflow_uri, "idle_lr", tmp_path)
    assert rows.set_index("method").loc["sal", "verdict"] != "same by construction"


@pytest.mark.store
def test_sam_and_swa_are_never_their_base_optimizer_by_construction(tmp_path, mlflow_uri):
    # an ablation of adam, sam and swa: none makes a SAL event, yet SAM takes another step and SWA averages
    # the weights. Old main: "sam vs adam ... trained the same runs" (and the same for swa), even here, where
    # sam's accuracy happens to equal adam's on every seed: only SAL's family can train the same runs.
    import pandas as pd

    adam = [0.90, 0.91, 0.89, 0.92, 0.90, 0.93]
    swa = [a - 0.01 for a in adam]
    _log_cells(mlflow_uri, "baselines", {
        "adam": {"acc": adam, "params": {"method.name": "base"}},
        "sam": {"acc": adam, "params": {"method.name": "sam", "method.rho": 0.05}},
        "swa": {"acc": swa, "params": {"method.name": "swa", "method.swa_start": 0.75}},
    }, seeds=6)
    rows, md = _report(mlflow_uri, "baselines", tmp_path, "--baseline", "adam")
    verdicts = rows.set_index("method")["verdict"]
    assert set(verdicts.index) == {"sam", "swa"}
    assert "same by construction" not in set(verdicts) and "trained the same runs" not in md
    assert rows.set_index("method").loc["sam", "delta"] == 0.0  # the premise: equal scores, still no construction
    # and a part that never fired, but final metrics that differ on one seed: not the same training either
    sal = [0.90, 0.91, 0.89, 0.92, 0.90, 0.93]
    events = "noise=16;deform=16;revert=;std=2e-07"
    _log_cells(mlflow_uri, "differ", {
        "adam": {"acc": adam, "params": {"method.name": "base"}},
        "sal": {"acc": sal, "params": SAL_PARAMS, "events": events},
        "sal_no_recovery": {"acc": sal[:5] + [0.931], "params": {**SAL_PARAMS, "method.name": "sal_no_recovery"},
                            "events": events},
    }, seeds=6, plan={"families": {"ablations": ["sal_no_recovery"]}})
    rows, _ = _report(mlflow_uri, "differ", tmp_path)
    assert rows.set_index("baseline").loc["sal_no_recovery", "verdict"] != "same by construction"
    # the per-class F1 rows of a contrast that is the same by construction say so too (old main: inconclusive)
    accs = [0.9 + 0.001 * s for s in range(4)]
    f1 = {f"test/class{k}/f1": [0.8 + 0.01 * k + 0.002 * s for s in range(4)] for k in range(3)}
    f1.update({f"test/robust/{kind}/acc": [0.7 + 0.003 * s for s in range(4)] for kind in ("mean", "noise_0.5")})
    _log_cells(mlflow_uri, "idle_f1", {"adam": {"acc": accs, "params": {"method.name": "base"}, "metrics": f1},
                                       "sal": {"acc": accs, "params": SAL_PARAMS, "metrics": f1}}, seeds=4)
    rows, _ = _report(mlflow_uri, "idle_f1", tmp_path)
    assert rows.set_index("method").loc["sal", "verdict"] == "same by construction"
    per_class = pd.read_csv(tmp_path / "idle_f1" / "per_class_f1.csv", keep_default_na=False, na_values=[""])
    assert len(per_class) == 3 and set(per_class["verdict"]) == {"same by construction"}
    robust = pd.read_csv(tmp_path / "idle_f1" / "robustness.csv", keep_default_na=False, na_values=[""])
    assert len(robust) == 2 and set(robust["verdict"]) == {"same by construction"}


@pytest.mark.store
def test_noise_below_the_compute_dtypes_resolution_is_flagged(tmp_path, mlflow_uri):
    # the paper's noise (std about 2e-7) under bf16 at |w| = 0.05 (resolution 2^-12 = 2.4e-4)
    accs = [0.9 + 0.001 * s for s in range(4)]
    noisy = {"sal/noise_std_max": 2e-7, "model/median_abs_weight": 0.05}
    cells = {"adam": {"acc": accs, "params": {"method.name": "base"}},
             "sal": {"acc": accs, "params": SAL_PARAMS, "metrics": noisy, "dtype": "bfloat16",
                     "events": "noise=16;deform=16;revert=;std=2e-07"}}
    _log_cells(mlflow_uri, "bf16", cells, seeds=4)
    _, md = _report(mlflow_uri, "bf16", tmp_path)
    assert "its largest noise std, 2e-07, is below the bfloat16 resolution at the median weight magnitude 0.05 " \
           "(0.000244)" in md
    _log_cells(mlflow_uri, "fp32", {**cells, "sal": {**cells["sal"], "dtype": "float32"}}, seeds=4)
    _, md = _report(mlflow_uri, "fp32", tmp_path)
    assert "resolution" not in md  # float32's spacing there is 3.7e-9


@pytest.mark.training
def test_the_report_shows_the_effect_against_the_noise_dose(tmp_path, mlflow_uri):
    import numpy as np

    rng = np.random.default_rng(1)
    adam = list(0.9 + rng.normal(0, 0.01, 10))
    cells = {"adam": {"acc": adam, "params": {"method.name": "base"}}}
    for k, (scale, gain) in enumerate([(1, 0.0), (100, 0.0), (1e4, -0.02), (1e5, -0.1)]):
        params = {**SAL_PARAMS, "method.name": "sal_noise_only", "method.delta": 1e-7 * scale,
                  "method.lambda": 1e-5 * scale}
        cells[f"noise_{k}"] = {"acc": [a + gain + e for a, e in zip(adam, rng.normal(0, 0.002, 10))],
                               "params": params, "metrics": {"sal/noise_std_max": 2e-7 * scale},
                               "events": f"noise=16;deform=;revert=;std={2e-7 * scale:.6g}"}
    _log_cells(mlflow_uri, "dose", cells)
    from sal.report.build import analyse
    from sal.stats.attribution import dose_response

    a = analyse(mlflow_uri, "dose", baseline="adam")
    table = dose_response(a.summary, a.selection.runs)
    assert list(table["dose"]) == pytest.approx([2e-7, 2e-5, 2e-3, 2e-2])
    assert table["delta"].iloc[-1] == pytest.approx(np.mean(np.array(cells["noise_3"]["acc"]) - np.array(adam)))
    assert list(table["verdict"])[-1] == "worse"
    assert table["delta_ci_high"].iloc[-1] < 0
    _, md = _report(mlflow_uri, "dose", tmp_path, "--baseline", "adam")
    assert "## Noise dose-response" in md


# ---------------------------------------------------------------- the paper's setup, stability

def test_fidelity_paper_is_the_papers_setup_and_needs_no_validation_metric(tmp_path):
    from sal.spec.config import SpecError
    from sal.sweeps.ablation import load_ablation

    path = _ablation(tmp_path, "paperfid", {"adam": {"method.name": "base"},
                                            "std": {"method.name": "base", "data.normalize": True}},
                     epochs=20, fidelity="paper")
    spec, items = load_ablation(path)
    assert spec.metric == "test/acc"
    adam = next(i.spec for i in items if i.cell == "adam")
    assert (adam.data.val_fraction, adam.data.normalize, adam.train.amp) == (0.0, False, False)
    assert next(i.spec for i in items if i.cell == "std").data.normalize  # a cell may still depart
    with pytest.raises(SpecError, match="metric='val/acc' with fidelity: paper"):
        load_ablation(_ablation(tmp_path, "paperval", {"adam": {"method.name": "base"}}, epochs=20,
                                fidelity="paper", metric="val/acc"))


def test_the_departures_from_the_papers_setup_are_listed():
    import pandas as pd

    from sal.spec.fidelity import paper_departures

    runs = pd.DataFrame({"params.data.val_fraction": ["0.15", "0.0"], "params.data.normalize": ["True", "False"],
                         f"tags.{TAG_COMPUTE_DTYPE}": ["bfloat16", "float32"],
                         "tags.dataset": ["corel1k", "imagenette"],
                         "params.model.name": ["resnet50", "densenet201"]})
    text = " ".join(paper_departures(runs))
    for part in ("validation hold-out of 15%", "inputs standardised", "bf16 autocast", "ResNet50V2"):
        assert part in text
    paper_like = runs.iloc[[1]]
    assert len(paper_departures(paper_like)) == 1  # only the framework and the seeds


@pytest.mark.training
def test_a_paper_fidelity_grid_trains_and_reports_without_a_validation_split(tmp_path, mlflow_uri):
    from sal.queue.engine import StorageRef
    from sal.sweeps.ablation import load_ablation, run_ablation

    path = _ablation(tmp_path, "fid_run", {"adam": {"method.name": "base"},
                                           "sal": {"method.name": "sal", "method.warmup": 1}},
                     seeds=2, epochs=3, fidelity="paper")
    spec, items = load_ablation(path)
    out = run_ablation(spec, items, ref=StorageRef(str(tmp_path / "q.journal")), uri=mlflow_uri)
    assert out["states"] == {"COMPLETE": 4}
    rows, _ = _report(mlflow_uri, "fid_run", tmp_path)
    assert set(rows["method"]) == {"sal"} and rows["n"].tolist() == [2]


def test_instability_metrics_of_a_validation_curve():
    from sal.metrics.instability import instability

    curve = [0.5, 0.7, 0.6, 0.75, 0.74, 0.70]
    m = instability([{"val/acc": v} for v in curve])
    assert m["stability/max_drop"] == pytest.approx(0.1)  # 0.7 -> 0.6
    assert m["stability/epochs_below_best"] == 3  # 0.6 (0.1 below), 0.74 (0.01), 0.70 (0.05); 0.75 - 0.7 ...
    assert m["stability/final_minus_best"] == pytest.approx(-0.05)
    assert m["stability/val_auc"] == pytest.approx(sum(curve) / 6)
    assert instability([{"val/acc": 0.5}, {"val/acc": math.nan}]) == {}


@pytest.mark.store
def test_a_steadier_method_is_better_on_the_instability_metrics(tmp_path, mlflow_uri):
    # lower max_drop is better: the verdict and the win rate must read it so
    drops_adam = [0.05 + 0.01 * (s % 3) for s in range(10)]
    drops_sal = [d - 0.02 for d in drops_adam]
    cells = {"adam": {"acc": [0.9] * 10, "params": {"method.name": "base"}},
             "sal": {"acc": [0.9] * 10, "params": SAL_PARAMS, "events": "noise=16;deform=16;revert=;std=2e-07"}}
    _log_cells(mlflow_uri, "steady", cells)
    from mlflow.entities import Metric

    from sal.tracking.store import client_for, runs_frame

    client = client_for(mlflow_uri)
    runs = runs_frame(mlflow_uri, ["sal-ablation-steady"])
    for _, r in runs.iterrows():
        drops = drops_sal if r[f"tags.{TAG_CELL}"] == "sal" else drops_adam
        client.log_batch(r["run_id"], metrics=[Metric("stability/max_drop", drops[int(r["tags.seed"]) - 1], 0, 1)])
    rows, _ = _report(mlflow_uri, "steady", tmp_path, "--metric", "stability/max_drop")
    row = rows.set_index("method").loc["sal"]
    assert row["delta"] == pytest.approx(-0.02) and row["verdict"] == "better"


@pytest.mark.store
def test_the_factorial_adds_the_trigger_effect_of_a_yoked_control(tmp_path, mlflow_uri):
    # old main: the factorial had noise, deformation and interaction only; a yoked cell was just another cell
    import numpy as np

    from sal.report.build import analyse

    rng = np.random.default_rng(5)
    base = 0.9 + rng.normal(0, 0.01, 8)
    shift = {"adam": 0.0, "noise": 0.0, "deform": 0.01, "sal": 0.012, "yoked": 0.004}
    noise = {c: rng.normal(0, 0.002, 8) for c in shift}
    params = {"adam": {"method.name": "base"}, "noise": {**SAL_PARAMS, "method.name": "sal_noise_only"},
              "deform": {**SAL_PARAMS, "method.name": "sal_deform_only"}, "sal": SAL_PARAMS,
              "yoked": {**SAL_PARAMS, "method.name": "random_trigger", "method.yoke": "sal"}}
    cells = {c: {"acc": list(base + shift[c] + noise[c]), "params": params[c],
                 "events": f"noise=;deform={16 + k};revert="} for k, c in enumerate(shift)}
    _log_cells(mlflow_uri, "trigger", cells, seeds=8)
    table = analyse(mlflow_uri, "trigger", baseline="adam").factorial.set_index("effect")
    assert set(table.index) == {"noise", "deformation", "interaction", "trigger"}
    expected = np.mean((base + shift["sal"] + noise["sal"]) - (base + shift["yoked"] + noise["yoked"]))
    assert table.loc["trigger", "estimate"] == pytest.approx(expected)
    assert table.loc["trigger", "cells"] == "adam/noise/deform/sal/yoked"
    assert table.loc["trigger", "ci_low"] > 0


def test_a_yoked_event_planned_on_a_revert_epoch_moves_to_the_next_epoch():
    # a revert epoch makes no intervention (it would undo the revert); the yoked control then made fewer
    # interventions than its partner (digits, 6 seeds: 5.5 deformations per seed against SAL's 6.0)
    torch.manual_seed(0)
    knobs = SALSpec(**PAPER, warmup=0, recovery=True, recovery_patience=1)
    events = {"deform": [3, 4, 5, 6], "noise": [], "noise_std": []}
    for seed in range(5):
        pdo = RandomTriggerPDO(_Net(), knobs, generator=torch.Generator().manual_seed(0), trigger_prob=0.1,
                               trigger_seed=seed, epochs=30, yoked=events, yoke_mode="count")
        planned = sorted(pdo._planned)
        out = [pdo.end_epoch(e, 1.0, 0.5) for e in range(1, 31)]  # no progress: every deformation is reverted
        if any(b - a == 1 for a, b in zip(planned, planned[1:])):
            break  # a plan with a deformation right after another: that one falls on a revert epoch
    assert sum(e.deform for e in out) == 4 and sum(e.revert for e in out) >= 3
    assert [i + 1 for i, e in enumerate(out) if e.deform] != planned  # some moved past a revert
