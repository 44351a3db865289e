"""``sal landscape NAME``: sharpness, slices, trajectories and connectivity of an ablation's finished runs,
measured on their saved final weights and logged back to those runs as ``landscape/*`` metrics (and a few
artifacts). The report's flatness section (sal.report.flatness_report) reads them from there.

Each run is rebuilt from its ``spec.yaml`` artifact and measured on the same fixed seeded training subset
the in-run analysis uses (``analysis.samples`` samples drawn by the run's seed), so runs with the same
seed are measured on the same data under every method. Barriers are taken within a cell (every pair of
its seeds) and between cells (the runs of one seed, which started from the same weights).
"""

from __future__ import annotations

import itertools
import logging
import math
import re
import time
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import pandas as pd
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from ..core.names import EVENT_METRICS
from ..landscape.connectivity import fourier_path, kernel_pca, linear_barrier
from ..landscape.sharpness import (
    Batches,
    adaptive_sharpness,
    flat_weights,
    hessian_trace,
    slice_2d,
    top_eigenvalue,
    trajectory_pca,
)
from ..report.flatness_report import flatness_tables  # the report's side, re-exported: one import for both
from ..spec.config import RunSpec, SpecError, validate_run
from ..spec.landscape_options import DEFAULT_WHAT, MEASURES, LandscapeOptions
from ..stats.selection import run_cell
from ..training.data import load_data
from ..training.models import build_model
from ..training.run import derive_seed, resolve_device
from ..training.run_analysis import fixed_batches
from ..training.splits import DataBundle

__all__ = ["MEASURES", "LandscapeOptions", "MeasuredRun", "check_options", "parse_what", "flatness_tables",
           "load_measured_runs", "measure_ablation"]

log = logging.getLogger(__name__)
@dataclass
class MeasuredRun:
    run_id: str
    cell: str
    seed: int
    spec: RunSpec
    model: nn.Module
    batches: Batches
    loss_fn: object
    metrics: dict[str, float] = field(default_factory=dict)


def check_options(opts: LandscapeOptions) -> None:
    """Impossible settings fail before anything is loaded or measured."""
    bad = []
    if opts.samples is not None and opts.samples < 1:
        bad.append(f"--samples={opts.samples} must be >= 1; fix: e.g. --samples 512")
    if opts.probes < 2:
        bad.append(f"--probes={opts.probes} must be >= 2 (a standard error needs two); fix: e.g. --probes 32")
    if opts.fourier_steps < 1:
        bad.append(f"--fourier-steps={opts.fourier_steps} must be >= 1; fix: e.g. --fourier-steps 100")
    if opts.slice_steps < 3 or opts.slice_steps % 2 == 0:
        bad.append(f"--slice-steps={opts.slice_steps} must be odd and >= 3 (w itself at the centre); fix: e.g. 21")
    if not (opts.device in ("auto", "cpu", "cuda", "mps") or opts.device.startswith("cuda:")):
        bad.append(f"--device={opts.device!r} is not a device; fix: use auto, cpu, cuda or cuda:N")
    if bad:
        raise SpecError(bad)


def parse_what(text: str | None) -> tuple[str, ...]:
    """``"trace,eig"`` -> ("trace", "eig"); unknown names fail with the known ones."""
    if not text:
        return DEFAULT_WHAT
    names = tuple(dict.fromkeys(w.strip() for w in text.split(",") if w.strip()))
    bad = [w for w in names if w not in MEASURES]
    if bad or not names:
        raise SpecError([f"--what={text!r}: unknown measure(s) {bad}; fix: choose from {','.join(MEASURES)}"])
    return names


