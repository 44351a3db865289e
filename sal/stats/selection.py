"""Which logged runs a report analyses: the current definition's results, each (cell, seed) once, diverged
seeds kept with the worst score.

Results are FINISHED runs, plus diverged runs scored as diverged (docs/statistics.md, "Which runs are
results"). A killed, still-running, failed or pruned run is never a score, however many epochs it logged:
it is left out, and counted and listed by the report.

A run is its configuration (docs/design.md): runs of a cell whose settings changed since (another
config_hash than the ablation's latest definition) are superseded and left out, and counted; runs of one
cell with several configurations and no definition to choose between them are an error, never a mix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from ..core.gridkey import Place, place_column
from ..core.names import STATUS_FINISHED, TAG_CELL, TAG_CONTEXT, TAG_STATUS
from ..metrics import scoring
from ..spec.config import SpecError

__all__ = ["cell_of", "run_cell", "Selection", "select_runs", "run_state", "tidy_scores", "TIDY_COLUMNS"]

TIDY_COLUMNS = ["dataset", "context", "method", "seed", "metric", "value", "status", "diverged", "run_id"]


@dataclass
class Selection:
    runs: pd.DataFrame  # one row per (cell, dataset, context, seed)
    superseded: int = 0  # runs of configurations the current definition no longer has
    duplicates: int = 0  # further runs of a (cell, seed) already counted (a worker killed after logging)
    hashes: dict[str, str] = field(default_factory=dict)  # cell|dataset|context -> the config_hash analysed
    left_out: list[tuple[str, int, str]] = field(default_factory=list)  # (cell, seed, status): not results


def _column(runs: pd.DataFrame, name: str, default) -> pd.Series:
    col = runs[name] if name in runs else pd.Series(default, index=runs.index)
    return col.fillna(default) if default is not None else col


def cell_of(runs: pd.DataFrame) -> pd.Series:
    """The cell each run belongs to: its ``sal.cell`` tag, else its method (a run of ``sal train`` has no cell).
    The one place this is decided; every table of a report groups runs by it."""
    cell = _column(runs, f"tags.{TAG_CELL}", None)
    return cell.where(cell.notna() & (cell != ""), runs["tags.method"]).astype(str)


def run_cell(run: pd.Series) -> str:
    """``cell_of`` for one run (a row of runs_frame)."""
    cell = run.get(f"tags.{TAG_CELL}")
    return str(cell) if isinstance(cell, str) and cell else str(run["tags.method"])


def _where(runs: pd.DataFrame) -> pd.Series:
    return place_column(cell_of(runs), runs["tags.dataset"], _column(runs, f"tags.{TAG_CONTEXT}", ""))


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
                f"cell {Place.parse(where).described()} has runs of "
                f"{len(hashes)} configurations (config_hash {', '.join(sorted(hashes))}) and no ablation definition "
                "says which is current; fix: re-launch the ablation with `sal ablate FILE` (it records its "
                "definition), or select one with --filter \"tags.config_hash = '...'\""
                for where, hashes in mixed.items()])
    state = run_state(runs)
    result = state.isin(scoring.RESULT_STATUSES)
    # Every run that is not a result (killed, running, failed) is listed, even beside a later result of its
    # (cell, seed): a reader sees what the numbers do not contain.
    left = runs[~result].assign(_state=state[~result])
    left_out = sorted({(Place.parse(w).cell, int(s), st) for w, s, st in zip(left["_where"], left["tags.seed"],
                                                                               left["_state"])})
    # Among the results of one (cell, seed) the newest counts (a worker killed after logging leaves a twin).
    runs = runs[result]
    runs = runs.sort_values("start_time") if "start_time" in runs else runs
    seed_key = ["_where", "tags.seed"]
    duplicates = int(runs.duplicated(seed_key, keep="last").sum())
    runs = runs.drop_duplicates(seed_key, keep="last")
    hashes = dict(zip(runs["_where"], runs["_hash"]))
    return Selection(runs.drop(columns=["_where", "_hash"]), superseded, duplicates, hashes, left_out)


def run_state(runs: pd.DataFrame) -> pd.Series:
    """Each run's state: its ``sal.status`` tag (finished, diverged, killed, running, failed, pruned), or for a
    run without one (logged by hand or by an older sal) its MLflow status in lower case. A run MLflow still
    shows RUNNING or KILLED is never finished, whatever its tag says (a killed worker leaves its tag)."""
    mlflow_status = _column(runs, "status", "FINISHED").astype(str).str.lower()
    state = _column(runs, f"tags.{TAG_STATUS}", None).fillna(mlflow_status).astype(str)
    return state.where(~mlflow_status.isin(["running", "killed"]) | (state != STATUS_FINISHED), mlflow_status)


def tidy_scores(runs: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """One row per (run, metric): dataset, context, method (the cell), seed, metric, value, status,
    diverged, run_id, plus the model/optimizer/resolution params.

    A diverged run scores the metric's worst value (sal.metrics.scoring); a crashed run or a metric a run does not
    have stays NaN, so pairing can say which seeds are missing.
    """
    if runs.empty:
        return pd.DataFrame(columns=TIDY_COLUMNS)
    status = _column(runs, f"tags.{TAG_STATUS}", STATUS_FINISHED)
    frame = pd.DataFrame({
        "dataset": runs["tags.dataset"], "context": _column(runs, f"tags.{TAG_CONTEXT}", ""),
        "method": cell_of(runs),
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
