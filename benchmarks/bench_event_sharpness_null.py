"""Benchmark: the level of the grad-norm-around-events contrasts (sal.report.event_sharpness) under the null.

The null: plastic events do nothing to the gradient norm, but SAL's fire on the run's own state. Each
replication is one ablation of ``seeds`` seeds and ``epochs`` epochs with three cells of one seed sharing
what a seed shares (initialisation, data order): adam (never intervenes), sal and yoked. Per cell, the log
grad norm is a falling trend, a per-seed offset, and fluctuations from epoch to epoch: an AR(1) process
(autocorrelation ``rho``) of which ``shared`` of the variance is common to the seed's cells. SAL's event
fires after the warm-up when the series stagnates (this epoch's grad norm is no new low against the last
three epochs), at least ``gap`` epochs after its previous one; the yoked cell makes as many events at epochs
drawn at random after the warm-up (sal/sweeps/yoke.py's count mode). Nothing is added at any event.

Three procedures, each a t-test over seeds at nominal 5%:

- old: the change log(g_e / g_(e-1)) at SAL's events minus Adam's change over the same epochs (what the
  report published before: it found SAL's events raise the grad norm);
- vs adam: sal.report.event_sharpness's contrast of sal against Adam, ``lag`` epochs after SAL's events;
- vs yoked: its contrast of sal's events against the yoked cell's own events, each against Adam.

The rejection rate of a valid procedure is near 5%.

    python benchmarks/bench_event_sharpness_null.py              # 1,000 replications, rho 0.5, lag 3
    python benchmarks/bench_event_sharpness_null.py --full       # 4,000 replications, rho 0-0.7, lag 1-5
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
from scipy import stats

from sal.core.names import EVENT_DEFORM
from sal.report.event_sharpness import GRAD_NORM, LAG, event_contrasts
from sal.spec.analysis import Contrast, Plan

CELLS = ("adam", "sal", "yoked")
PLAN = Plan([Contrast("baselines", "sal", "adam"), Contrast("controls", "sal", "yoked")], ["test/acc"],
            treatment="sal")


def _ar1(rng: np.random.Generator, shape: tuple[int, ...], rho: float) -> np.ndarray:
    """Stationary AR(1) series of unit variance along the last axis."""
    e = rng.standard_normal(shape)
    x = np.empty(shape)
    x[..., 0] = e[..., 0]
    scale = np.sqrt(1 - rho ** 2)
    for t in range(1, shape[-1]):
        x[..., t] = rho * x[..., t - 1] + scale * e[..., t]
    return x


def simulate(reps: int, *, seeds: int = 10, epochs: int = 30, warmup: int = 5, rho: float = 0.5, sd: float = 0.25,
             shared: float = 0.5, gap: int = 3, random_state: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """log grad norms (reps, seeds, cells, epochs) and event flags of the same shape (cells in CELLS order)."""
    rng = np.random.default_rng(random_state)
    trend = -0.8 * np.log(np.arange(1, epochs + 1))
    noise = sd * (np.sqrt(shared) * _ar1(rng, (reps, seeds, 1, epochs), rho)
                  + np.sqrt(1 - shared) * _ar1(rng, (reps, seeds, len(CELLS), epochs), rho))
    logs = trend + rng.normal(0, 0.3, (reps, seeds, 1, 1)) + noise
    events = np.zeros(logs.shape, bool)
    sal = logs[:, :, 1]
    last = np.full((reps, seeds), -epochs)
    for t in range(max(warmup, 3), epochs):  # index t is epoch t + 1
        fire = (sal[..., t] >= sal[..., t - 3:t].min(-1)) & (t - last >= gap)
        events[:, :, 1, t] = fire
        last = np.where(fire, t, last)
    # the yoked cell: as many events as SAL's run of the seed, at random epochs after the warm-up
    keys = rng.random((reps, seeds, epochs - warmup))
    rank = keys.argsort(-1).argsort(-1)
    events[:, :, 2, warmup:] = rank < events[:, :, 1].sum(-1, keepdims=True)
    return logs, events


def history(logs: np.ndarray, events: np.ndarray) -> pd.DataFrame:
    """The simulation as the report's history frame: one data set per replication."""
    reps, seeds, cells, epochs = logs.shape
    r, s, c, t = (a.ravel() for a in np.indices(logs.shape))
    return pd.DataFrame({"dataset": r.astype(str), "context": "", "seed": s + 1, "method": np.array(CELLS)[c],
                         "epoch": t + 1, GRAD_NORM: np.exp(logs.ravel()), EVENT_DEFORM: events.ravel().astype(float)})


def old_p(logs: np.ndarray, events: np.ndarray) -> np.ndarray:
    """Per replication, the p of the old contrast: SAL's change from the epoch before each event to the event's
    epoch, averaged per seed, minus Adam's change over the same epochs; paired t-test over seeds."""
    change = np.diff(logs, axis=-1)  # change[..., t - 1] = log g_(t+1) - log g_t: the change into index t
    at = events[:, :, 1, 1:]
    n = at.sum(-1)
    d = np.where(at, change[:, :, 1] - change[:, :, 0], 0).sum(-1) / np.maximum(n, 1)
    d = np.where(n > 0, d, np.nan)
    return stats.ttest_1samp(d, 0.0, axis=1, nan_policy="omit").pvalue


def new_p(logs: np.ndarray, events: np.ndarray, *, lag: int = LAG) -> pd.DataFrame:
    """Per replication and contrast (vs adam, vs yoked), sal.report.event_sharpness's p and effect."""
    table = event_contrasts(history(logs, events), PLAN, level=0.95, lag=lag)
    return table.pivot(index="dataset", columns="vs", values="p_ttest")


def rates(reps: int, *, rho: float = 0.5, lag: int = LAG, alpha: float = 0.05, random_state: int = 0) -> dict:
    logs, events = simulate(reps, rho=rho, random_state=random_state)
    p_new = new_p(logs, events, lag=lag)
    return {"reps": reps, "rho": rho, "lag": lag, "sal events per seed": float(events[:, :, 1].sum(-1).mean()),
            "old": float(np.mean(old_p(logs, events) < alpha)), "vs adam": float(np.mean(p_new["adam"] < alpha)),
            "vs yoked": float(np.mean(p_new["yoked"] < alpha))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--full", action="store_true", help="4,000 replications over a grid of rho and lag")
    p.add_argument("--reps", type=int)
    a = p.parse_args()
    grid = [(rho, lag) for rho in (0.0, 0.3, 0.5, 0.7) for lag in (1, 3, 5)] if a.full else [(0.5, LAG)]
    reps = a.reps or (4000 if a.full else 1000)
    print("rejection rate at nominal 5% under the null (events do nothing, SAL's fire on the run's state)")
    for rho, lag in grid:
        print(json.dumps(rates(reps, rho=rho, lag=lag)))


if __name__ == "__main__":
    main()
