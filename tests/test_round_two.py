"""Verdicts you can publish: the rules around the rows of docs/statistics.md (whole
families, finished runs only, one diverged-seed rule, oriented effect sizes, the plan in force, an equal
budget), each on crafted runs written into a real MLflow store or on pure-function inputs; every test here
failed on the code before the issue."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from scipy import stats as sps

from sal.cli import main
from sal.core.names import TAG_ABLATION, TAG_BASELINE, TAG_CELL, TAG_CONTEXT, TAG_KIND, TAG_PLAN_HASH, TAG_STATUS
from sal.metrics import scoring
from sal.stats import inference as stats
from sal.tracking.store import client_for, ensure_experiment

# 10 seeds where sal beats adam with a paired t p of 0.0302 (and noise ties adam on every seed)
ADAM = [0.899, 0.905, 0.906, 0.901, 0.902, 0.898, 0.896, 0.896, 0.896, 0.904]
SAL = [0.903, 0.91, 0.907, 0.9, 0.9, 0.898, 0.903, 0.9, 0.898, 0.907]


def _log(uri: str, ablation: str, scores: dict[str, list], *, metric: str = "test/acc", dataset: str = "digits",
         methods: dict[str, str] | None = None, seeds: list[int] | None = None, status: str = "finished",
         extra_tags: dict[str, str] | None = None, params: dict[str, str] | None = None) -> None:
    """One run per (cell, seed) with ``metric``; None = that seed diverged. ``status``: the sal.status of
    every run (killed and running runs end KILLED / stay RUNNING in MLflow, as sal/tracking/store.py leaves them)."""
    from mlflow.entities import Metric, Param, RunTag

    client = client_for(uri)
    exp = ensure_experiment(uri, f"sal-ablation-{ablation}")
    for cell, values in scores.items():
        for seed, value in zip(seeds or range(1, len(values) + 1), values):
            run = client.create_run(exp)
            state = "diverged" if value is None else status
            method = (methods or {}).get(cell, cell)
            tags = {TAG_KIND: "ablation", TAG_ABLATION: ablation, TAG_CELL: cell, TAG_BASELINE: "adam",
                    "method": method, "dataset": dataset, "seed": str(seed), "config_hash": f"hash-{cell}",
                    TAG_STATUS: state, **(extra_tags or {})}
            metrics = [Metric("test/n_samples", 1000, 0, 1)] + ([] if value is None else [Metric(metric, value, 0, 1)])
            p = [Param("method.name", method), Param("optim.name", "adam")]
            p += [Param(k, v) for k, v in (params or {}).items()]
            client.log_batch(run.info.run_id, metrics=metrics, params=p, tags=[RunTag(k, v) for k, v in tags.items()])
            end = {"diverged": "FAILED", "finished": "FINISHED", "killed": "KILLED", "failed": "FAILED"}.get(state)
            if end:
                client.set_terminated(run.info.run_id, end)


def _report(uri, name, tmp_path, *extra, baseline: bool = True) -> pd.DataFrame:
    args = ["--tracking-uri", uri, "report", name, "--out", str(tmp_path / name), "--no-figures"]
    assert main(args + (["--baseline", "adam"] if baseline else []) + list(extra)) == 0
    summary = pd.read_csv(tmp_path / name / "summary.csv", keep_default_na=False, na_values=[""])
    return summary[summary["verdict"] != "reference"]


def _md(tmp_path, name) -> str:
    return (tmp_path / name / "report.md").read_text()


# ---------------------------------------------------------------- wrong results


@pytest.mark.store
def test_a_contrast_without_a_t_p_value_stays_in_its_family(tmp_path, mlflow_uri):
    # noise ties adam on every seed (no t-test there): old code corrected sal vs adam over m = 1
    # (p_holm 0.0302, "better"); Holm over the declared m = 2 gives 0.0604, inconclusive
    _log(mlflow_uri, "flatfam", {"adam": ADAM, "sal": SAL, "noise": ADAM})
    rows = _report(mlflow_uri, "flatfam", tmp_path).set_index("method")
    p = sps.ttest_rel(SAL, ADAM).pvalue
    assert rows.loc["sal", "p_ttest"] == pytest.approx(p) and p == pytest.approx(0.0302, abs=1e-4)
    assert rows.loc["sal", "p_holm"] == pytest.approx(2 * p)
    assert rows.loc["sal", "verdict"] == "inconclusive"
    # the tied contrast enters with the p of the test that decides it (sign-flip: 1 for all-zero differences)
    assert rows.loc["noise", "p_holm"] == 1.0
    assert "m=2" in _md(tmp_path, "flatfam")


@pytest.mark.store
def test_adjust_keeps_nan_pvalues_in_the_family():
    out = stats.adjust([0.01, np.nan, 0.04])
    assert out[[0, 2]] == pytest.approx([0.03, 0.08]) and math.isnan(out[1])  # Holm over m = 3, the NaN as 1
    assert stats.adjust([0.01, np.nan, 0.04], fill=[np.nan, 0.002, np.nan]) == pytest.approx([0.02, 0.006, 0.04])


@pytest.mark.store
def test_killed_and_running_runs_are_not_results(tmp_path, mlflow_uri):
    # seed 3 of sal re-launched and killed after one epoch (0.5), seed 4 still running (0.4): old code took the
    # newest runs as the seeds' scores (delta -0.0884); only finished runs count (delta +0.0023), the rest listed
    _log(mlflow_uri, "killed_crafted", {"adam": ADAM, "sal": SAL})
    _log(mlflow_uri, "killed_crafted", {"sal": [0.5]}, seeds=[3], status="killed")
    _log(mlflow_uri, "killed_crafted", {"sal": [0.4]}, seeds=[4], status="running")
    row = _report(mlflow_uri, "killed_crafted", tmp_path).set_index("method").loc["sal"]
    assert row["n"] == 10 and row["delta"] == pytest.approx(np.mean(np.subtract(SAL, ADAM)))
    md = _md(tmp_path, "killed_crafted")
    assert "2 run(s) are not results and were left out" in md
    assert "sal seed 3 (killed)" in md and "sal seed 4 (running)" in md


def test_the_lcb_objective_is_not_clipped_so_divergence_ranks_last(tmp_path):
    from sal.sweeps.objectives import trial_value

    # two of three seeds diverged (scored 0) vs three trained seeds with a wide spread: old code clipped
    # both LCBs to 0 and Optuna kept the first completed trial, the diverged one
    bad = trial_value("lcb", [0.9, 0.0, 0.0], [False, True, True], metric="val/acc", maximize=True)
    good = trial_value("lcb", [0.2, 0.5, 0.8], [False, False, False], metric="val/acc", maximize=True)
    assert good > bad and bad < 0
    study = optuna.create_study(direction="maximize", storage=f"sqlite:///{tmp_path / 'o.db'}")
    for value in (bad, good):
        study.tell(study.ask(), value)
    assert study.best_trial.number == 1


def _loss_factorial_cells(rng, n=10):
    base = 0.5 + rng.normal(0, 0.01, n)
    return {"adam": list(base), "noise": list(base + rng.normal(0, 0.002, n)),
            "deform": list(base - 0.05 + rng.normal(0, 0.004, n)), "sal": list(base - 0.05 + rng.normal(0, 0.002, n))}


FACTORIAL_METHODS = {"adam": "base", "noise": "sal_noise_only", "deform": "sal_deform_only", "sal": "sal"}


@pytest.mark.store
def test_a_diverged_seed_keeps_the_loss_factorial_with_a_rank_based_note(tmp_path, mlflow_uri):
    # noise diverges on seed 4 of test/loss: old code dropped the data set's factorial without a note
    cells = _loss_factorial_cells(np.random.default_rng(1))
    cells["noise"][3] = None
    _log(mlflow_uri, "lossfact", cells, metric="test/loss", methods=FACTORIAL_METHODS)
    _report(mlflow_uri, "lossfact", tmp_path, "--metric", "test/loss")
    table = pd.read_csv(tmp_path / "lossfact" / "factorial.csv").set_index("effect")
    assert set(table.index) == {"noise", "deformation", "interaction"} and (table["n"] == 10).all()
    assert set(table["scale"]) == {"ranks"}
    # the deformation lowers the loss on every seed: in ranks too
    assert table.loc["deformation", "verdict"] == "better"
    assert "rank-based" in _md(tmp_path, "lossfact")


def test_the_cross_data_set_view_keeps_a_diverged_loss_seed(tmp_path, mlflow_uri):
    from sal.spec.analysis import legacy_plan
    from sal.stats.summary import ReportOptions, across_datasets

    # the same runs scored as accuracies and as losses: the divergence counts as the worst run in both
    rng = np.random.default_rng(2)
    rows = []
    for dataset in ("a", "b", "c"):
        adam = 0.8 + rng.normal(0, 0.01, 6)
        sal = adam + 0.01 + rng.normal(0, 0.003, 6)
        for seed in range(6):
            diverged = dataset == "a" and seed == 0
            for method, v in (("adam", adam[seed]), ("sal", sal[seed])):
                bad = diverged and method == "sal"
                for metric, value in (("test/acc", 0.0 if bad else v), ("test/loss", math.inf if bad else 1 - v)):
                    rows.append({"dataset": dataset, "context": "", "method": method, "seed": seed, "metric": metric,
                                 "value": value, "diverged": bad})
    tidy = pd.DataFrame(rows)
    opts = ReportOptions(plan=legacy_plan(["adam", "sal"], "adam", ["test/acc", "test/loss"]), n_boot=200)
    acc, loss = (across_datasets(tidy, opts, m) for m in ("test/acc", "test/loss"))
    # old code: the loss view dropped sal's diverged run (and its pair) while the accuracy view scored it 0
    assert acc["n_runs"]["sal"] == loss["n_runs"]["sal"] == 18
    assert loss["diverged_score"] == acc["diverged_score"] == 0.0
    # the normalised loss delta (1 = best run of its data set) with the diverged seed at 0, by hand
    expected = []
    for _, g in tidy[tidy["metric"] == "test/loss"].groupby("dataset"):
        w = g.pivot_table(index="seed", columns="method", values="value")
        finite = -w.to_numpy()[np.isfinite(w.to_numpy())]
        norm = ((-w - finite.min()) / (finite.max() - finite.min())).where(np.isfinite(w), 0.0)
        expected.append((norm["sal"] - norm["adam"]).mean())
    assert loss["deltas"]["sal vs adam"]["norm_delta"] == pytest.approx(np.mean(expected))
    # the diverged seed's accuracy of 0 does not set the data set's scale (it compressed every other run of
    # data set a towards 1 under min-max over all runs): the same runs read the same as accuracies and losses
    assert acc["deltas"]["sal vs adam"]["norm_delta"] == pytest.approx(loss["deltas"]["sal vs adam"]["norm_delta"])


def test_the_forest_plot_shows_an_infinite_delta_and_no_rope_band_on_a_loss():
    from sal.report.figures import forest

    summary = pd.DataFrame([
        {"dataset": "digits", "context": "", "metric": "test/loss", "method": "sal", "baseline": "adam",
         "delta": math.inf, "delta_ci_low": math.nan, "delta_ci_high": math.nan, "verdict": "worse"},
        {"dataset": "digits", "context": "", "metric": "test/loss", "method": "sam", "baseline": "adam",
         "delta": -0.01, "delta_ci_low": -0.02, "delta_ci_high": 0.0, "verdict": "inconclusive"}])
    ax = forest(summary, "test/loss", 0.002).axes[0]
    assert not ax.patches  # the ROPE (an accuracy margin) is not drawn on a loss
    assert any("diverged" in t.get_text() for t in ax.texts)  # old code drew nothing for sal vs adam


# ---------------------------------------------------------------- misleading


@pytest.mark.store
def test_a_constant_gain_below_the_rope_is_equivalent(tmp_path, mlflow_uri):
    # +1/1024 on every seed (exact in binary), ROPE 0.002: old code "better" (sign-flip p 0.002)
    adam = [0.875 + k / 1024 for k in range(10)]
    _log(mlflow_uri, "constgain", {"adam": adam, "sal": [a + 1 / 1024 for a in adam]})
    row = _report(mlflow_uri, "constgain", tmp_path).set_index("method").loc["sal"]
    assert row["delta"] == 1 / 1024 and row["p_signflip"] == pytest.approx(2 / 2**10)
    assert row["verdict"] == "equivalent"
    assert stats.verdict(delta=0.003, ci_low=math.nan, ci_high=math.nan, p_ttest_adj=math.nan, p_signflip_adj=0.002,
                         n=10, rope=0.002, sd=0.0) == "better"  # outside the ROPE the sign-flip decides


@pytest.mark.store
def test_effect_sizes_read_higher_favours_the_method_on_a_loss(tmp_path, mlflow_uri):
    # sal has the lower loss on 9 of 10 seeds: old code "better" with win rate 0.10 and Cliff's delta -0.68
    rng = np.random.default_rng(5)
    adam = 0.5 + rng.normal(0, 0.02, 10)
    sal = adam - 0.02 + rng.normal(0, 0.004, 10)
    sal[0] = adam[0] + 0.001
    _log(mlflow_uri, "losswin", {"adam": list(adam), "sal": list(sal)}, metric="test/loss")
    row = _report(mlflow_uri, "losswin", tmp_path, "--metric", "test/loss").set_index("method").loc["sal"]
    assert row["verdict"] == "better" and row["win_rate"] == pytest.approx(0.9)
    x, y = sal[:, None], adam[None, :]
    assert row["cliffs_delta"] == pytest.approx(((x < y).sum() - (x > y).sum()) / 100)
    assert row["cliffs_delta"] > 0 and row["p_outperform"] > 0.5


TINY = {"data": {"name": "digits"}, "model": {"name": "mlp", "width": 8}, "method": {"name": "base"},
        "train": {"epochs": 2, "batch_size": 32}}


def _ablation_file(tmp_path, name, **fields):
    doc = {"name": name, "base": TINY, "seeds": 10, "baseline": "adam",
           "cells": {"adam": {"method.name": "base"}, "sal": {"method.name": "sal", "method.warmup": 0}}}
    doc.update(fields)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _queue_and_log(tmp_path, uri, path, scores, *, seeds=None):
    """Launch the ablation's queue (which stores its definition and plan) and log crafted runs for it
    carrying that launch's plan hash, as ablation workers do."""
    from sal.queue.engine import StorageRef
    from sal.spec.config import config_hash
    from sal.sweeps.ablation import load_ablation, plan_of, queue_grid

    spec, items = load_ablation(path, seeds=seeds)
    queue_grid(StorageRef(str(tmp_path / f"{spec.name}.journal")), spec, items, retry_failed=False, uri=uri)
    plan_hash = plan_of(spec, items).hash
    hashes = {i.cell: config_hash(i.spec) for i in items}
    for cell, values in scores.items():
        from mlflow.entities import Metric, RunTag

        client = client_for(uri)
        exp = ensure_experiment(uri, f"sal-ablation-{spec.name}")
        for seed, value in values.items():
            run = client.create_run(exp)
            tags = {TAG_KIND: "ablation", TAG_ABLATION: spec.name, TAG_CELL: cell, TAG_CONTEXT: "",
                    TAG_BASELINE: "adam", "method": cell, "dataset": "digits", "seed": str(seed),
                    "config_hash": hashes[cell], TAG_STATUS: "finished", TAG_PLAN_HASH: plan_hash}
            client.log_batch(run.info.run_id, metrics=[Metric("test/acc", value, 0, 1)],
                             tags=[RunTag(k, v) for k, v in tags.items()])
            client.set_terminated(run.info.run_id, "FINISHED")
    return plan_hash


