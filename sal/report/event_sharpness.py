"""Does an intervention make the minimum flatter? The paper's Fig. 7 claim as a number.

``train/grad_norm`` (analysis.sharpness: [grad_norm]) is measured at the end of every epoch, after the
method's end-of-epoch action, on one training subset shared by every cell and seed. For a plastic event at
epoch e the change is log(g_e / g_(e-1)): from the last measurement before the event to the first after it
(the epoch's training included). Each seed's events are averaged first (events of one run are not
independent), so intervals are over seeds. The same epochs of the paired baseline run (same seed) give the
change that training alone makes; the difference of the two is the event's own effect.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..core.names import EVENT_DEFORM, EVENT_NOISE, EVENT_REVERT
from ..spec.analysis import Plan
from ..stats import inference as stats
from .landscape_plots import sharpness_figure
from .render import Section

__all__ = ["event_changes", "event_contrasts", "event_sharpness_section", "GRAD_NORM"]

GRAD_NORM = "train/grad_norm"
EVENTS = (EVENT_DEFORM, EVENT_REVERT, EVENT_NOISE)
KEYS = ["dataset", "context", "seed"]


def _log_changes(run: pd.DataFrame, epochs: list[int]) -> list[float]:
    g = run.set_index("epoch")[GRAD_NORM]
    out = []
    for e in epochs:
        before, after = g.get(e - 1, math.nan), g.get(e, math.nan)
        if before > 0 and after > 0:
            out.append(math.log(after / before))
    return out


def event_changes(history: pd.DataFrame, method: str, baseline: str, event: str) -> pd.DataFrame:
    """One row per (dataset, context, seed) where ``method`` had ``event``: the mean log change of the grad
    norm over its events, the baseline's over the same epochs, and the number of events."""
    if GRAD_NORM not in history or event not in history:
        return pd.DataFrame()
    h = history.dropna(subset=[GRAD_NORM])
    rows = []
    for key, run in h[h["method"] == method].groupby(KEYS):
        epochs = [int(e) for e in run.loc[run[event].fillna(0) > 0, "epoch"] if e > 1]
        base = h[(h["method"] == baseline) & (h[KEYS] == pd.Series(key, index=KEYS)).all(axis=1)]
        mine, theirs = _log_changes(run, epochs), _log_changes(base, epochs)
        if mine and len(theirs) == len(mine):
            rows.append({**dict(zip(KEYS, key)), "events": len(mine), "change": float(np.mean(mine)),
                         "baseline_change": float(np.mean(theirs))})
    return pd.DataFrame(rows)


def _pct(v: float) -> str:
    return "" if v != v else f"{math.expm1(v) * 100:+.1f}%"


def event_contrasts(history: pd.DataFrame, plan: Plan, *, level: float) -> pd.DataFrame:
    """Per (treatment cell of a contrast, event): the change at its events and against the baseline."""
    rows = []
    for c in plan.contrasts:
        for event in EVENTS:
            per_seed = event_changes(history, c.method, c.baseline, event)
            if per_seed.empty:
                continue
            for dataset, part in per_seed.groupby("dataset"):
                own = stats.describe(part["change"], level=level)
                row = {"dataset": dataset, "method": c.method, "vs": c.baseline, "event": event.split("/")[1],
                       "seeds": len(part), "events": int(part["events"].sum()), "change": own["mean"],
                       "change_ci_low": own["ci_low"], "change_ci_high": own["ci_high"],
                       "baseline_change": float(part["baseline_change"].mean())}
                if len(part) > 1:
                    p = stats.paired(part["change"], part["baseline_change"], level=level, higher_is_better=False)
                    row.update(effect=p["delta"], effect_ci_low=p["delta_ci_low"], effect_ci_high=p["delta_ci_high"],
                               p_ttest=p["p_ttest"])
                rows.append(row)
    return pd.DataFrame(rows)


def event_sharpness_section(history: pd.DataFrame, plan: Plan, *, level: float, draw_figures: bool
                            ) -> list[Section]:
    """The grad-norm curves with events marked, and the table of event_contrasts."""
    if history.empty or GRAD_NORM not in history or not history[GRAD_NORM].notna().any():
        return []
    table = event_contrasts(history, plan, level=level)
    text = ["train/grad_norm after every epoch on one training subset shared by every cell and seed. A plastic "
            "event's change is the grad norm's ratio from the epoch before the event to the epoch of it (after "
            "the event), averaged per seed; the baseline's change is its own ratio over the same epochs of the "
            "same seed, and the effect is the paired difference (in log ratio, shown as a percent change; "
            "negative: the event flattened more than training alone). Intervals are over seeds."]
    tables = []
    if not table.empty:
        shown = pd.DataFrame({
            "dataset": table["dataset"], "method": table["method"], "vs": table["vs"], "event": table["event"],
            "seeds": table["seeds"], "events": table["events"], "change": table["change"].map(_pct),
            "change_ci": [f"[{_pct(a)}, {_pct(b)}]" if a == a else "" for a, b in
                          zip(table["change_ci_low"], table["change_ci_high"])],
            "baseline change": table["baseline_change"].map(_pct),
            "effect": table.get("effect", pd.Series(math.nan, index=table.index)).map(_pct),
            "effect_ci": [f"[{_pct(a)}, {_pct(b)}]" if a == a else "" for a, b in
                          zip(table.get("effect_ci_low", pd.Series(math.nan, index=table.index)),
                              table.get("effect_ci_high", pd.Series(math.nan, index=table.index)))],
            "p_ttest": table.get("p_ttest", pd.Series(math.nan, index=table.index)).map(
                lambda v: "" if v != v else f"{v:.4f}"),
        })
        tables.append(("Change in grad norm around plastic events", shown))
    else:
        text.append("No plastic event with a measurement on both sides was found.")
    figures = {"train/grad_norm per epoch with plastic events (paper Fig. 7)":
               sharpness_figure(history, GRAD_NORM, median_iqr=True)} if draw_figures else {}
    return [Section("Sharpness around plastic events (paper Fig. 7)", text, tables, figures,
                    data={"event_sharpness.csv": table} if not table.empty else {})]
