"""The grad norm around plastic events (sal.report.event_sharpness): measured lag epochs after the event,
against a quiet run at the same epoch, and against the yoked cell's own events; its level under a simulated
null where events do nothing but fire on the run's own state (benchmarks/bench_event_sharpness_null.py)."""

from __future__ import annotations

import io
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from sal.report.event_sharpness import (
    GRAD_NORM,
    LAG,
    epoch_table,
    event_contrasts,
    event_counts,
    event_seed_levels,
    event_sharpness_section,
    findings_lines,
    history_from_epochs,
)
from sal.spec.analysis import Contrast, Plan
from sal.stats.inference import describe

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_event_sharpness_null as null  # noqa: E402

PLAN = Plan([Contrast("baselines", "sal", "adam"), Contrast("controls", "sal", "yoked")], ["test/acc"],
            treatment="sal")


def test_under_the_null_the_procedure_holds_its_level_and_the_old_one_does_not():
    """Events that do nothing, SAL's fired when its grad norm stagnates, the yoked cell's at random epochs:
    1,000 replications of 10 seeds x 30 epochs, grad-norm fluctuations with autocorrelation 0.5."""
    logs, events = null.simulate(1000, rho=0.5, random_state=7)
    table = event_contrasts(null.history(logs, events), PLAN, level=0.95)
    assert set(table["lag"]) == {LAG} and len(table) == 2000
    p = table.pivot(index="dataset", columns="vs", values="p_ttest")
    assert p["adam"].notna().all() and p["yoked"].notna().all()
    # a 5% test rejects in about 5% of replications (binomial sd 0.7 points); 8% is 4 sd above
    assert (p["adam"] < 0.05).mean() <= 0.08
    assert (p["yoked"] < 0.05).mean() <= 0.08
    # the change from the epoch before the event against Adam's over the same epochs (the old report) rejects
    # in most replications, here by finding that SAL's (inert) events raise the grad norm
    assert (null.old_p(logs, events) < 0.05).mean() >= 0.5


def _toy() -> pd.DataFrame:
    """Three seeds, 8 epochs: adam quiet, sal deforms at 2 and 4 (and 7, too late for lag 3), yoked at 3."""
    rng = np.random.default_rng(3)
    rows = []
    for seed in (1, 2, 3):
        for cell in ("adam", "sal", "yoked"):
            for epoch in range(1, 9):
                deform = float((cell == "sal" and epoch in (2, 4, 7)) or (cell == "yoked" and epoch == 3))
                rows.append({"dataset": "d", "context": "", "seed": seed, "method": cell, "epoch": epoch,
                             GRAD_NORM: float(rng.uniform(0.5, 2.0)), "sal/deform": deform, "sal/revert": 0.0,
                             "sal/noise": 0.0, "run_id": f"{cell}{seed}"})
    return pd.DataFrame(rows)


def test_levels_are_lag_epochs_after_each_event_against_the_quiet_run_and_the_yoked_cells_own_events():
    h = _toy()
    g = h.set_index(["seed", "method", "epoch"])[GRAD_NORM]
    per_seed = event_seed_levels(h, PLAN, lag=3)
    vs_adam = per_seed[per_seed["vs"] == "adam"].set_index("seed")
    vs_yoked = per_seed[per_seed["vs"] == "yoked"].set_index("seed")
    for seed in (1, 2, 3):
        mine = [math.log(g[seed, "sal", e + 3] / g[seed, "adam", e + 3]) for e in (2, 4)]  # 7 + 3 is past the end
        theirs = math.log(g[seed, "yoked", 6] / g[seed, "adam", 6])
        assert vs_adam.loc[seed, "events"] == 2 and vs_adam.loc[seed, "against"] == "same epochs"
        assert vs_adam.loc[seed, "difference"] == pytest.approx(np.mean(mine))
        assert vs_yoked.loc[seed, "against"] == "own events" and vs_yoked.loc[seed, "reference"] == "adam"
        assert vs_yoked.loc[seed, "vs_events"] == 1 and vs_yoked.loc[seed, "vs_level"] == pytest.approx(theirs)
        assert vs_yoked.loc[seed, "difference"] == pytest.approx(np.mean(mine) - theirs)
    table = event_contrasts(h, PLAN, level=0.9, lag=3)
    for row in table.itertuples():
        d = per_seed[per_seed["vs"] == row.vs]["difference"].to_numpy()
        want = describe(d, level=0.9)
        assert (row.effect, row.effect_ci_low, row.effect_ci_high) == pytest.approx(
            (want["mean"], want["ci_low"], want["ci_high"]))
        assert row.p_ttest == pytest.approx(sps.ttest_1samp(d, 0.0).pvalue)
        assert row.seeds == 3 and row.events == 6 and row.ci_level == 0.9
    [section] = event_sharpness_section(h, PLAN, level=0.95, draw_figures=True, lag=3)
    assert "3 epochs after each plastic event, against the adam run" in section.paragraphs[0]
    assert "yoked control" in section.paragraphs[1]
    assert len(section.figures) == 2 and any("3 epochs after" in t for t in section.figures)
    assert "3 epochs after" in findings_lines(table)[0]


def test_the_lag_is_a_whole_number_of_epochs_after_the_event():
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match=r"lag=.*fix: use an integer >= 1"):
            event_contrasts(_toy(), PLAN, level=0.95, lag=bad)


def test_the_committed_epoch_table_recomputes_the_numbers():
    h = _toy()
    table = epoch_table(h)
    assert list(table.columns) == ["run_id", "cell", "seed", "epoch", "grad_norm", "deform", "revert", "noise"]
    assert set(table["deform"]) == {0, 1} and table["deform"].dtype.kind == "i"
    text = table.to_csv(index=False)
    assert all(len(v) <= 8 for v in pd.read_csv(io.StringIO(text), dtype=str)["grad_norm"])  # 6 significant digits
    back = history_from_epochs(pd.read_csv(io.StringIO(text)), "d")
    got, want = (event_contrasts(x, PLAN, level=0.95).drop(columns="p_ttest") for x in (back, h))
    pd.testing.assert_frame_equal(got, want, rtol=1e-5)
    # every event counts here, also the one too late to be measured 3 epochs on
    counts = event_counts(table).set_index(["cell", "event"])
    assert counts.loc[("sal", "deform"), ["events", "seeds_acting", "seeds"]].tolist() == [9, 3, 3]
    assert counts.loc[("adam", "deform"), "events"] == 0 and counts.loc[("yoked", "deform"), "events"] == 3
