"""Crafted ablations, written straight into MLflow, one per verdict rule of docs/statistics.md;
each of them got a wrong verdict on old main."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sal.cli import main
from sal.core.names import TAG_ABLATION, TAG_BASELINE, TAG_CELL, TAG_KIND, TAG_STATUS
from sal.tracking.store import client_for, ensure_experiment


def _log(uri: str, ablation: str, scores: dict[str, list[float | None]], *, config: dict[str, str] | None = None,
         methods: dict[str, str] | None = None, n_test: int = 1000) -> None:
    """One FINISHED run per (cell, seed) with test/acc; None = that seed diverged (no test score)."""
    from mlflow.entities import Metric, Param, RunTag

    client = client_for(uri)
    exp = ensure_experiment(uri, f"sal-ablation-{ablation}")
    for cell, values in scores.items():
        for seed, value in enumerate(values, start=1):
            run = client.create_run(exp)
            status = "diverged" if value is None else "finished"
            tags = {TAG_KIND: "ablation", TAG_ABLATION: ablation, TAG_CELL: cell, TAG_BASELINE: "adam",
                    "method": (methods or {}).get(cell, cell), "dataset": "digits", "seed": str(seed),
                    "config_hash": (config or {}).get(cell, f"hash-{cell}"), TAG_STATUS: status}
            metrics = [Metric("test/n_samples", n_test, 0, 1)] + ([] if value is None else
                                                                   [Metric("test/acc", value, 0, 1)])
            params = [Param("method.name", (methods or {}).get(cell, cell)), Param("optim.name", "adam")]
            client.log_batch(run.info.run_id, metrics=metrics, params=params,
                             tags=[RunTag(k, v) for k, v in tags.items()])
            client.set_terminated(run.info.run_id, "FAILED" if value is None else "FINISHED")


def _summary(uri, name, tmp_path, *extra) -> pd.DataFrame:
    assert main(["--tracking-uri", uri, "report", name, "--out", str(tmp_path / name), "--no-figures",
                 "--baseline", "adam", *extra]) == 0
    summary = pd.read_csv(tmp_path / name / "summary.csv", keep_default_na=False, na_values=[""])
    return summary[summary["verdict"] != "reference"].set_index("method")


@pytest.mark.store
def test_zero_variance_deltas_on_two_seeds_are_not_better(tmp_path, mlflow_uri):
    # every seed +1 point: old main gave p_ttest = 0, a zero-width CI and "better" with 2 seeds
    _log(mlflow_uri, "zerovar", {"adam": [0.90, 0.92], "sal": [0.91, 0.93]})
    row = _summary(mlflow_uri, "zerovar", tmp_path).loc["sal"]
    assert np.isnan(row["p_ttest"]) and np.isnan(row["delta_ci_low"]) and row["p_signflip"] == pytest.approx(0.5)
    assert row["verdict"] == "inconclusive" and bool(row["exploratory"])


@pytest.mark.store
def test_a_significant_gain_inside_the_rope_is_equivalent(tmp_path, mlflow_uri):
    # +0.05 points on 12 seeds, tight: significant, and negligible (old main: "better")
    rng = np.random.default_rng(3)
    adam = list(0.9 + rng.normal(0, 0.003, 12))
    sal = [a + 0.0005 + e for a, e in zip(adam, rng.normal(0, 0.0001, 12))]
    _log(mlflow_uri, "inrope", {"adam": adam, "sal": sal})
    row = _summary(mlflow_uri, "inrope", tmp_path).loc["sal"]
    assert row["p_holm"] < 0.001 and 0 < row["delta_ci_low"] and row["delta_ci_high"] < 0.002
    assert row["verdict"] == "equivalent"


@pytest.mark.store
def test_diverged_seeds_count_against_the_method(tmp_path, mlflow_uri):
    # SAL diverges on 2 of 8 seeds and wins by 1 point on the other 6: old main dropped the two
    # (with --allow-unpaired) and called SAL "better" on 6 seeds
    adam = [0.90, 0.91, 0.89, 0.92, 0.90, 0.91, 0.90, 0.89]
    sal = [None, None] + [a + 0.01 for a in adam[2:]]
    _log(mlflow_uri, "blowups", {"adam": adam, "sal": sal})
    row = _summary(mlflow_uri, "blowups", tmp_path, "--allow-unpaired").loc["sal"]
    assert (row["n"], row["n_diverged"], row["diverged_seeds"]) == (8, 2, "1,2")
    d = np.array([0 - 0.90, 0 - 0.91] + [0.01] * 6)
    assert row["delta"] == pytest.approx(d.mean()) and row["verdict"] != "better"
    assert row["win_rate"] == pytest.approx(6 / 8)


def test_mixed_configurations_without_a_definition_are_an_error(tmp_path, mlflow_uri, capsys):
    _log(mlflow_uri, "mixed", {"adam": [0.9, 0.91, 0.92], "sal": [0.91, 0.92, 0.93]})
    _log(mlflow_uri, "mixed", {"sal": [0.5, 0.5, 0.5]}, config={"sal": "other-config"})
    assert main(["--tracking-uri", mlflow_uri, "report", "mixed", "--out", str(tmp_path / "m"), "--baseline",
                 "adam"]) == 2
    err = capsys.readouterr().err
    assert "cell sal (digits) has runs of 2 configurations (config_hash hash-sal, other-config)" in err
    assert not (tmp_path / "m").exists()


@pytest.mark.store
def test_the_rope_below_one_test_sample_is_said(tmp_path, mlflow_uri):
    _log(mlflow_uri, "smalltest", {"adam": [0.9, 0.8, 0.85], "sal": [0.9, 0.82, 0.85]}, n_test=100)
    _summary(mlflow_uri, "smalltest", tmp_path)
    md = (tmp_path / "smalltest" / "report.md").read_text()
    assert "the ROPE of +-0.002 is below one test sample (1/100 = 0.01)" in md
    # reachable, only coarse: the committed digits dose stage has four equivalent doses at this ROPE
    assert "unreachable" not in md and "needs most seeds to tie exactly" in md


def test_the_factorial_table_splits_noise_and_deformation(tmp_path, mlflow_uri):
    rng = np.random.default_rng(0)
    base = 0.9 + rng.normal(0, 0.004, 10)
    noise = base + rng.normal(0, 0.0005, 10)  # the noise does nothing
    deform = base + 0.02 + rng.normal(0, 0.001, 10)  # the deformation gives 2 points
    sal = deform + rng.normal(0, 0.0005, 10)
    methods = {"adam": "base", "noise": "sal_noise_only", "deform": "sal_deform_only", "sal": "sal"}
    _log(mlflow_uri, "factorial", {"adam": list(base), "noise": list(noise), "deform": list(deform),
                                   "sal": list(sal)}, methods=methods)
    _summary(mlflow_uri, "factorial", tmp_path)
    table = pd.read_csv(tmp_path / "factorial" / "factorial.csv").set_index("effect")
    assert table.loc["noise", "estimate"] == pytest.approx((((noise - base) + (sal - deform)) / 2).mean())
    assert table.loc["deformation", "estimate"] == pytest.approx((((deform - base) + (sal - noise)) / 2).mean())
    assert table.loc["interaction", "estimate"] == pytest.approx(((sal - deform) - (noise - base)).mean())
    assert table.loc["deformation", "verdict"] == "better" and table.loc["noise", "verdict"] != "better"
    md = (tmp_path / "factorial" / "report.md").read_text()
    assert "Which part of SAL matters" in md and "digits: the deformation helps" in md


@pytest.mark.store
def test_every_contrast_carries_the_bayesian_second_opinion(tmp_path, mlflow_uri):
    from sal.stats.inference import bayes_correlated_ttest

    adam = [0.899, 0.905, 0.906, 0.901, 0.902, 0.898, 0.896, 0.896, 0.896, 0.904]
    sal = [0.903, 0.91, 0.907, 0.9, 0.9, 0.898, 0.903, 0.9, 0.898, 0.907]
    _log(mlflow_uri, "bayescols", {"adam": adam, "sal": sal})
    row = _summary(mlflow_uri, "bayescols", tmp_path).loc["sal"]
    expected = bayes_correlated_ttest(np.subtract(sal, adam), rope=0.002)
    got = (row["bayes_p_worse"], row["bayes_p_rope"], row["bayes_p_better"])
    assert got == pytest.approx(expected) and sum(got) == pytest.approx(1.0)
    # the t-test finds a difference (p 0.030), but its interval [+0.0003, +0.0043] reaches into the ROPE (0.2
    # points): not shown to be a gain, and the posterior gives only 0.63 to a mean beyond the ROPE, the rest inside
    assert row["p_holm"] == pytest.approx(0.0302, abs=1e-4)
    assert (row["delta_ci_low"], row["delta_ci_high"]) == pytest.approx((0.0003, 0.0043), abs=5e-5)
    assert row["verdict"] == "inconclusive" and row["bayes_p_better"] == pytest.approx(0.6274, abs=1e-4)
    assert "bayes w/r/b" in (tmp_path / "bayescols" / "report.md").read_text()
