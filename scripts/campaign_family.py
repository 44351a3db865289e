"""The campaign's family: every data set's primary contrasts judged together (docs/statistics.md, "The
campaign's family").

Each data set's compare stage is a group-sequential design of its own (looks at 10, 15, 20 seeds with
O'Brien-Fleming-type thresholds; sal compare corrects its 3 contrasts alone). The campaign states both data
sets' results together, so its headline is judged on one family: at every look k, Holm over all the data
sets' primary contrasts (the correction's m counts every one of them), each compared with look k's nominal
threshold, the rule sal compare applies within one data set. A contrast is decided at the first look where
its verdict is better, worse or equivalent; a data set whose stage stopped before look k has no seeds for
that look, so its contrasts still count in m there but cannot be decided at it. The data sets must share
the design (the same looks and thresholds): Holm compares every p with one threshold.

Reads, per data set, ``<out>/<ds>/compare/summary.csv`` (the contrasts and the ROPE), ``compare_seeds.csv``
(per-seed test accuracy) and ``compare_design.csv`` (the looks: seeds and threshold, written by
scripts/campaign.py). Writes nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from sal.stats import inference as stats

__all__ = ["CampaignFamily", "campaign_family", "read_design"]

_DECIDED = {"better", "worse", "equivalent"}
PRIMARY_METRIC = "test/acc"  # the compare presets' analysis metric, a column of compare_seeds.csv (test_acc)


@dataclass
class CampaignFamily:
    rows: pd.DataFrame = field(default_factory=pd.DataFrame)  # one row per (data set, contrast)
    looks: pd.DataFrame = field(default_factory=pd.DataFrame)  # look, n_seeds, threshold (shared design)
    problem: str = ""  # why no family could be formed ("" when it was)

    @property
    def m(self) -> int:
        return len(self.rows)


def read_design(folder: Path) -> pd.DataFrame | None:
    path = folder / "compare_design.csv"
    return pd.read_csv(path) if path.is_file() else None


def _contrasts(summary: pd.DataFrame) -> pd.DataFrame:
    return summary[(summary["verdict"] != "reference") & (summary["metric"] == PRIMARY_METRIC)]


def _paired(wide: pd.DataFrame, method: str, baseline: str, level: float) -> dict:
    both = wide[[method, baseline]].dropna()
    out = stats.paired(both[method].to_numpy(), both[baseline].to_numpy(), level=level, bounds=(0.0, 1.0),
                       n_boot=200)
    return {**out, "sd": out["delta_sd"]}


def campaign_family(out: Path, datasets: list[str]) -> CampaignFamily:
    """The campaign-level family of ``datasets``' primary contrasts under ``out`` (see the module's doc)."""
    parts, designs = {}, {}
    for ds in datasets:
        summary = out / ds / "compare" / "summary.csv"
        seeds, design = out / ds / "compare_seeds.csv", read_design(out / ds)
        if not summary.is_file() or not seeds.is_file():
            continue
        if design is None:
            return CampaignFamily(problem=f"{ds} has no compare_design.csv (the looks of its compare stage)")
        parts[ds] = (_contrasts(pd.read_csv(summary)), pd.read_csv(seeds))
        designs[ds] = design
    if len(parts) < 2:
        return CampaignFamily(problem="fewer than two data sets have a compare stage")
    first = next(iter(designs.values()))
    shared = first[["n_seeds", "threshold"]]
    if any(not d[["n_seeds", "threshold"]].equals(shared) for d in designs.values()):
        return CampaignFamily(problem="the data sets' compare stages have different designs (looks or thresholds), "
                                      "so one Holm threshold per look does not exist")
    rows: dict[tuple[str, str, str], dict] = {}
    for look in first.itertuples():
        level = 1 - look.threshold
        current = []
        for ds, (contrasts, seeds) in parts.items():
            look_seeds = [int(s) for s in str(designs[ds].loc[look.Index, "seeds"]).split()]
            wide = seeds[seeds["seed"].isin(look_seeds)].pivot_table(index="seed", columns="cell", values="test_acc")
            for c in contrasts.itertuples():
                r = _paired(wide, c.method, c.baseline, level)
                # only a look whose every seed was run counts: a stage that stopped earlier looks no more
                current.append({"dataset": ds, "method": c.method, "baseline": c.baseline, "rope": float(c.rope),
                                "verdict_alone": c.verdict, "looked": r["n"] == len(look_seeds), **r})
        p_holm = stats.adjust([r["p_ttest"] for r in current], fill=[r["p_signflip"] for r in current])
        p_sf_holm = stats.adjust([r["p_signflip"] for r in current])
        for r, ph, psf in zip(current, p_holm, p_sf_holm):
            key = (r["dataset"], r["method"], r["baseline"])
            if key in rows and rows[key]["verdict"] in _DECIDED:
                continue  # decided at an earlier look: the design stops there
            verdict = stats.verdict(delta=r["delta"], ci_low=r["delta_ci_low"], ci_high=r["delta_ci_high"],
                                    p_ttest_adj=float(ph), p_signflip_adj=float(psf), n=r["n"], rope=r["rope"],
                                    alpha=look.threshold, sd=r["sd"]) if r["looked"] else "inconclusive"
            if r["looked"] or key not in rows:
                rows[key] = {"dataset": r["dataset"], "method": r["method"], "baseline": r["baseline"],
                             "look": look.look, "n": r["n"], "threshold": look.threshold, "level": level,
                             "delta": r["delta"], "seq_ci_low": r["delta_ci_low"], "seq_ci_high": r["delta_ci_high"],
                             "p_ttest": r["p_ttest"], "p_holm": float(ph), "rope": r["rope"],
                             "verdict": verdict, "verdict_alone": r["verdict_alone"]}
    table = pd.DataFrame(list(rows.values()))
    # the 95% interval beside the sequential one, on every seed the data set ran (the delta the headline states)
    ci95 = []
    for r in table.itertuples():
        seeds = parts[r.dataset][1]
        wide = seeds.pivot_table(index="seed", columns="cell", values="test_acc")
        p = _paired(wide, r.method, r.baseline, 0.95)
        ci95.append({"n_all": p["n"], "delta_all": p["delta"], "ci95_low": p["delta_ci_low"],
                     "ci95_high": p["delta_ci_high"]})
    table = pd.concat([table, pd.DataFrame(ci95)], axis=1)
    return CampaignFamily(rows=table, looks=first[["look", "n_seeds", "threshold"]].copy())


def level_label(level: float) -> str:
    """96.0862... -> '96.09%': the level an interval was computed at, as every table labels it."""
    pct = 100 * level
    return f"{pct:.0f}%" if math.isclose(pct, round(pct), abs_tol=1e-9) else f"{pct:.2f}%"

