"""Figures of the loss landscape (matplotlib/seaborn; each returns a Figure, nothing reads or writes files):
a 2-D slice as contour and 3-D surface (paper Fig. 8), the weight trajectory in 3-D PCA with the
intervention epochs marked (Fig. 11), and sharpness per epoch with SAL's plastic events (Fig. 7).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..core.names import EVENT_DEFORM, EVENT_NOISE, EVENT_REVERT
from ..landscape.sharpness import Slice2D

__all__ = ["slice_figure", "trajectory_figure", "sharpness_figure", "EVENTS"]

SEED = 0  # seaborn's bootstrap CIs
# History columns that mark an intervention epoch (value 1), with how they are drawn
EVENTS = {EVENT_NOISE: ("o", "tab:orange"), EVENT_DEFORM: ("v", "tab:red"), EVENT_REVERT: ("^", "tab:green")}


def slice_figure(slc: Slice2D, *, title: str = "", log_scale: bool = False) -> plt.Figure:
    """Fig. 8: the loss on a filter-normalised plane around w, as contour (left) and surface (right)."""
    a, b = np.meshgrid(slc.alphas.numpy(), slc.betas.numpy(), indexing="ij")
    z = slc.losses.numpy()
    z = np.log10(np.maximum(z, 1e-12)) if log_scale else z
    label = "log10 loss" if log_scale else "loss"
    fig = plt.figure(figsize=(10, 4.2))
    ax = fig.add_subplot(1, 2, 1)
    filled = ax.contourf(a, b, z, levels=20, cmap="viridis")
    ax.contour(a, b, z, levels=20, colors="k", linewidths=0.3)
    ax.plot([0], [0], marker="*", color="white", markersize=10)
    fig.colorbar(filled, ax=ax, label=label)
    ax.set(xlabel="direction 1", ylabel="direction 2", title="contour")
    ax3 = fig.add_subplot(1, 2, 2, projection="3d")
    ax3.plot_surface(a, b, z, cmap="viridis", linewidth=0, antialiased=True)
    ax3.set(xlabel="direction 1", ylabel="direction 2", zlabel=label, title="surface")
    fig.suptitle(title or "Loss landscape around the final weights")
    fig.tight_layout()
    return fig


def trajectory_figure(coords: np.ndarray, *, epochs: Sequence[int] | None = None,
                      events: Mapping[str, Sequence[int]] | None = None,
                      explained: Sequence[float] | None = None, title: str = "") -> plt.Figure:
    """Fig. 11: the weight trajectory (T, 3) on its first three principal axes, coloured by epoch, with
    the epochs of each event (e.g. ``{"sal/deform": [17, 24]}``) marked."""
    coords = np.asarray(coords, float)
    epochs = np.arange(1, len(coords) + 1) if epochs is None else np.asarray(epochs)
    fig = plt.figure(figsize=(6.5, 5.5))
    ax = fig.add_subplot(projection="3d")
    ax.plot(*coords.T, color="grey", lw=1)
    points = ax.scatter(*coords.T, c=epochs, cmap="viridis", s=18)
    fig.colorbar(points, ax=ax, label="epoch", shrink=0.7)
    for name, marked in (events or {}).items():
        at = np.isin(epochs, np.asarray(list(marked)))
        if at.any():
            marker, color = EVENTS.get(name, ("x", "black"))
            ax.scatter(*coords[at].T, marker=marker, color=color, s=80, depthshade=False, label=name.split("/")[-1])
    ax.scatter(*coords[-1], marker="*", color="black", s=120, label="final")
    pc = [f"PC{i + 1}" + (f" ({explained[i]:.0%})" if explained is not None else "") for i in range(3)]
    ax.set(xlabel=pc[0], ylabel=pc[1], zlabel=pc[2], title=title or "Weight trajectory (PCA)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def sharpness_figure(history: pd.DataFrame, metric: str = "sharpness/trace", *, median_iqr: bool = False
                     ) -> plt.Figure:
    """Fig. 7: a sharpness measure per epoch, per method (mean and 95% CI over seeds, or with ``median_iqr``
    the median and interquartile band), with each seed's plastic events (noise, deformation, revert) marked
    at that seed's sharpness.

    ``history``: one row per (method, seed, epoch) with ``metric`` and optionally the event columns.
    """
    h = history.dropna(subset=[metric])
    if h.empty:
        raise ValueError(f"no {metric} values in the history; fix: enable analysis.sharpness in the runs")
    fig, ax = plt.subplots(figsize=(7.5, 4))
    band = dict(estimator="median", errorbar=("pi", 50)) if median_iqr else dict(errorbar=("ci", 95))
    sns.lineplot(data=h, x="epoch", y=metric, hue="method", seed=SEED, ax=ax, marker="o", markersize=3, **band)
    for col, (marker, color) in EVENTS.items():
        if col in h:
            ev = h[h[col] > 0]
            if len(ev):
                ax.scatter(ev["epoch"], ev[metric], marker=marker, color=color, s=45, zorder=3,
                           label=col.split("/")[1])
    if median_iqr and (h[metric] > 0).all():
        ax.set_yscale("log")  # a gradient norm changes by factors around events: equal ratios, equal heights
    shown = "median and IQR" if median_iqr else "mean and 95% CI"
    ax.set(ylabel=metric, title=f"{metric} per epoch ({shown} over seeds; events per seed)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