def load_measured_runs(uri: str, runs: pd.DataFrame, opts: LandscapeOptions) -> list[MeasuredRun]:
    """The finished runs rebuilt with their saved final weights; SpecError if any has none saved."""
    from ..tracking.store import WEIGHTS_ARTIFACT, run_spec_yaml, run_tensors

    device = resolve_device(opts.device)
    finished = runs[runs["status"] == "FINISHED"]
    if finished.empty:
        raise SpecError(["the ablation has no finished runs to measure; fix: run `sal ablate` to completion first"])
    data_cache: dict[str, DataBundle] = {}
    out, missing = [], []
    for _, run in finished.sort_values(["tags.seed"]).iterrows():
        state = run_tensors(uri, run["run_id"], WEIGHTS_ARTIFACT)
        if state is None:
            missing.append(f"{run_cell(run)} seed {run['tags.seed']} ({run['run_id']})")
            continue
        spec = validate_run(yaml.safe_load(run_spec_yaml(uri, run["run_id"]) or "{}"))
        key = spec.data.model_dump_json()
        if key not in data_cache:
            data_cache[key] = load_data(spec.data, device).to(device)
        data = data_cache[key]
        model = build_model(spec.model, data.in_shape, data.num_classes)
        model.load_state_dict(state)
        model.to(device).eval()
        samples = opts.samples or spec.analysis.samples
        batches = fixed_batches(data.train, samples=samples, seed=derive_seed(spec.seed, "analysis-data"))
        smoothing = spec.train.label_smoothing
        loss_fn = lambda logits, y, s=smoothing: F.cross_entropy(logits.float(), y, label_smoothing=s)  # noqa: E731
        out.append(MeasuredRun(run["run_id"], run_cell(run), int(run["tags.seed"]), spec, model, batches, loss_fn))
    if missing:
        shown = "; ".join(missing[:5]) + (f"; and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise SpecError([f"{len(missing)} finished run(s) have no saved weights ({WEIGHTS_ARTIFACT}): {shown}; "
                         "fix: set analysis.save_weights: true in the ablation's base spec (or --set "
                         "analysis.save_weights=true) and run `sal ablate` again"])
    return out


def _generator(run: MeasuredRun, measure: str) -> torch.Generator:
    device = run.batches[0][0].device
    return torch.Generator(device).manual_seed(derive_seed(derive_seed(run.spec.seed, "analysis"), f"{measure}:final"))


def _metric_name(cell: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\- ]", "_", cell)


def _sharpness(run: MeasuredRun, what: tuple[str, ...], opts: LandscapeOptions) -> None:
    m = run.metrics
    for name in ("trace", "eig", "adaptive"):
        if name not in what:
            continue
        t0 = time.perf_counter()
        g = _generator(run, name)
        if name == "trace":
            est = hessian_trace(run.model, run.loss_fn, run.batches, probes=opts.probes, generator=g)
            m["landscape/trace"], m["landscape/trace_se"] = est
        elif name == "eig":
            m["landscape/eig"] = top_eigenvalue(run.model, run.loss_fn, run.batches, iters=opts.eig_iters,
                                                tol=opts.eig_tol, generator=g).value
        else:
            est = adaptive_sharpness(run.model, run.loss_fn, run.batches, rho=opts.rho,
                                     samples=opts.adaptive_samples, generator=g)
            m["landscape/adaptive"], m["landscape/adaptive_se"] = est
        m[f"time/landscape_{name}_s"] = time.perf_counter() - t0


def _pairs(measured: list[MeasuredRun]) -> list[tuple[str, MeasuredRun, MeasuredRun]]:
    """("within", a, b) for every pair of seeds of a cell; ("between", a, b) for each seed and pair of cells."""
    by_cell: dict[str, list[MeasuredRun]] = {}
    for r in measured:
        by_cell.setdefault(r.cell, []).append(r)
    pairs = [("within", a, b) for runs in by_cell.values() for a, b in itertools.combinations(runs, 2)]
    by_seed: dict[int, list[MeasuredRun]] = {}
    for r in measured:
        by_seed.setdefault(r.seed, []).append(r)
    pairs += [("between", a, b) for runs in by_seed.values() for a, b in itertools.combinations(runs, 2)]
    return pairs


def _barriers(measured: list[MeasuredRun], what: tuple[str, ...], opts: LandscapeOptions) -> list[dict]:
    """One row per pair and path kind; each run gets the mean within-cell barrier and one per other cell."""
    rows = []
    for kind, a, b in _pairs(measured):
        for path in ("barrier", "fourier"):
            if path not in what:
                continue
            t0 = time.perf_counter()
            if path == "barrier":
                barrier = linear_barrier(a.model, b.model, a.loss_fn, a.batches, points=opts.points).barrier
            else:
                barrier = fourier_path(a.model, b.model, a.loss_fn, a.batches, points=opts.points,
                                       modes=opts.fourier_modes, train_points=opts.fourier_points,
                                       steps=opts.fourier_steps).path.barrier
            log.info("%s barrier (%s) %s seed %d - %s seed %d: %.4g in %.1f s", path, kind, a.cell, a.seed, b.cell,
                     b.seed, barrier, time.perf_counter() - t0)
            rows.append({"kind": kind, "path": path, "cell_a": a.cell, "cell_b": b.cell, "seed_a": a.seed,
                         "seed_b": b.seed, "barrier": barrier, "seconds": time.perf_counter() - t0,
                         "run_a": a.run_id, "run_b": b.run_id})
    frame = pd.DataFrame(rows)
    for r in measured:
        if frame.empty:
            break
        mine = frame[(frame["run_a"] == r.run_id) | (frame["run_b"] == r.run_id)]
        for path, part in mine.groupby("path"):
            within = part[part["kind"] == "within"]
            if len(within):
                r.metrics[f"landscape/{path}_within"] = float(within["barrier"].mean())
            for _, row in part[part["kind"] == "between"].iterrows():
                other = row["cell_b"] if row["run_a"] == r.run_id else row["cell_a"]
                r.metrics[f"landscape/{path}_vs/{_metric_name(other)}"] = float(row["barrier"])
            r.metrics[f"time/landscape_{path}_s"] = float(part["seconds"].mean())
    return rows