@pytest.mark.store
def test_a_plan_edited_after_the_runs_is_a_departure(tmp_path, mlflow_uri):
    # alpha raised to 0.1 after the runs: old code analysed at 0.1 and said "as planned"
    path = _ablation_file(tmp_path, "moved")
    first = _queue_and_log(tmp_path, mlflow_uri, path, {"adam": dict(enumerate(ADAM, 1)),
                                                        "sal": dict(enumerate(SAL, 1))})
    _ablation_file(tmp_path, "moved", analysis={"alpha": 0.1, "rope": 0.001})
    _queue_and_log(tmp_path, mlflow_uri, path, {})
    _report(mlflow_uri, "moved", tmp_path, baseline=False)
    md = _md(tmp_path, "moved")
    assert "as planned" not in md and f"plan in force: hash {first}" in md
    assert "alpha: 0.05 -> 0.1" in md and "rope: 0.002 -> 0.001" in md
    assert "alpha = 0.05" in md  # the analysis keeps the plan the runs were launched with


@pytest.mark.store
def test_seeds_added_after_the_plan_are_a_departure(tmp_path, mlflow_uri):
    path = _ablation_file(tmp_path, "moreseeds", seeds=5)
    _queue_and_log(tmp_path, mlflow_uri, path, {"adam": dict(enumerate(ADAM[:5], 1)),
                                                "sal": dict(enumerate(SAL[:5], 1))})
    _queue_and_log(tmp_path, mlflow_uri, path, {"adam": dict(zip(range(6, 11), ADAM[5:])),
                                                "sal": dict(zip(range(6, 11), SAL[5:]))}, seeds=10)
    _report(mlflow_uri, "moreseeds", tmp_path, baseline=False)
    md = _md(tmp_path, "moreseeds")
    assert "as planned" not in md and "seeds: 5 -> 10" in md and "seeds 6, 7, 8, 9, 10" in md


