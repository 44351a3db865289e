"""The keys of an ablation grid, built and read in one place.

A cell's *place* is ``cell|dataset|context``; its *group* (one configuration there, one parent run in
MLflow) adds the configuration's hash; a queue *key* adds the seed: ``cell|dataset|context|hash|seed=N``.
Optuna queues and MLflow experiment records already store these strings, so the format never changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

__all__ = ["Place", "GridKey", "place_column"]

_SEP, _SEED = "|", "|seed="


@dataclass(frozen=True)
class Place:
    cell: str
    dataset: str
    context: str = ""

    def __str__(self) -> str:
        return _SEP.join((self.cell, self.dataset, self.context))

    @classmethod
    def parse(cls, text: str) -> Place:
        cell, dataset, context = text.split(_SEP, 2)
        return cls(cell, dataset, context)

    def described(self) -> str:
        """``cell (dataset, context)`` for messages."""
        return f"{self.cell} ({', '.join(p for p in (self.dataset, self.context) if p)})"


@dataclass(frozen=True)
class GridKey:
    place: Place
    config_hash: str
    seed: int

    @property
    def group(self) -> str:
        return f"{self.place}{_SEP}{self.config_hash}"

    def __str__(self) -> str:
        return f"{self.group}{_SEED}{self.seed}"

    @staticmethod
    def group_of(key: str) -> str:
        """The group part of a stored key (what the seeds of one configuration share)."""
        return key.rpartition(_SEED)[0]

    @classmethod
    def parse(cls, key: str) -> GridKey:
        group, _, seed = key.rpartition(_SEED)
        place, _, config_hash = group.rpartition(_SEP)
        return cls(Place.parse(place), config_hash, int(seed))


def place_column(cell: pd.Series, dataset: pd.Series, context: pd.Series) -> pd.Series:
    """``str(Place(...))`` for every run of a frame at once."""
    return cell + _SEP + dataset + _SEP + context
