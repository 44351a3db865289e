"""Which logged runs a report analyses: the current definition's runs, each (cell, seed) once, diverged
seeds kept with the worst score.

A run is its configuration (DESIGN.md): runs of a cell whose settings changed since (another
config_hash than the ablation's latest definition) are superseded and left out, and counted; runs of one
cell with several configurations and no definition to choose between them are an error, never a mix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from . import scoring
from .config import SpecError

__all__ = ["Selection", "select_runs", "tidy_scores", "TIDY_COLUMNS"]

TIDY_COLUMNS = ["dataset", "context", "method", "seed", "metric", "value", "status", "diverged", "run_id"]


@dataclass
class Selection:
    runs: pd.DataFrame  # one row per (cell, dataset, context, seed)
    superseded: int = 0  # runs of configurations the current definition no longer has
    duplicates: int = 0  # further runs of a (cell, seed) already counted (a worker killed after logging)
    hashes: dict[str, str] = field(default_factory=dict)  # cell|dataset|context -> the config_hash analysed


def _column(runs: pd.DataFrame, name: str, default) -> pd.Series:
    col = runs[name] if name in runs else pd.Series(default, index=runs.index)
    return col.fillna(default) if default is not None else col


def _where(runs: pd.DataFrame) -> pd.Series:
    cell = _column(runs, "tags.sal.cell", None).fillna(runs["tags.method"])
    return cell + "|" + runs["tags.dataset"] + "|" + _column(runs, "tags.sal.context", "")


def select_runs(runs: pd.DataFrame, definition: dict[str, str] | None) -> Selection:
    """Keep the runs of the current definition (cell|dataset|context -> config_hash), one per seed."""
    if runs.empty:
        return Selection(runs)
    runs = runs.assign(_where=_where(runs), _hash=_column(runs, "tags.config_hash", ""))
    superseded = 0
    if definition is not None:
        current = runs["_where"].map(definition) == runs["_hash"]
        superseded = int((~current).sum())
        runs = runs[current]
    else:
        mixed = runs.groupby("_where")["_hash"].unique()
        mixed = mixed[mixed.map(len) > 1]
        if len(mixed):
            raise SpecError([
                f"cell {where.split('|')[0]} ({where.split('|', 1)[1].rstrip('|')}) has runs of "
                f"{len(hashes)} configurations (config_hash {', '.join(sorted(hashes))}) and no ablation definition "
                "says which is current; fix: re-launch the ablation with `sal ablate FILE` (it records its "
                "definition), or select one with --filter \"tags.config_hash = '...'\""
                for where, hashes in mixed.items()])
    # A crashed run never hides a later or earlier result of the same (cell, seed); among the rest the
    # newest counts (a worker killed after logging leaves an older twin).
    usable = (_column(runs, "tags.sal.status", "finished") != "failed").astype(int)
    runs = runs.assign(_usable=usable).sort_values(["_usable", "start_time"] if "start_time" in runs else "_usable")
    seed_key = ["_where", "tags.seed"]
    duplicates = int(runs.duplicated(seed_key, keep="last").sum())
    runs = runs.drop_duplicates(seed_key, keep="last")
    hashes = dict(zip(runs["_where"], runs["_hash"]))
    return Selection(runs.drop(columns=["_where", "_hash", "_usable"]), superseded, duplicates, hashes)


def tidy_scores(runs: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """One row per (run, metric): dataset, context, method (the cell), seed, metric, value, status,
    diverged, run_id, plus the model/optimizer/resolution params.

    A diverged run scores the metric's worst value (sal.scoring); a crashed run or a metric a run does not
    have stays NaN, so pairing can say which seeds are missing.
    """
    if runs.empty:
        return pd.DataFrame(columns=TIDY_COLUMNS)
    status = _column(runs, "tags.sal.status", "finished")
    frame = pd.DataFrame({
        "dataset": runs["tags.dataset"], "context": _column(runs, "tags.sal.context", ""),
        "method": _column(runs, "tags.sal.cell", None).fillna(runs["tags.method"]),
        "seed": runs["tags.seed"].astype(int), "status": status, "diverged": status == scoring.DIVERGED,
        "run_id": runs["run_id"],
    })
    for col in ("params.model.name", "params.optim.name", "params.data.resolution", "params.method.name",
                "params.method.yoke"):
        frame[col.removeprefix("params.")] = runs.get(col)
    parts = []
    for metric in metrics:
        col = f"metrics.{metric}"
        raw = runs[col] if col in runs else pd.Series(math.nan, index=runs.index)
        values = [scoring.score(None if v != v else v, status=s, metric=metric) for v, s in zip(raw, status)]
        parts.append(frame.assign(metric=metric, value=values))
    return pd.concat(parts, ignore_index=True)