def _kpca(measured: list[MeasuredRun]) -> None:
    groups: dict[int, list[MeasuredRun]] = {}
    for r in measured:  # only models of one size can share a kernel PCA
        groups.setdefault(sum(p.numel() for p in r.model.parameters() if p.requires_grad), []).append(r)
    for runs in groups.values():
        if len(runs) < 3:
            continue
        t0 = time.perf_counter()
        coords = kernel_pca(torch.stack([flat_weights(r.model).cpu() for r in runs]), components=2)
        seconds = (time.perf_counter() - t0) / len(runs)
        for r, xy in zip(runs, coords):
            r.metrics.update({f"landscape/kpca{i + 1}": float(v) for i, v in enumerate(xy)})
            r.metrics["time/landscape_kpca_s"] = seconds


def measure_ablation(uri: str, name: str, opts: LandscapeOptions, *, filter_string: str = "") -> dict:
    """Measure the ablation's runs and log the results back to them. Returns {"runs": frame of the logged
    metrics, "pairs": frame of the barriers, "figures": {(run_id, name): Figure}}."""
    from ..report import landscape_plots
    from ..report.build import load_runs
    from ..tracking.store import TRAJECTORY_ARTIFACT, log_run_figure, log_run_metrics, run_tensors

    check_options(opts)
    runs = load_runs(uri, name, filter_string=filter_string)
    measured = load_measured_runs(uri, runs, opts)
    figures = {}
    for r in measured:
        _sharpness(r, opts.what, opts)
        log.info("%s seed %d: %s", r.cell, r.seed, ", ".join(f"{k}={v:.4g}" for k, v in r.metrics.items()))
        if "slice2d" in opts.what:
            t0 = time.perf_counter()
            slc = slice_2d(r.model, r.loss_fn, r.batches, steps=opts.slice_steps, span=opts.slice_span,
                           generator=_generator(r, "slice2d"))
            r.metrics["landscape/slice_rise"] = float((slc.losses - slc.losses[len(slc.alphas) // 2,
                                                                                len(slc.betas) // 2]).mean())
            r.metrics["time/landscape_slice2d_s"] = time.perf_counter() - t0
            figures[(r.run_id, "slice2d.png")] = landscape_plots.slice_figure(
                slc, title=f"{r.cell}, seed {r.seed}: loss around the final weights")
        if "trajectory" in opts.what:
            traj = run_tensors(uri, r.run_id, TRAJECTORY_ARTIFACT)
            if traj is None:
                log.warning("run %s kept no trajectory (enable analysis.trajectory); skipped", r.run_id)
            else:
                coords, ratio = trajectory_pca(traj["weights"])
                r.metrics["landscape/trajectory_pc1"] = float(ratio[0])
                figures[(r.run_id, "trajectory.png")] = landscape_plots.trajectory_figure(
                    coords.numpy(), epochs=traj["epochs"].tolist(), explained=ratio.tolist(),
                    events=_events(uri, r.run_id), title=f"{r.cell}, seed {r.seed}: weight trajectory")
    pairs = _barriers(measured, opts.what, opts)
    if "kpca" in opts.what:
        _kpca(measured)
    for r in measured:
        finite = {k: v for k, v in r.metrics.items() if math.isfinite(v)}
        if finite:
            log_run_metrics(uri, r.run_id, finite, step=r.spec.train.epochs)
    for (run_id, fname), fig in figures.items():
        log_run_figure(uri, run_id, fig, fname)
        plt.close(fig)
    frame = pd.DataFrame([{"run_id": r.run_id, "cell": r.cell, "seed": r.seed, **r.metrics} for r in measured])
    return {"runs": frame, "pairs": pd.DataFrame(pairs), "figures": sorted(figures)}


def _events(uri: str, run_id: str) -> dict[str, list[int]]:
    from ..tracking.store import run_history

    try:
        h = run_history(uri, run_id)
    except Exception:  # noqa: BLE001 - no history costs the event marks, not the figure
        return {}
    return {c: h.loc[h[c] > 0, "epoch"].astype(int).tolist() for c in EVENT_METRICS
            if c in h}
