"""Does an intervention leave a flatter minimum? The paper's Fig. 7 claim as a number.

``train/grad_norm`` (analysis.sharpness: [grad_norm]) is measured at the end of every epoch, after the
method's end-of-epoch action, on one training subset shared by every cell and seed. At the epoch of an event
it therefore shows the intervention itself (a shrink-and-perturb raises it, a revert lowers it), not where
training went from there. The claim is about later, so an event at epoch e is measured ``lag`` epochs on
(LAG by default): log(g_X(e + lag) / g_R(e + lag)), the grad norm of the run X that had the event against a
reference run R of the same seed at the same epoch. R is a cell that never intervenes (the plan's baseline,
Adam), which removes what training alone does by that epoch. Events within ``lag`` epochs of the end have no
measurement. Each seed's events are averaged first (events of one run are not independent), so intervals
are over seeds.

A contrast X vs Y: when Y makes that kind of event too (the yoked control makes SAL's interventions at
epochs of its own, sal/sweeps/yoke.py; SAL's parts make theirs), X's level at X's own events minus Y's at Y's
own events, paired by seed: do X's events leave a flatter minimum than the same kind of event when Y makes
it? When Y never makes it (Adam), X's level against Y at the same epochs.

Why not the change from the epoch before the event against the baseline's change over the same epochs:
events fire on the run's own state (SAL's stress), and a run picked where its series looks a certain way
changes from there in a biased way even when events do nothing (regression to the mean). The simulation of
that null, benchmarks/bench_event_sharpness_null.py, gives the old contrast a rejection rate far above its
nominal level and this one about its nominal level (docs/statistics.md; tests/test_event_sharpness.py).
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import stats as sps

from ..core.names import EVENT_DEFORM, EVENT_NOISE, EVENT_REVERT
from ..spec.analysis import Plan
from ..stats import inference as stats
from .landscape_plots import sharpness_figure
from .render import Section

__all__ = ["event_seed_levels", "event_contrasts", "event_sharpness_section", "event_levels_figure",
           "epoch_table", "history_from_epochs", "event_counts", "findings_lines", "GRAD_NORM", "LAG", "EPOCH_COLUMNS"]

GRAD_NORM = "train/grad_norm"
EVENTS = (EVENT_DEFORM, EVENT_REVERT, EVENT_NOISE)
KEYS = ["dataset", "context", "seed"]
# Declared before any data: 3 epochs after the event. The simulated null (docs/statistics.md) holds the
# level at 3 with grad-norm fluctuations that keep up to 0.7 of themselves from one epoch to the next; at
# 1 epoch such persistence still carries the state that fired the event, and at 5 more of a short run's
# late events fall off its end.
LAG = 3
OWN = "own events"
SAME = "same epochs"


def _check_lag(lag: int) -> None:
    if not isinstance(lag, int) or isinstance(lag, bool) or lag < 1:
        raise ValueError(f"lag={lag!r}: the grad norm is measured a whole number of epochs after an event (the "
                         "event's own epoch shows the intervention itself); fix: use an integer >= 1, e.g. "
                         f"{LAG}")


def _prepared(history: pd.DataFrame) -> pd.DataFrame:
    h = history
    if "context" not in h:
        h = h.assign(context="")
    return h.assign(context=h["context"].fillna(""), epoch=h["epoch"].astype(int))


def _log_grad_norms(history: pd.DataFrame) -> pd.DataFrame:
    """log grad norm, indexed by (dataset, context, seed, epoch), one column per cell."""
    h = history[history[GRAD_NORM] > 0]  # NaN and non-positive values have no log
    return np.log(h.pivot_table(index=[*KEYS, "epoch"], columns="method", values=GRAD_NORM, aggfunc="first"))


def _makes(history: pd.DataFrame, cell: str, event: str) -> bool:
    return bool((history.loc[history["method"] == cell, event].fillna(0) > 0).any())


def _levels(history: pd.DataFrame, logs: pd.DataFrame, cell: str, reference: str, event: str,
            lag: int) -> pd.DataFrame:
    empty = pd.DataFrame(columns=[*KEYS, "events", "level"])
    if cell not in logs or reference not in logs:
        return empty
    flags = history[(history["method"] == cell) & (history[event].fillna(0) > 0)]
    at = pd.MultiIndex.from_arrays([flags[k] for k in KEYS] + [flags["epoch"] + lag], names=[*KEYS, "epoch"])
    level = logs[cell].reindex(at).to_numpy() - logs[reference].reindex(at).to_numpy()
    frame = flags[KEYS].assign(level=level).dropna(subset=["level"])
    if frame.empty:
        return empty
    return frame.groupby(KEYS, as_index=False).agg(events=("level", "size"), level=("level", "mean"))


def _reference(history: pd.DataFrame, plan: Plan) -> str | None:
    """The cell that never intervenes, the plan's baselines first: the same-epoch reference of every event."""
    events = [e for e in EVENTS if e in history]
    acted = history[events].fillna(0).gt(0).any(axis=1) if events else pd.Series(False, index=history.index)
    cells = history["method"].unique().tolist()
    quiet = set(cells) - set(history.loc[acted, "method"].unique().tolist())
    order = [c.baseline for c in plan.contrasts] + sorted(cells)
    return next((c for c in order if c in quiet), None)


