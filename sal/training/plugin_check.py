"""Every plug-in a set of runs uses, imported, called and checked on the CPU before any compute.

Above sal/training/data.py and sal/training/plugins.py: checking a loader loads its data, and loading data
reads a user's loader through plugins, so the check lives in neither.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import torch

from ..spec.config import ModelSpec, RunSpec, SpecError, is_import_path
from .data import load_data
from .plugins import build_plugin_model
from .splits import DataBundle

__all__ = ["check_plugins"]


def check_plugins(specs: Iterable[RunSpec]) -> None:
    """Import, call and check every plug-in the runs use, once per distinct configuration, on the CPU.

    Raises SpecError before any training: a builder is called on the data's shapes and must map two
    training samples to ``(2, num_classes)`` logits.
    """
    seen: set[str] = set()
    for spec in specs:
        if not (is_import_path(spec.model.name) or is_import_path(spec.data.name)):
            continue
        ident = json.dumps([spec.model.model_dump(mode="json"), spec.data.model_dump(mode="json")], sort_keys=True)
        if ident in seen:
            continue
        seen.add(ident)
        data = load_data(spec.data, "cpu")
        if is_import_path(spec.model.name):
            _check_model(spec.model, data)


def _check_model(spec: ModelSpec, data: DataBundle) -> None:
    with torch.random.fork_rng(devices=[]):  # the caller's RNG stays as it was
        model = build_plugin_model(spec, data.in_shape, data.num_classes)
        x, _ = data.train.head(2)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                out = model(x)
        except Exception as err:
            raise SpecError([f"model.name={spec.name!r} fails on two training samples of shape {tuple(x.shape)}: "
                             f"{type(err).__name__}: {err}; fix: make the network accept (N, *in_shape) "
                             f"inputs with in_shape={data.in_shape}"]) from None
        model.train(was_training)
    want = (len(x), data.num_classes)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != want:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise SpecError([f"model.name={spec.name!r} maps {tuple(x.shape)} inputs to {got}, not logits {want}; fix: "
                         f"end the network in a layer with num_classes={data.num_classes} outputs"])