@pytest.mark.store
def test_a_filter_that_drops_a_planned_seed_is_a_departure(tmp_path, mlflow_uri):
    # sal diverged on seed 2; --filter "tags.seed != '2'" removed it: old code said "as planned", no warning
    sal = list(SAL)
    sal[1] = None
    _log(mlflow_uri, "filtered", {"adam": ADAM, "sal": sal})
    _report(mlflow_uri, "filtered", tmp_path, "--filter", "tags.seed != '2'")
    md = _md(tmp_path, "filtered")
    assert "as planned" not in md
    assert "--filter removed 2 run(s) of planned contrasts: adam seed 2; sal seed 2 (diverged)" in md


@pytest.mark.store
def test_allow_unpaired_describes_each_row_on_its_paired_seeds(tmp_path, mlflow_uri):
    # adam has no run for seed 10: old code gave sal's mean over 10 seeds beside n = 9
    _log(mlflow_uri, "unpaired", {"adam": ADAM[:9], "sal": SAL})
    row = _report(mlflow_uri, "unpaired", tmp_path, "--allow-unpaired").set_index("method").loc["sal"]
    assert row["n"] == 9 and row["mean"] == pytest.approx(np.mean(SAL[:9]))
    assert "on the 9 seed(s) both cells have" in _md(tmp_path, "unpaired")


