"""The report's figures (seaborn, every resampling seeded): per-seed strips, paired slopes, a forest
plot with the ROPE band, learning curves, and the paper's figures rebuilt from logged histories:
stress trace with interventions (Fig. 5), loss vs stress (Fig. 6), stress histogram (Fig. 9),
accuracy gap to the baseline per epoch (Fig. 10), plus a critical-difference diagram.

Each function takes frames and returns a matplotlib Figure; nothing here reads or writes files.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..core.names import EVENT_DEFORM, EVENT_NOISE, EVENT_REVERT, METRIC_STRESS
from ..methods import SAL_FAMILY as METHOD_SAL_FAMILY
from ..metrics.scoring import is_bounded_fraction, rope_for

__all__ = ["strip", "slopes", "forest", "learning_curves", "stress_trace", "loss_vs_stress", "stress_histogram",
           "accuracy_gap", "cd_diagram"]

SEED = 0  # seaborn's bootstrap CIs
SAL_FAMILY = METHOD_SAL_FAMILY  # methods driven by SAL's stress signal (declared by sal.methods.sal)


def _facet_label(df: pd.DataFrame) -> pd.Series:
    return df["dataset"] + np.where(df["context"] != "", " " + df["context"], "")


def strip(tidy: pd.DataFrame, summary: pd.DataFrame, metric: str, level: float = 0.95) -> plt.Figure:
    """Per-seed scores per method with the mean and its t-interval at ``level``."""
    df = tidy[tidy["metric"] == metric].dropna(subset=["value"]).assign(block=lambda d: _facet_label(d))
    blocks = sorted(df["block"].unique())
    fig, axes = plt.subplots(1, len(blocks), figsize=(max(5, 1.1 * df["method"].nunique()) * len(blocks), 4),
                             squeeze=False)
    for ax, block in zip(axes[0], blocks):
        part = df[df["block"] == block]
        order = sorted(part["method"].unique())
        # seaborn's stripplot jitters with numpy's global RNG; a private one keeps the figure reproducible
        jitter = np.random.default_rng(SEED).uniform(-0.15, 0.15, len(part))
        ax.scatter(part["method"].map({m: i for i, m in enumerate(order)}) + jitter, part["value"], alpha=0.6,
                   color=[sns.color_palette()[order.index(m) % 10] for m in part["method"]], s=22)
        ax.set_xticks(range(len(order)), order)
        s = summary[(summary["metric"] == metric) & (_facet_label(summary) == block)]
        s = s.drop_duplicates("method").set_index("method").loc[order]  # a cell's mean and CI, once
        ax.errorbar(range(len(order)), s["mean"], yerr=[s["mean"] - s["ci_low"], s["ci_high"] - s["mean"]],
                    fmt="D", color="black", capsize=4, label=f"mean, {level * 100:g}% CI")
        ax.set(title=block, xlabel="", ylabel=metric)
        ax.tick_params(axis="x", rotation=30)
    axes[0][0].legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig


def slopes(tidy: pd.DataFrame, metric: str, baseline: str) -> plt.Figure:
    """One line per seed from the baseline to each method: the pairing the tests use."""
    df = tidy[tidy["metric"] == metric].dropna(subset=["value"]).assign(block=lambda d: _facet_label(d))
    blocks = sorted(df["block"].unique())
    fig, axes = plt.subplots(1, len(blocks), figsize=(6 * len(blocks), 4), squeeze=False)
    for ax, block in zip(axes[0], blocks):
        part = df[df["block"] == block]
        order = [baseline] + sorted(m for m in part["method"].unique() if m != baseline)
        part = part.assign(x=part["method"].map({m: i for i, m in enumerate(order)}))
        sns.lineplot(data=part.sort_values("x"), x="x", y="value", units="seed", estimator=None, hue="seed",
                     palette="tab10", marker="o", ax=ax, legend=False, alpha=0.7)
        ax.set_xticks(range(len(order)), order, rotation=30)
        ax.set(title=f"{block}: paired by seed", xlabel="", ylabel=metric)
    fig.tight_layout()
    return fig


def forest(summary: pd.DataFrame, metric: str, rope: float, level: float = 0.95) -> plt.Figure:
    """Delta of each contrast with its t-interval at ``level``; the ROPE (an accuracy margin) as a band on
    fractions only. Zero-variance contrasts (no interval) show as a hollow point; an infinite delta (a
    diverged seed on a loss) as an arrow at the edge, labelled, never left out."""
    s = summary[(summary["metric"] == metric) & (summary["verdict"] != "reference")].copy()
    s["label"] = _facet_label(s) + " | " + s["method"] + " vs " + s["baseline"]
    s = s.iloc[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(s) + 1.5))
    if rope and is_bounded_fraction(metric):
        ax.axvspan(-rope, rope, color="tab:green", alpha=0.15, label=f"ROPE +-{rope:g}")
    ax.axvline(0, color="grey", lw=1)
    colors = s["verdict"].map({"better": "tab:blue", "worse": "tab:red", "equivalent": "tab:green"}).fillna("black")
    finite = [v for v in pd.concat([s["delta"], s["delta_ci_low"], s["delta_ci_high"]]) if np.isfinite(v)]
    edge = max([abs(v) for v in finite] + [rope_for(metric, rope), 1e-9]) * 1.3
    for y, (delta, low, high, color) in enumerate(zip(s["delta"], s["delta_ci_low"], s["delta_ci_high"], colors)):
        if np.isfinite(low) and np.isfinite(high):
            ax.errorbar(delta, y, xerr=[[delta - low], [high - delta]], fmt="o", color=color, capsize=3)
        elif np.isfinite(delta):
            ax.plot(delta, y, "o", mfc="none", color=color)
        elif np.isinf(delta):
            x = edge if delta > 0 else -edge
            ax.plot(x, y, ">" if delta > 0 else "<", color=color, ms=9)
            ax.text(x * 0.95, y + 0.15, f"delta {'+' if delta > 0 else '-'}inf: diverged seed (sign test)",
                    ha="right" if delta > 0 else "left", fontsize=7, color=color)
    if finite or s["delta"].map(np.isinf).any():
        ax.set_xlim(-edge * 1.1, edge * 1.1)
    ax.set_yticks(range(len(s)), s["label"])
    ax.set(xlabel=f"delta {metric} ({level * 100:g}% CI)", title="Paired differences")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def _facets(history: pd.DataFrame) -> tuple[plt.Figure, list, list[str]]:
    """One panel per data set (and context): curves of different data sets never share an axis."""
    history = history.assign(block=_facet_label(history))
    blocks = sorted(history["block"].unique())
    fig, axes = plt.subplots(1, len(blocks), figsize=(7 * len(blocks), 4), squeeze=False)
    return fig, list(zip(axes[0], blocks)), blocks


def learning_curves(history: pd.DataFrame, metric: str = "val/acc") -> plt.Figure:
    """Per-epoch metric per method, mean over seeds with a 95% bootstrap band, one panel per data set."""
    fig, panels, _ = _facets(history)
    labelled = history.assign(block=_facet_label(history))
    for ax, block in panels:
        sns.lineplot(data=labelled[labelled["block"] == block], x="epoch", y=metric, hue="method",
                     errorbar=("ci", 95), seed=SEED, ax=ax)
        ax.set(title=f"{block}: {metric}, mean and 95% CI over seeds")
    fig.tight_layout()
    return fig


def stress_trace(history: pd.DataFrame, method: str = "sal", seed: int | None = None) -> plt.Figure:
    """Fig. 5: the stress of one seed per epoch, with noise, deformation and revert epochs marked."""
    h = history[history["method"] == method]
    seed = int(h["seed"].min()) if seed is None else seed
    h = h[h["seed"] == seed].sort_values("epoch")
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(h["epoch"], h[METRIC_STRESS], color="black", lw=1.5, label="stress")
    for col, marker, color in ((EVENT_NOISE, "o", "tab:orange"), (EVENT_DEFORM, "v", "tab:red"),
                               (EVENT_REVERT, "^", "tab:green")):
        if col in h:
            ev = h[h[col] > 0]
            ax.scatter(ev["epoch"], ev[METRIC_STRESS], marker=marker, color=color, s=50, zorder=3,
                       label=col.split("/")[1])
    ax.set(xlabel="epoch", ylabel="stress S", title=f"Stress trace ({method}, seed {seed})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def loss_vs_stress(history: pd.DataFrame) -> plt.Figure:
    """Fig. 6: training loss against stress, every epoch of every seed."""
    fig, ax = plt.subplots(figsize=(6, 4))
    sns.scatterplot(data=history, x=METRIC_STRESS, y="train/loss", hue="method", alpha=0.5, ax=ax, s=18)
    ax.set(title="Training loss vs stress")
    fig.tight_layout()
    return fig


def stress_histogram(history: pd.DataFrame) -> plt.Figure:
    """Fig. 9: how often each stress level occurs."""
    fig, ax = plt.subplots(figsize=(6, 4))
    sns.histplot(data=history, x=METRIC_STRESS, hue="method", bins=20, element="step", ax=ax)
    ax.set(title="Stress histogram (all epochs, all seeds)")
    fig.tight_layout()
    return fig


def accuracy_gap(history: pd.DataFrame, baseline: str, metric: str = "val/acc") -> plt.Figure:
    """Fig. 10: per epoch, method minus baseline on the same seed of the same data set; mean with a 95%
    band, one panel per data set."""
    keys = ["dataset", "context", "seed", "epoch"]
    base = history[history["method"] == baseline][keys + [metric]].rename(columns={metric: "base"})
    gap = history[history["method"] != baseline].merge(base, on=keys)
    gap["gap"] = gap[metric] - gap["base"]
    fig, panels, _ = _facets(gap)
    gap = gap.assign(block=_facet_label(gap))
    for ax, block in panels:
        ax.axhline(0, color="grey", lw=1)
        sns.lineplot(data=gap[gap["block"] == block], x="epoch", y="gap", hue="method", errorbar=("ci", 95),
                     seed=SEED, ax=ax)
        ax.set(ylabel=f"{metric} - {baseline}", title=f"{block}: gap to {baseline} per epoch (paired by seed)")
    fig.tight_layout()
    return fig


def cd_diagram(avg_ranks: dict[str, float], cd: float) -> plt.Figure:
    """Average ranks on one axis (1 = best) with the Nemenyi critical difference as a bar."""
    items = sorted(avg_ranks.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(items) + 1.5))
    ax.scatter([r for _, r in items], range(len(items)), color="black")
    ax.set_yticks(range(len(items)), [m for m, _ in items])
    ax.errorbar(items[0][1] + cd / 2, -0.8, xerr=cd / 2, color="tab:red", capsize=4)
    ax.text(items[0][1] + cd / 2, -1.3, f"CD = {cd:.2f}", ha="center", color="tab:red")
    ax.set(xlabel="average rank (1 = best)", title="Critical difference (Nemenyi)")
    ax.set_ylim(-1.8, len(items))
    fig.tight_layout()
    return fig