def event_seed_levels(history: pd.DataFrame, plan: Plan, *, lag: int = LAG) -> pd.DataFrame:
    """Per (contrast, event, dataset, context, seed): the treatment's level at its events, the other cell's at
    its own (when it makes that event) and the difference the contrast tests."""
    _check_lag(lag)
    if history.empty or GRAD_NORM not in history:
        return pd.DataFrame()
    h = _prepared(history)
    logs = _log_grad_norms(h)
    reference = _reference(h, plan)
    parts = []
    for c in plan.contrasts:
        for event in (e for e in EVENTS if e in h):
            if not _makes(h, c.method, event):
                continue
            if _makes(h, c.baseline, event):
                if reference is None:
                    continue  # no quiet run to put the two cells' own epochs on one footing
                mine = _levels(h, logs, c.method, reference, event, lag)
                theirs = _levels(h, logs, c.baseline, reference, event, lag)
                both = mine.merge(theirs, on=KEYS, suffixes=("", "_vs"))
                part = both.rename(columns={"events_vs": "vs_events", "level_vs": "vs_level"}).assign(
                    against=OWN, reference=reference, difference=both["level"] - both["level_vs"])
            else:
                mine = _levels(h, logs, c.method, c.baseline, event, lag)
                part = mine.assign(vs_events=0, vs_level=math.nan, against=SAME, reference=c.baseline,
                                   difference=mine["level"])
            if not part.empty:
                parts.append(part.assign(method=c.method, vs=c.baseline, event=event.split("/")[1], lag=lag))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _t(values: np.ndarray, level: float) -> dict[str, float]:
    """stats.describe's mean and t-interval, and the one-sample t-test's p (NaN without spread)."""
    d = stats.describe(values, level=level)
    p = float(sps.ttest_1samp(values, 0.0).pvalue) if d["n"] > 1 and d["sd"] > 0 else math.nan
    return {"mean": d["mean"], "low": d["ci_low"], "high": d["ci_high"], "p": p}


def _t_columns(grouped, column: str, level: float) -> pd.DataFrame:
    """_t for every group at once (a report has a few groups; the null simulation thousands)."""
    a = grouped[column].agg(["mean", "std", "count"])
    n, sd = a["count"].to_numpy(float), a["std"].to_numpy(float)
    ok = (n > 1) & (sd > 0) & np.isfinite(sd)
    se = np.where(ok, sd, np.nan) / np.sqrt(n)
    half = sps.t.ppf(0.5 + level / 2, np.maximum(n - 1, 1)) * se
    p = 2 * sps.t.sf(np.abs(a["mean"].to_numpy(float) / se), np.maximum(n - 1, 1))
    return pd.DataFrame({"mean": a["mean"], "low": a["mean"] - half, "high": a["mean"] + half, "p": p},
                        index=a.index)