# ---------------------------------------------------------------- cosmetic


@pytest.mark.store
def test_bh_values_are_not_called_holm_and_the_latex_has_no_fake_sd(tmp_path, mlflow_uri):
    _log(mlflow_uri, "bhcol", {"adam": ADAM, "sal": SAL, "noise": ADAM})
    rows = _report(mlflow_uri, "bhcol", tmp_path, "--correction", "bh").set_index("method")
    assert rows["p_holm"].isna().all() and set(rows["correction"]) == {"bh"}
    assert rows.loc["sal", "p_adj"] == pytest.approx(min(1, 2 * sps.ttest_rel(SAL, ADAM).pvalue))
    md = _md(tmp_path, "bhcol")
    assert "| p_bh |" in md and "| p_holm |" not in md
    _log(mlflow_uri, "onesd", {"adam": [0.9], "sal": [0.91]})
    _report(mlflow_uri, "onesd", tmp_path)
    tex = (tmp_path / "onesd" / "table.tex").read_text()
    assert "$\\pm$ 0.0000" not in tex


def test_the_level_and_the_diverged_wording_follow_the_analysis():
    from sal.report.findings import notes
    from sal.report.render import _setup_lines
    from sal.spec.analysis import legacy_plan
    from sal.stats.selection import Selection
    from sal.stats.summary import ReportOptions

    opts = ReportOptions(plan=legacy_plan(["adam", "sal"], "adam", ["test/loss"]), level=0.99)
    text = "\n".join(_setup_lines("x", opts, 10, {"all": 1}, "sqlite://", []))
    assert "99% t-intervals" in text and "95%" not in text
    summary = pd.DataFrame([{"dataset": "digits", "context": "", "metric": "test/loss", "method": "sal",
                             "family": "all", "baseline": "adam", "n": 10, "n_diverged": 1, "diverged_seeds": "3",
                             "delta": math.inf, "p_ttest": math.nan, "verdict": "worse", "exploratory": False}])
    said = " ".join(notes(summary, opts, Selection(pd.DataFrame()), pd.DataFrame()))
    assert "0 for accuracies" not in said and "+inf" in said


