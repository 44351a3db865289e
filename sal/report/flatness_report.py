"""The report's flatness section: per method the Hessian trace, top eigenvalue and adaptive sharpness with
t-intervals over seeds, paired tests of each method against the reference cell, loss barriers within
and between methods, and what each measure cost. Pure pandas on the runs frame of an ablation.

A measure is read from ``landscape/<m>`` (``sal landscape`` at the final weights) where a run has it,
else from ``sharpness/<m>`` (the in-run analysis at its last measured epoch, normally the last epoch).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..stats import inference as stats
from ..stats.selection import cell_of
from .render import Section

__all__ = ["SHARPNESS", "has_flatness", "flatness_tables", "flatness_sections"]

SHARPNESS = {"trace": "Hessian trace", "eig": "top eigenvalue", "adaptive": "adaptive sharpness"}
PATHS = {"barrier": "straight line", "fourier": "Fourier path"}


def _measure(runs: pd.DataFrame, name: str) -> tuple[pd.Series, str]:
    after, during = f"metrics.landscape/{name}", f"metrics.sharpness/{name}"
    if after in runs and runs[after].notna().any():
        return runs[after].astype(float), "final weights (sal landscape)"
    if during in runs and runs[during].notna().any():
        return runs[during].astype(float), "last measured epoch (analysis)"
    return pd.Series(np.nan, index=runs.index), ""


def _measured(df: pd.DataFrame):
    """(label, source, frame with a ``value`` column) for each sharpness measure the runs carry."""
    for name, label in SHARPNESS.items():
        values, source = _measure(df, name)
        if source:
            yield label, source, df.assign(value=values)


def has_flatness(runs: pd.DataFrame) -> bool:
    """Whether any run carries a sharpness or barrier metric (then the report gets the section)."""
    return any(c.startswith(("metrics.landscape/", "metrics.sharpness/trace", "metrics.sharpness/eig",
                             "metrics.sharpness/adaptive")) and runs[c].notna().any() for c in runs.columns)


def _frame(runs: pd.DataFrame) -> pd.DataFrame:
    ok = runs[runs["status"] == "FINISHED"] if "status" in runs else runs
    return ok.assign(method=cell_of(ok), seed=ok["tags.seed"].astype(int))


def flatness_tables(runs: pd.DataFrame, *, reference: str, level: float = 0.95) -> dict[str, pd.DataFrame]:
    """{"sharpness": one row per (measure, method) with n, mean, CI over seeds and the paired comparison
    with ``reference`` (delta = method - reference on shared seeds, its CI, t-test and Wilcoxon p, d_z);
    "barriers": one row per (path, kind, pair of methods) with mean and CI over seeds;
    "cost": mean seconds per run of each measure, during training and after}."""
    df = _frame(runs)
    rows = []
    for label, source, table in _measured(df):
        table = table.dropna(subset=["value"])
        ref = table[table["method"] == reference].set_index("seed")["value"]
        for method, part in table.groupby("method", sort=True):
            row = {"measure": label, "method": method, "source": source,
                   **{k: v for k, v in stats.describe(part["value"], level=level).items()}}
            mine = part.set_index("seed")["value"]
            shared = sorted(set(mine.index) & set(ref.index))
            if method != reference and len(shared) >= 2:
                p = stats.paired(mine.loc[shared].to_numpy(), ref.loc[shared].to_numpy(), level=level)
                row.update({k: p[k] for k in ("delta", "delta_ci_low", "delta_ci_high", "p_ttest", "p_wilcoxon",
                                              "effect_dz")}, n_pairs=len(shared))
            rows.append(row)
    barriers = []
    for path, label in PATHS.items():
        within = f"metrics.landscape/{path}_within"
        if within in df:
            for method, part in df.dropna(subset=[within]).groupby("method", sort=True):
                barriers.append({"path": label, "kind": "within", "methods": method,
                                 **stats.describe(part[within], level=level)})
        prefix = f"metrics.landscape/{path}_vs/"
        seen = set()
        for col in sorted(c for c in df.columns if c.startswith(prefix)):
            other = col.removeprefix(prefix)
            for method, part in df.dropna(subset=[col]).groupby("method", sort=True):
                pair = tuple(sorted((method, other)))
                if pair in seen:
                    continue  # both ends of a pair carry its barrier: count it once
                seen.add(pair)
                barriers.append({"path": label, "kind": "between", "methods": f"{pair[0]} - {pair[1]}",
                                 **stats.describe(part[col], level=level)})
    cost = []
    for col in sorted(c for c in df.columns if c.startswith(("metrics.time/landscape_", "metrics.time/sharpness_"))):
        name = col.removeprefix("metrics.time/")
        if name == "sharpness_s" or df[col].isna().all():
            continue
        when = "after training" if name.startswith("landscape_") else "per measured epoch"
        measure = name.removeprefix("landscape_").removeprefix("sharpness_").removesuffix("_s")
        cost.append({"measure": measure, "when": when, "runs": int(df[col].notna().sum()),
                     "mean_s": float(df[col].mean()), "max_s": float(df[col].max())})
    return {"sharpness": pd.DataFrame(rows), "barriers": pd.DataFrame(barriers), "cost": pd.DataFrame(cost)}


def _num(v, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:.{digits}g}"


def _ci(low, high) -> str:
    # describe() leaves the interval undefined when every seed gave the same value (e.g. barriers all 0)
    return "no spread" if pd.isna(low) or pd.isna(high) else f"[{_num(low)}, {_num(high)}]"


def _shown(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The tables formatted for reading: intervals as [low, high], p-values to 4 places."""
    out = {}
    s = tables["sharpness"]
    if len(s):
        get = lambda c: s[c] if c in s else pd.Series(np.nan, index=s.index)  # noqa: E731
        out["sharpness"] = pd.DataFrame({
            "measure": s["measure"], "method": s["method"], "n": s["n"].astype(int), "mean": s["mean"].map(_num),
            "95% CI": [_ci(a, b) for a, b in zip(s["ci_low"], s["ci_high"])],
            "delta vs ref": get("delta").map(_num),
            "delta CI": ["" if pd.isna(a) else f"[{_num(a)}, {_num(b)}]"
                         for a, b in zip(get("delta_ci_low"), get("delta_ci_high"))],
            "p (t)": get("p_ttest").map(lambda v: _num(v, 3)), "p (Wilcoxon)": get("p_wilcoxon").map(
                lambda v: _num(v, 3)), "d_z": get("effect_dz").map(lambda v: _num(v, 2)), "source": s["source"]})
    b = tables["barriers"]
    if len(b):
        out["barriers"] = pd.DataFrame({
            "path": b["path"], "kind": b["kind"], "methods": b["methods"], "n": b["n"].astype(int),
            "mean": b["mean"].map(_num), "95% CI": [_ci(x, y) for x, y in zip(b["ci_low"], b["ci_high"])]})
    c = tables["cost"]
    if len(c):
        out["cost"] = c.assign(mean_s=c["mean_s"].map(lambda v: _num(v, 3)), max_s=c["max_s"].map(
            lambda v: _num(v, 3)))
    return out