def event_contrasts(history: pd.DataFrame, plan: Plan, *, level: float, lag: int = LAG,
                    seeds: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per (contrast, event, dataset): the treatment's level ``lag`` epochs after its events and the contrast's
    effect (in log ratio), with t-intervals over seeds and the t-test's p. ``seeds``: event_seed_levels'
    answer, when the caller has it already."""
    per_seed = event_seed_levels(history, plan, lag=lag) if seeds is None else seeds
    if per_seed.empty:
        return pd.DataFrame()
    g = per_seed.groupby(["method", "vs", "event", "dataset"], sort=False)
    first, sums = g[["against", "reference"]].first(), g[["events", "vs_events"]].sum()
    own, effect = _t_columns(g, "level", level), _t_columns(g, "difference", level)
    out = pd.DataFrame({"lag": lag, "ci_level": level, "against": first["against"], "reference": first["reference"],
                        "seeds": g.size(), "events": sums["events"].astype(int),
                        "vs_events": sums["vs_events"].astype(int),
                        "level": own["mean"], "level_ci_low": own["low"], "level_ci_high": own["high"],
                        "vs_level": g["vs_level"].mean(), "effect": effect["mean"], "effect_ci_low": effect["low"],
                        "effect_ci_high": effect["high"], "p_ttest": effect["p"]}).reset_index()
    return out[["dataset", "method", "vs", "event", *out.columns[4:]]]


def _pct(v: float) -> str:
    return "" if v != v else f"{math.expm1(v) * 100:+.1f}%"


def _interval(low: float, high: float) -> str:
    return f"[{_pct(low)}, {_pct(high)}]" if low == low else ""


def _what(lag: int, reference: str | None) -> str:
    ref = f"the {reference} run" if reference else "a run that never intervenes"
    return (f"train/grad_norm {lag} epochs after each plastic event, against {ref} of the same seed at the same "
            "epoch (log ratio, shown as a percent; negative: flatter than the reference)")


def event_levels_figure(per_seed: pd.DataFrame, lag: int) -> plt.Figure:
    """Each contrast's per-seed differences (dots) and their mean with its 95% t-interval (bar), in percent."""
    keys = list(per_seed.groupby(["dataset", "method", "vs", "event"], sort=False).groups)
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(keys) + 1.6))
    labels = []
    for i, key in enumerate(keys):
        part = per_seed[(per_seed[["dataset", "method", "vs", "event"]] == pd.Series(key, index=[
            "dataset", "method", "vs", "event"])).all(axis=1)]
        pct = np.expm1(part["difference"].to_numpy(float)) * 100
        ax.scatter(pct, np.full(len(pct), i), s=12, color="tab:gray", alpha=0.7, zorder=2)
        t = _t(part["difference"].to_numpy(float), 0.95)
        if t["low"] == t["low"]:
            ax.plot(np.expm1([t["low"], t["high"]]) * 100, [i, i], color="black", lw=2, zorder=3)
        ax.scatter([math.expm1(t["mean"]) * 100], [i], color="tab:red", s=30, zorder=4)
        dataset, method, vs, event = key
        against = part["against"].iloc[0]
        labels.append(f"{dataset}: {method} {event} vs {vs} " + ("(each at its own events)" if against == OWN
                                                                   else "(at the same epochs)"))
    ax.axvline(0, color="tab:blue", lw=1, ls="--")
    ax.set_yticks(range(len(keys)), labels, fontsize=8)
    ax.invert_yaxis()
    reference = per_seed["reference"].iloc[0] if (per_seed["against"] == OWN).any() else "the other cell"
    ax.set(xlabel=f"grad norm {lag} epochs after the event: % difference of the contrast",
           title=f"Grad norm {lag} epochs after plastic events (each against {reference} at that epoch)")
    ax.title.set_fontsize(9)
    fig.tight_layout()
    return fig


def event_sharpness_section(history: pd.DataFrame, plan: Plan, *, level: float, draw_figures: bool,
                            lag: int = LAG) -> list[Section]:
    """The grad-norm curves with events marked, and the table of event_contrasts."""
    _check_lag(lag)
    if history.empty or GRAD_NORM not in history or not history[GRAD_NORM].notna().any():
        return []
    per_seed = event_seed_levels(history, plan, lag=lag)
    table = event_contrasts(history, plan, level=level, lag=lag, seeds=per_seed)
    reference = table["reference"].iloc[0] if not table.empty and (table["against"] == OWN).any() else None
    text = [f"What is measured: {_what(lag, reference)}. The grad norm is logged after each epoch's intervention, "
            "so at the event's own epoch it shows the intervention itself (a deformation raises it, a revert "
            f"lowers it); {lag} epochs later training has moved on. Events within {lag} epochs of the end have "
            "no measurement. A seed's events are averaged first; intervals are t-intervals over seeds.",
            "A contrast against a cell that makes the same kind of event (the yoked control, which makes SAL's "
            "interventions at epochs of its own; SAL's parts) compares each cell at its own events, paired by "
            "seed: does the treatment's timing leave a flatter minimum than the same intervention at other "
            "epochs? Against a cell that never makes it (a base optimizer): the treatment's level against that cell "
            "at the same epochs. Not the change from the epoch before the event: events fire on the run's own state, "
            "which biases that change even when events do nothing (a simulated null rejects far above the "
            "nominal level; this contrast holds it, docs/statistics.md). Descriptive: one test per event kind, "
            "uncorrected."]
    tables = []
    if not table.empty:
        shown = pd.DataFrame({
            "dataset": table["dataset"], "method": table["method"], "vs": table["vs"], "event": table["event"],
            "against": table["against"], "seeds": table["seeds"], "events": table["events"],
            "vs events": table["vs_events"], f"level +{lag}": table["level"].map(_pct),
            "level_ci": [_interval(a, b) for a, b in zip(table["level_ci_low"], table["level_ci_high"])],
            f"vs level +{lag}": table["vs_level"].map(_pct), "effect": table["effect"].map(_pct),
            "effect_ci": [_interval(a, b) for a, b in zip(table["effect_ci_low"], table["effect_ci_high"])],
            "p_ttest": table["p_ttest"].map(lambda v: "" if v != v else f"{v:.4f}"),
        })
        tables.append((f"Grad norm {lag} epochs after plastic events", shown))
    else:
        text.append(f"No plastic event with a measurement {lag} epochs later (and a run to measure it against) "
                    "was found.")
    figures = {}
    if draw_figures:
        figures["train/grad_norm per epoch, logged after each epoch's intervention, with plastic events marked "
                "(paper Fig. 7; the event's own epoch shows the intervention itself)"] = sharpness_figure(
            history, GRAD_NORM, median_iqr=True)
        if not per_seed.empty:
            figures[f"Grad norm {lag} epochs after plastic events: each contrast per seed (dots), its mean and 95% "
                    "t-interval"] = event_levels_figure(per_seed, lag)
    return [Section("Sharpness around plastic events (paper Fig. 7)", text, tables, figures,
                    data={"event_sharpness.csv": table} if not table.empty else {})]