def test_direction_and_bounds_come_from_one_rule(tmp_path):
    from sal.queue.engine import StorageRef
    from sal.stats.summary import bounds_of
    from sal.sweeps.ablation import load_ablation, metric_direction, queue_grid
    from sal.sweeps.ablation_worker import _trial_value

    assert metric_direction("val/f1") == scoring.direction("val/f1") == "maximize"  # old: minimize
    assert metric_direction("test/loss") == "minimize" and metric_direction("time/train_s") == "minimize"
    assert bounds_of("val/f1") == scoring.bounds("val/f1") == (0.0, 1.0)
    # an ablation recording val/f1 on its Optuna queue, with one seed diverged
    path = _ablation_file(tmp_path, "f1", metric="val/f1", seeds=2)
    spec, items = load_ablation(path)
    ref = StorageRef(str(tmp_path / "f1.journal"))
    queue_grid(ref, spec, items, retry_failed=False)
    study = optuna.load_study(study_name="f1", storage=ref.open())
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    diverged, trained = _trial_value("diverged", math.nan, "val/f1"), _trial_value("finished", 0.4, "val/f1")
    assert diverged == 0.0 and diverged < trained  # the worst value in the queue's own direction (old: -inf, best)


def test_compare_refuses_unequal_budgets_and_selection_metrics(tmp_path):
    from sal.spec.config import SpecError
    from sal.sweeps.compare import load_compare

    def write(**fields):
        doc = {"name": "budget", "base": TINY,
               "methods": {"adam": {"method.name": "base"}, "sal": {"method.name": "sal", "method.warmup": 0}},
               "tuning": {"trials": 2, "seeds": 2}, "evaluation": {"seeds": 3, "first_seed": 101}}
        doc.update(fields)
        path = tmp_path / "budget.yaml"
        path.write_text(yaml.safe_dump(doc))
        return path

    methods = {"adam": {"method.name": "base", "train.epochs": 2}, "sal": {"method.name": "sal", "method.warmup": 0,
                                                                         "train.epochs": 30}}
    with pytest.raises(SpecError, match=r"train.epochs differs between methods \(adam: 2, sal: 30\)"):
        load_compare(write(methods=methods))
    space = {"sal": {"train.epochs": {"type": "int", "low": 2, "high": 30}}}
    with pytest.raises(SpecError, match=r"tuning.space.sal tunes train.epochs"):
        load_compare(write(tuning={"trials": 2, "seeds": 2, "space": space}))
    with pytest.raises(SpecError, match=r"analysis.metrics=\['val/acc'\] evaluates on the split used for selection"):
        load_compare(write(analysis={"metrics": ["val/acc"]}))
    with pytest.raises(SpecError, match=r"evaluation.seeds=1 with max_seeds=5"):
        load_compare(write(evaluation={"seeds": 1, "max_seeds": 5, "first_seed": 101}))


