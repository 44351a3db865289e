"""Which part of SAL matters: the 2x2 factorial of noise x deformation, and the trigger (docs/statistics.md).

With the cells base (neither part), noise-only, deform-only and SAL (both) on the same seeds and the
same base optimizer, per seed s:
  noise effect       = ((n_s - b_s) + (sal_s - d_s)) / 2
  deformation effect = ((d_s - b_s) + (sal_s - n_s)) / 2
  interaction        = (sal_s - d_s) - (n_s - b_s)
and, with a yoked random-trigger cell y (as many interventions as SAL's run of the same seed, at random
epochs: sal/sweeps/yoke.py),
  trigger effect     = sal_s - y_s  (stress-timed against randomly timed, at equal count)
each a paired quantity with its t-interval and sign-flip test, corrected (Holm) across the effects
and every data set and context, and judged like any contrast.

Diverged seeds follow the one rule (docs/statistics.md, "Diverged runs"): they score the metric's worst value.
Where that is infinite (a loss) no effect has a mean; the data set's factorial is then computed on the ranks
of its 4n scores (a diverged seed ranks worst; ``scale`` = ranks), never dropped, and the report says so.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sp_stats

from ..metrics.scoring import higher_is_better, is_bounded_fraction
from . import inference as stats
from .summary import BLOCK, ReportOptions

__all__ = ["ROLES", "factorial_cells", "factorial", "factorial_sentence"]

ROLES = {"base": "base", "noise": "sal_noise_only", "deform": "sal_deform_only", "sal": "sal"}  # role -> method
YOKED = "random_trigger"  # the trigger's control: method.yoke names the sal cell
EFFECTS = ("noise", "deformation", "interaction", "trigger")


def factorial_cells(tidy: pd.DataFrame) -> dict[tuple[str, str], dict[str, str]] | None:
    """Per (dataset, context): role -> cell, when exactly one cell plays each role on one base optimizer."""
    meta = tidy.drop_duplicates(["dataset", "context", "method"])
    out = {}
    for (dataset, context), g in meta.groupby(["dataset", "context"]):
        cells = {}
        for role, method in ROLES.items():
            hits = g[g["method.name"] == method]
            if len(hits) != 1:
                break
            cells[role] = hits.iloc[0]
        else:
            if len({c["optim.name"] for c in cells.values()}) == 1:
                out[(dataset, context)] = {role: c["method"] for role, c in cells.items()}
                yoked = g[(g["method.name"] == YOKED) & (g.get("method.yoke") == cells["sal"]["method"])] \
                    if "method.yoke" in g else g.iloc[:0]
                if len(yoked) == 1:
                    out[(dataset, context)]["yoked"] = yoked.iloc[0]["method"]
    return out or None


def _effects(w: pd.DataFrame) -> dict[str, np.ndarray]:
    b, n, d, s = (w[r].to_numpy() for r in ("base", "noise", "deform", "sal"))
    out = {"noise": ((n - b) + (s - d)) / 2, "deformation": ((d - b) + (s - n)) / 2,
           "interaction": (s - d) - (n - b)}
    if "yoked" in w:
        out["trigger"] = s - w["yoked"].to_numpy()
    return out


def factorial(tidy: pd.DataFrame, opts: ReportOptions) -> pd.DataFrame:
    """One row per (dataset, context, metric, effect): n, estimate, CI, p-values, corrected p, verdict."""
    layout = factorial_cells(tidy)
    if not layout:
        return pd.DataFrame()
    rows = []
    for (dataset, context, metric), g in tidy.groupby(BLOCK):
        cells = layout.get((dataset, context))
        if cells is None:
            continue
        wide = g.pivot_table(index="seed", columns="method", values="value", aggfunc="first")
        roles = [r for r in (*ROLES, "yoked") if r in cells]
        wide = wide[[cells[r] for r in roles]].dropna()
        wide.columns = roles
        if len(wide) < 2:
            continue
        scale = "values"
        if not np.all(np.isfinite(wide.to_numpy())):
            # ranks keep the metric's direction: a diverged loss (+inf) takes the highest ranks, the worst
            scale = "ranks"
            wide = pd.DataFrame(stats_ranks(wide.to_numpy()), index=wide.index, columns=wide.columns)
        for effect, d in _effects(wide).items():
            p = stats.paired(d, np.zeros_like(d), n_boot=opts.n_boot, random_state=opts.random_state)
            rows.append({"dataset": dataset, "context": context, "metric": metric, "effect": effect,
                         **{k: p[k] for k in ("n", "delta", "delta_ci_low", "delta_ci_high", "delta_sd", "p_ttest",
                                              "p_signflip")}, "scale": scale,
                         "cells": "/".join(cells[r] for r in roles)})
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out = out.rename(columns={"delta": "estimate", "delta_ci_low": "ci_low", "delta_ci_high": "ci_high"})
    # Every effect stays in the family: one without a t p-value enters with its sign-flip p (stats.adjust).
    for _, idx in out.groupby("metric").groups.items():
        out.loc[idx, "p_adj"] = stats.adjust(out.loc[idx, "p_ttest"], opts.correction,
                                             fill=out.loc[idx, "p_signflip"])
        out.loc[idx, "p_signflip_adj"] = stats.adjust(out.loc[idx, "p_signflip"], opts.correction)
    out["correction"] = opts.correction  # p_holm names Holm's values only (docs/statistics.md, "Families")
    holm = opts.correction == "holm"
    out["p_holm"], out["p_signflip_holm"] = (out["p_adj"], out["p_signflip_adj"]) if holm else (np.nan, np.nan)
    out["verdict"] = [
        stats.verdict(delta=r.estimate, ci_low=r.ci_low, ci_high=r.ci_high, p_ttest_adj=r.p_adj,
                      p_signflip_adj=r.p_signflip_adj, n=int(r.n), sd=r.delta_sd,
                      rope=opts.rope if is_bounded_fraction(r.metric) and r.scale == "values" else 0.0,
                      alpha=opts.alpha, higher_is_better=higher_is_better(r.metric)) for r in out.itertuples()]
    return out.drop(columns="delta_sd")


def stats_ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks of every score of the block pooled (1 = lowest value; +inf ranks highest, ties share)."""
    return sp_stats.rankdata(values, axis=None).reshape(values.shape)