# ---------------------------------------------------------------- the committed per-epoch histories

EPOCH_COLUMNS = {"run_id": "run_id", "method": "cell", "seed": "seed", "epoch": "epoch", GRAD_NORM: "grad_norm",
                 EVENT_DEFORM: "deform", EVENT_REVERT: "revert", EVENT_NOISE: "noise"}


def epoch_table(history: pd.DataFrame) -> pd.DataFrame:
    """The per-epoch rows event_contrasts needs, small enough to commit: run id, cell, seed, epoch, the grad
    norm to 6 significant digits and the event flags as 0/1; empty when no run logged the grad norm."""
    if history.empty or GRAD_NORM not in history or not history[GRAD_NORM].notna().any():
        return pd.DataFrame(columns=list(EPOCH_COLUMNS.values()))
    h = history[history[GRAD_NORM].notna()]
    out = pd.DataFrame({new: h[old] if old in h else pd.NA for old, new in EPOCH_COLUMNS.items()})
    out["seed"], out["epoch"] = out["seed"].astype(int), out["epoch"].astype(int)
    out["grad_norm"] = [float(f"{v:.6g}") for v in out["grad_norm"]]
    for flag in ("deform", "revert", "noise"):
        out[flag] = (pd.to_numeric(out[flag], errors="coerce").fillna(0) > 0).astype(int)
    return out.sort_values(["cell", "seed", "epoch"]).reset_index(drop=True)


def history_from_epochs(table: pd.DataFrame, dataset: str, context: str = "") -> pd.DataFrame:
    """epoch_table's rows back as the history event_contrasts reads."""
    back = {new: old for old, new in EPOCH_COLUMNS.items()}
    return table.rename(columns=back).assign(dataset=dataset, context=context)


def event_counts(table: pd.DataFrame) -> pd.DataFrame:
    """From epoch_table's rows: per cell and event kind, every event the runs made (the sharpness table counts
    only those with a measurement ``lag`` epochs later), the seeds that made one and the seeds."""
    rows = []
    for cell, runs in table.groupby("cell", sort=True):
        for flag in ("deform", "revert", "noise"):
            per_seed = runs.groupby("seed")[flag].sum()
            rows.append({"cell": cell, "event": flag, "events": int(per_seed.sum()),
                         "seeds_acting": int((per_seed > 0).sum()), "seeds": len(per_seed)})
    return pd.DataFrame(rows)


def findings_lines(table: pd.DataFrame) -> list[str]:
    """event_sharpness.csv as the findings' short table (scripts/findings.py)."""
    if table is None or table.empty:
        return []
    lag = int(table["lag"].iloc[0])
    ref = table.loc[table["against"] == OWN, "reference"]
    ci = 100 * float(table["ci_level"].iloc[0])
    lines = [f"Grad norm around plastic events: {_what(lag, ref.iloc[0] if len(ref) else None)}; against a cell "
             "that makes the same kind of event (the yoked control) each cell at its own events, paired by seed; "
             f"against one that never does, the same epochs. {ci:g}% t-intervals over seeds, uncorrected:", "",
             f"| cell | vs | event | against | seeds | events | level +{lag} | effect | {ci:g}% CI | p |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in table.itertuples():
        p = "" if r.p_ttest != r.p_ttest else f"{r.p_ttest:.3g}"
        events = f"{r.events}" + (f" / {r.vs_events}" if r.against == OWN else "")
        lines.append(f"| {r.method} | {r.vs} | {r.event} | {r.against} | {r.seeds} | {events} | {_pct(r.level)} | "
                     f"{_pct(r.effect)} | {_interval(r.effect_ci_low, r.effect_ci_high)} | {p} |")
    return lines + [""]
