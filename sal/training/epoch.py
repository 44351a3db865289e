"""What an epoch decides, once for a run trained alone (run.TrainingRun) and for seeds packed into one
model (packed.PackedRun): the row of means, divergence, whether a method may intervene, and whether the
last row has to be validated again.
"""

from __future__ import annotations

import math

from ..core.names import EVENT_METRICS
from ..methods import EpochStats
from ..spec.config import TrainSpec

DIVERGENCE_KEYS = ("train/loss", "val/loss")  # a non-finite value of either stops the run


def mean_row(epoch: int, sums: list[float], *, n_batches: int, batch_size: int, n_val: int) -> dict[str, float]:
    """The epoch's row from its sums ``[train loss, train correct, val loss, val correct]`` (the last two
    only with a validation split): loss per batch, accuracy per sample."""
    row = {"epoch": epoch, "train/loss": sums[0] / n_batches, "train/acc": sums[1] / (n_batches * batch_size)}
    if n_val:
        row["val/loss"], row["val/acc"] = sums[2] / n_val, sums[3] / n_val
    return row


def divergence(row: dict[str, float]) -> str | None:
    """Why the run must stop (a loss became NaN or infinite), or None."""
    bad = [k for k in DIVERGENCE_KEYS if k in row and not math.isfinite(row[k])]
    return f"{bad[0]} became {row[bad[0]]} at epoch {row['epoch']}; the run was stopped" if bad else None


def epoch_stats(row: dict[str, float], train: TrainSpec) -> EpochStats:
    """What a method sees between epochs. It may act at every epoch but the last, unless
    ``train.intervene_last_epoch``: an intervention after the last validation changes the weights the test
    metrics measure."""
    epoch = int(row["epoch"])
    return EpochStats(epoch, row["train/loss"], row["train/acc"], row.get("val/loss", math.nan),
                      row.get("val/acc", math.nan), act=epoch < train.epochs or train.intervene_last_epoch)


def acted(row: dict[str, float] | None) -> bool:
    """Whether a method changed the weights after this row's validation (any event metric is set)."""
    return row is not None and any(row.get(k) for k in EVENT_METRICS)


def validate_again(row: dict[str, float], train: TrainSpec, *, has_val: bool) -> bool:
    """The last row must describe the weights the test metrics will measure: validate once more when a
    method acted after the last epoch's validation."""
    return has_val and int(row["epoch"]) == train.epochs and acted(row)