def factorial_sentence(table: pd.DataFrame, metric: str) -> str:
    """Which part carries the effect, in one sentence per data set, from the corrected verdicts."""
    lines = []
    for (dataset, context), g in table[table["metric"] == metric].groupby(["dataset", "context"]):
        v = dict(zip(g["effect"], g["verdict"]))
        helps = [e for e in ("noise", "deformation") if v.get(e) == "better"]
        hurts = [e for e in ("noise", "deformation") if v.get(e) == "worse"]
        where = f"{dataset}{' ' + context if context else ''}"
        if helps or hurts:
            parts = [f"the {e} helps" for e in helps] + [f"the {e} hurts" for e in hurts]
            text = f"{where}: " + " and ".join(parts)
        else:
            nulls = [e for e in ("noise", "deformation") if v.get(e) == "equivalent"]
            text = f"{where}: neither part has a significant effect" + (
                f" ({' and '.join(nulls)} equivalent to none within the ROPE)" if nulls else "")
        if v.get("interaction") in ("better", "worse"):
            text += f"; the parts interact ({'synergy' if v['interaction'] == 'better' else 'they interfere'})"
        if "trigger" in v:
            text += {"better": "; timing the interventions by stress beats random timing at equal count",
                     "worse": "; random timing at equal count beats timing by stress",
                     "equivalent": "; timing by stress is equivalent to random timing at equal count (within the "
                                   "ROPE)"}.get(v["trigger"], "; the stress trigger has no significant effect over "
                                                              "random timing at equal count")
        if (g["scale"] == "ranks").any() if "scale" in g else False:
            text += (" (rank-based: a diverged seed has no finite score, so the effects are on the ranks of the "
                     "block's scores, a diverged seed ranking worst, in rank units)")
        lines.append(text + ".")
    return " ".join(lines)