def test_a_compare_rerun_with_another_sequential_design_is_refused(tmp_path, mlflow_uri):
    from sal.spec.config import SpecError
    from sal.sweeps.compare import check_design, load_compare, record_design

    def write(max_seeds):
        doc = {"name": "seqdesign", "base": TINY,
               "methods": {"adam": {"method.name": "base"}, "sal": {"method.name": "sal", "method.warmup": 0}},
               "tuning": {"trials": 2, "seeds": 2},
               "evaluation": {"seeds": 10, "first_seed": 101, "max_seeds": max_seeds, "step": 5}}
        path = tmp_path / f"seq{max_seeds}.yaml"
        path.write_text(yaml.safe_dump(doc))
        return load_compare(path)

    first = write(20)
    check_design(first, mlflow_uri)  # nothing stored yet
    record_design(first, mlflow_uri, looks_taken=3)
    check_design(first, mlflow_uri)  # the same design goes on
    with pytest.raises(SpecError, match=r"looks \[10, 15, 20\].*3 look\(s\) were taken.*\[10, 15, 20, 25, 30"):
        check_design(write(40), mlflow_uri)


@pytest.mark.store
def test_a_look_never_analyses_more_seeds_than_its_label(tmp_path, mlflow_uri):
    from sal.report.build import analyse

    _log(mlflow_uri, "lookseeds", {"adam": ADAM, "sal": SAL})
    a = analyse(mlflow_uri, "lookseeds", baseline="adam", seeds=list(range(1, 6)))
    row = a.summary[a.summary["verdict"] != "reference"].iloc[0]
    assert row["n"] == 5 and row["delta"] == pytest.approx(np.mean(np.subtract(SAL[:5], ADAM[:5])))
    assert not any("seed" in d for d in a.departures)  # the look's own seeds are the design, not a departure
