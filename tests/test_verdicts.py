"""The verdict (docs/statistics.md, "The verdict"): a gain must clear the ROPE, and a `sal compare` report
says what its last look decided."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sal.stats import inference as stats
from tests.helpers import TINY_BASE, log_cells

ROPE = 0.002


def _verdict(delta, low, high, *, p=0.001, n=10, sd=0.004, rope=ROPE):
    return stats.verdict(delta=delta, ci_low=low, ci_high=high, p_ttest_adj=p, p_signflip_adj=p, n=n, rope=rope,
                         sd=sd)


def test_better_and_worse_must_clear_the_rope_not_only_zero():
    # significant, CI excludes 0, but reaches into the ROPE: the gain may be negligible. Old main: "better".
    assert _verdict(0.003, 0.001, 0.005) == "inconclusive"
    assert _verdict(-0.003, -0.005, -0.001) == "inconclusive"
    # the whole interval beyond the ROPE (its edge included): better / worse
    assert _verdict(0.004, 0.002, 0.006) == "better"
    assert _verdict(-0.004, -0.006, -0.0025) == "worse"
    # no ROPE (unbounded metrics): excluding 0 is enough, as before
    assert _verdict(0.003, 0.001, 0.005, rope=0.0) == "better"
    # inside the ROPE wins first, significant or not (a significant but negligible gain is not a gain)
    assert _verdict(0.001, 0.0005, 0.0015) == "equivalent"
    # no spread: the difference is known exactly; the sign-flip decides, and the difference must be the ROPE
    exact = dict(p=0.002, sd=0.0)
    assert _verdict(0.0028, float("nan"), float("nan"), **exact) == "better"
    assert _verdict(0.002, float("nan"), float("nan"), **exact) == "better"
    assert _verdict(0.001, float("nan"), float("nan"), **exact) == "equivalent"
    # a diverged loss (an infinite difference) clears any ROPE
    assert _verdict(float("inf"), float("nan"), float("nan"), p=0.002, sd=float("nan")) == "better"


Z10 = np.array([-1.2, 0.4, 1.1, -0.3, 0.8, -0.9, 1.5, -0.2, 0.1, -1.3])
Z10 = (Z10 - Z10.mean()) / Z10.std(ddof=1)  # standardised: differences mean + sd * Z10 have that mean and sd


def _contrast(base, d, *, alpha=0.05, level=0.95) -> pd.Series:
    """The summary row of sal (= base + d) against adam, one contrast, the default ROPE."""
    from sal.spec.analysis import Contrast, Plan
    from sal.stats.summary import ReportOptions, summarize

    base = np.asarray(base, float)
    tidy = pd.DataFrame([{"dataset": "digits", "context": "", "metric": "test/acc", "method": m, "seed": s,
                          "value": v, "diverged": False}
                         for m, values in (("adam", base), ("sal", base + d)) for s, v in enumerate(values, 1)])
    plan = Plan([Contrast("baselines", "sal", "adam")], ["test/acc"], alpha=alpha, rope=ROPE, correction="holm",
                treatment="sal")
    return summarize(tidy, ReportOptions(plan=plan, level=level)).set_index("method").loc["sal"]


def test_a_significant_gain_whose_interval_reaches_into_the_rope_is_inconclusive_in_a_summary():
    # end to end on 10 seeds: t-test p < 0.05 and the 95% CI excludes 0, but its low end is inside the ROPE
    row = _contrast(0.90 + 0.01 * np.sin(np.arange(10)), 0.0035 + 0.0035 * Z10)  # t = 3.16, p = 0.012
    assert row["p_adj"] < 0.05 and 0 < row["delta_ci_low"] < ROPE < row["delta_ci_high"]  # the premise
    assert row["verdict"] == "inconclusive"
    # the Bayesian opinion agrees there: the mean is not surely beyond the ROPE
    assert row["bayes_p_better"] < 0.975
    # with rho = 0 the posterior is the t-interval's Student t: a 95% interval whose low end is the ROPE's edge
    # is P(better) = 0.975 exactly (docs/statistics.md, "Second opinions")
    from scipy import stats as sps

    sd = 0.004
    edge = _contrast(0.90 + 0.01 * np.sin(np.arange(10)), ROPE + sps.t.ppf(0.975, 9) * sd / np.sqrt(10) + sd * Z10)
    assert edge["delta_ci_low"] == pytest.approx(ROPE, abs=1e-12)
    assert edge["bayes_p_better"] == pytest.approx(0.975, abs=1e-9)


def test_where_the_posterior_and_the_verdict_disagree():
    # docs/statistics.md, "Second opinions": the figures quoted there
    base5 = np.array([300, 301, 299, 302, 300]) / 359  # digits' test split holds 359 images
    # no spread: 5 seeds, each one test image better. The posterior is a point beyond the ROPE; the sign-flip
    # p cannot go below 2/2^5
    row = _contrast(base5, np.full(5, 1 / 359))
    assert row["bayes_p_better"] == 1.0 and row["p_signflip"] == pytest.approx(0.0625)
    assert row["verdict"] == "inconclusive"
    # fewer than 10 seeds: a consistent gain of 1 point, t-test p 0.00015, needs the sign-flip p as well
    row = _contrast(base5, np.array([0.010, 0.012, 0.008, 0.011, 0.009]))
    assert row["p_ttest"] == pytest.approx(0.000145, abs=5e-6) and row["bayes_p_better"] > 0.999
    assert row["delta_ci_low"] > ROPE and row["verdict"] == "inconclusive"
    # a sequential look: the first of 10-15-20 seeds judges at its nominal threshold (0.0056), which pays for the
    # later looks; the posterior knows of no looks
    threshold = stats.sequential_alphas([10, 15, 20], 0.05)[0]
    assert threshold == pytest.approx(0.0056, abs=1e-4)
    base10, d = 0.90 + 0.01 * np.sin(np.arange(10)), 0.0085 + 0.008 * Z10
    row = _contrast(base10, d, alpha=threshold, level=1 - threshold)
    assert row["p_ttest"] == pytest.approx(0.0084, abs=1e-4) and row["bayes_p_better"] == pytest.approx(0.985, abs=1e-3)
    assert row["verdict"] == "inconclusive"
    assert _contrast(base10, d)["verdict"] == "better"  # the same seeds in a fixed design at 0.05


@pytest.mark.store
def test_a_compare_report_gives_the_verdicts_its_last_look_counted(tmp_path, mlflow_uri):
    # analysis.alpha 0.2, fixed design: the look judges at level 0.8. Old main re-analysed the last look for
    # the report at the default level 0.95, so the console said "1 of 1 contrasts decided" (better) while the
    # report said inconclusive.
    from sal.sweeps.compare import CompareResult, CompareSpec, take_look
    from sal.sweeps.compare_report import write_compare_report

    d = 0.01 + 0.0166 * Z10  # t = 1.9, p = 0.09: the 80% CI clears the ROPE, the 95% CI holds 0
    adam = list(0.85 + 0.01 * np.cos(np.arange(10)))
    log_cells(mlflow_uri, "alpha20", {"adam": {"acc": adam, "params": {"method.name": "base"}},
                                      "sal": {"acc": list(np.array(adam) + d), "params": {"method.name": "sal"},
                                              "events": "noise=16;deform=16;revert=;std=2e-07"}},
              seeds=10, plan={"alpha": 0.2, "families": {"baselines": ["adam"]}})
    spec = CompareSpec(name="alpha20", base=TINY_BASE, methods={"adam": {"method.name": "base"},
                                                                "sal": {"method.name": "sal", "method.warmup": 1}},
                       tuning={"seeds": [101, 102]}, evaluation={"seeds": 10, "first_seed": 1},
                       analysis={"alpha": 0.2, "families": {"baselines": ["adam"]}})
    look = take_look(mlflow_uri, "alpha20", 0.2, spec.evaluation.seed_list)
    assert list(look.verdicts.values()) == ["better"]  # the premise: decided at the look's own level
    result = CompareResult(spec, studies={}, selected={}, looks=[look], stop_reason="fixed design: 10 seeds")
    folder, analysis = write_compare_report(result, mlflow_uri, tmp_path / "report", draw_figures=False)
    summary = pd.read_csv(folder / "summary.csv", keep_default_na=False, na_values=[""]).fillna({"context": ""})
    compared = summary[summary["verdict"] != "reference"]
    assert {f"{r.dataset}|{r.context}|{r.metric}|{r.method} vs {r.baseline}": r.verdict
            for r in compared.itertuples()} == look.verdicts
    assert analysis.opts.level == pytest.approx(0.8) and "80% t-intervals" in (folder / "report.md").read_text()