_TITLES = {"sharpness": "Sharpness per method (mean and 95% t-interval over seeds; paired on seed against the "
                        "reference)",
           "barriers": "Loss barriers (within: pairs of seeds of a method; between: the same seed under two methods)",
           "cost": "Cost of each measure (seconds per run)"}


_INTRO = ("Is the minimum flatter? Lower is flatter. Reference: {reference}. Barriers are the largest excess of "
          "the loss over the straight interpolation of the end losses, BatchNorm statistics recomputed at each point.")


def contrast_table(runs: pd.DataFrame, contrasts: list, *, correction: str = "holm",
                   level: float = 0.95) -> pd.DataFrame:
    """Each declared contrast (a family, method, baseline) on each sharpness measure: the paired delta on
    shared seeds with its interval and t-test p, corrected within (family, measure) as the verdicts are."""
    rows = []
    for label, _, table in _measured(_frame(runs)):
        wide = table.pivot_table(index="seed", columns="method", values="value")
        for c in contrasts:
            if c.method in wide and c.baseline in wide:
                pair = wide[[c.method, c.baseline]].dropna()
                if len(pair) >= 2:
                    p = stats.paired(pair[c.method], pair[c.baseline], level=level)
                    rows.append({"family": c.family, "measure": label, "contrast": f"{c.method} vs {c.baseline}",
                                 "n": len(pair), "delta": p["delta"], "ci_low": p["delta_ci_low"],
                                 "ci_high": p["delta_ci_high"], "p_ttest": p["p_ttest"],
                                 "p_signflip": p["p_signflip"]})
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    for _, idx in out.groupby(["family", "measure"]).groups.items():
        # every contrast counts in m; one without a t p-value enters with its sign-flip p (docs/statistics.md)
        out.loc[idx, "p_corrected"] = stats.adjust(out.loc[idx, "p_ttest"], correction,
                                                   fill=out.loc[idx, "p_signflip"])
    return pd.DataFrame({"family": out["family"], "measure": out["measure"], "contrast": out["contrast"],
                         "n": out["n"], "delta": out["delta"].map(_num),
                         "95% CI": [_ci(a, b) for a, b in zip(out["ci_low"], out["ci_high"])],
                         "p (t)": out["p_ttest"].map(lambda v: _num(v, 3)),
                         "p corrected": out["p_corrected"].map(lambda v: _num(v, 3))})


def flatness_sections(runs: pd.DataFrame, *, reference: str | None, contrasts: list = (), correction: str = "holm",
                      level: float = 0.95) -> list:
    """The section as a report ``Section`` in a list (empty if no run carries a flatness metric)."""
    if not has_flatness(runs) or reference is None:
        return []
    tables = [(_TITLES[k], df) for k, df in _shown(flatness_tables(runs, reference=reference, level=level)).items()]
    declared = contrast_table(runs, list(contrasts), correction=correction, level=level)
    if len(declared):
        tables.insert(1, ("Sharpness on the declared contrasts (paired on seed; corrected within each family and "
                          "measure)", declared))
    return [Section("Flatness", [_INTRO.format(reference=reference)], tables)]
