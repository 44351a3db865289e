"""A researcher's own model and data behind ``module:function`` names, checked before any compute.

``model.name: mypkg.models:build`` and ``data.name: mypkg.data:load`` name functions importable from the
working directory or an installed package; ``model.args`` / ``data.args`` are passed to them as a dict.

Model builder contract::

    def build(args: dict, in_shape: tuple[int, ...], num_classes: int) -> torch.nn.Module

``in_shape`` is one sample's shape (e.g. ``(3, 32, 32)`` or ``(20,)``); the module maps a batch
``(N, *in_shape)`` to logits ``(N, num_classes)``. sal seeds the global RNG before calling it, so runs with
one seed start from the same weights under every method. SAL deforms the last three modules that own
trainable parameters: end the network in its classifier head.

Data loader contract::

    def load(args: dict, split_seed: int) -> dict   # {"train": (x, y), "val": (x, y), "test": (x, y)}

``x``: float tensors ``(N, *in_shape)``; ``y``: integer class labels ``(N,)`` in ``[0, num_classes)``.
``"train"`` is required; a missing ``"test"`` is held out of train with ``data.test_fraction``, a missing
``"val"`` with ``data.val_fraction`` (both drawn with ``split_seed``). An optional ``"num_classes": int``
entry, else the largest label + 1. Tensors may be on any device; sal keeps them whole on the run's device
(docs/design.md). ``data.normalize`` standardises features with training statistics as for built-in sets;
``data.train_subset`` caps the training samples.

Data that does not fit on the device: any split may instead be a map-style ``torch.utils.data.Dataset``
whose ``ds[i]`` is ``(x, y)``, x a float tensor of one sample's shape and y an int class index. It is
streamed (sal/training/streaming.py): each pass reads the batches it needs through a DataLoader (``data.workers``
processes, pinned memory on CUDA), in the order the tensor path would slice, so a Dataset over the same
tensors gives the same run. Held-out splits and ``data.train_subset`` are ``Subset``s of it; normalisation
uses the mean and std of at most 10,000 training samples. ``"num_classes"`` is then required (a streamed
set is never scanned), and seeds of a streamed configuration train one at a time (never packed).

Everything is checked by ``check_plugins`` (sal/training/plugin_check.py) before the first run: the
import, the function, its signature, what it returns (an ``nn.Module`` that maps two training samples to
``(2, num_classes)`` logits; tensors of matching lengths, dtypes and shapes; of a Dataset its length and
first item, and the labels of every batch as it is read). Each problem is a SpecError naming the key, the value and the
fix. The Python API may pass callables instead (``sal.train(spec, model=fn)``);
they are registered under ``module:qualname`` for this process only.
"""

from __future__ import annotations

import importlib
import inspect
import json
import numbers
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from ..spec.config import DataSpec, ModelSpec, SpecError
from .splits import AnySplit, DataBundle, Split, split_off, standardize
from .streaming import StreamedSplit

__all__ = ["resolve", "register", "build_plugin_model", "load_plugin_data", "ensure_cwd_importable"]

_CONTRACTS = {
    "model": ("build(args: dict, in_shape: tuple, num_classes: int) -> nn.Module", 3),
    "data": ('load(args: dict, split_seed: int) -> {"train": (x, y) or a Dataset, "val": ..., "test": ...}', 2),
}
_SPLITS = ("train", "val", "test")
_REGISTERED: dict[str, Callable] = {}  # callables handed to the Python API, by module:qualname
_DATA_CACHE: dict[tuple[str, int], DataBundle] = {}  # (data spec, loader id) -> CPU bundle
_DATA_CACHE_SIZE = 4


def ensure_cwd_importable() -> None:
    """Make the working directory importable, as ``python -m`` does, but after installed packages.

    The ``sal`` console script does not put it on sys.path; spawned workers inherit the parent's
    sys.path and working directory, so they import the same modules.
    """
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.append(cwd)
    importlib.invalidate_caches()  # a module written since the last import (or another cwd) is found


def register(fn: Callable, *, section: str) -> str:
    """Name a callable handed to the Python API; ``resolve`` finds it under that name in this process."""
    if not callable(fn):
        raise SpecError([f"{section}={fn!r} is not callable; fix: pass a function with the contract "
                         f"{_CONTRACTS[section][0]}"])
    name = f"{getattr(fn, '__module__', None) or 'api'}:{getattr(fn, '__qualname__', type(fn).__name__)}"
    _REGISTERED[name] = fn
    return name


def resolve(name: str, *, section: str) -> Callable:
    """The function behind ``section.name`` (model or data), with its signature checked."""
    key = f"{section}.name={name!r}"
    contract, n_args = _CONTRACTS[section]
    fn = _REGISTERED.get(name)
    if fn is None:
        module_name, _, attr_path = name.partition(":")
        ensure_cwd_importable()
        try:
            obj: Any = importlib.import_module(module_name)
        except Exception as err:  # a user's module may fail in any way while it imports
            missing = isinstance(err, ModuleNotFoundError) and err.name == module_name.split(".")[0]
            why = "is not found" if missing else f"fails to import ({type(err).__name__}: {err})"
            raise SpecError([f"{key}: module {module_name!r} {why} (working directory {os.getcwd()}); fix: run sal "
                             f"from the folder that holds {module_name.split('.')[0]}/, install the package, or "
                             "correct the path"]) from None
        for attr in attr_path.split("."):
            if not hasattr(obj, attr):
                raise SpecError([f"{key}: {module_name!r} has no {attr_path!r}; fix: define {contract} there or "
                                 "correct the name after the colon"])
            obj = getattr(obj, attr)
        fn = obj
    if not callable(fn):
        raise SpecError([f"{key} is a {type(fn).__name__}, not a function; fix: point it at {contract}"])
    try:
        inspect.signature(fn).bind(*([None] * n_args))
    except TypeError as err:
        raise SpecError([f"{key}: the function cannot take {n_args} positional arguments ({err}); fix: give it "
                         f"the signature {contract}"]) from None
    except ValueError:  # builtins without a signature: their call will tell
        pass
    return fn


# ---------------------------------------------------------------- models


def build_plugin_model(spec: ModelSpec, in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    fn = resolve(spec.name, section="model")
    try:
        model = fn(dict(spec.args), tuple(in_shape), num_classes)
    except SpecError:
        raise
    except Exception as err:
        raise SpecError([f"model.name={spec.name!r} raised {type(err).__name__}: {err} with model.args={spec.args!r}, "
                         f"in_shape={tuple(in_shape)}, num_classes={num_classes}; fix: correct the builder or "
                         "model.args"]) from None
    if not isinstance(model, nn.Module):
        raise SpecError([f"model.name={spec.name!r} returned a {type(model).__name__}, not a torch.nn.Module; fix: "
                         "return the network (an nn.Module) from the builder"])
    return model


# ---------------------------------------------------------------- data


def load_plugin_data(spec: DataSpec) -> DataBundle:
    """The loader's splits as a checked CPU DataBundle (cached: a study's trials load once)."""
    fn = resolve(spec.name, section="data")
    cache_key = (json.dumps(spec.model_dump(mode="json"), sort_keys=True), id(fn))
    if cache_key not in _DATA_CACHE:
        if len(_DATA_CACHE) >= _DATA_CACHE_SIZE:
            _DATA_CACHE.pop(next(iter(_DATA_CACHE)))
        _DATA_CACHE[cache_key] = _prepare(spec, fn)
    return _DATA_CACHE[cache_key]


def _prepare(spec: DataSpec, fn: Callable) -> DataBundle:
    key = f"data.name={spec.name!r}"
    try:
        out = fn(dict(spec.args), spec.split_seed)
    except SpecError:
        raise
    except Exception as err:
        raise SpecError([f"{key} raised {type(err).__name__}: {err} with data.args={spec.args!r}; fix: correct the "
                         "loader or data.args"]) from None
    if not isinstance(out, Mapping) or "train" not in out:
        what = f"a {type(out).__name__}" + (" without 'train'" if isinstance(out, Mapping) else "")
        raise SpecError([f"{key} returned {what}; fix: return {{'train': (x, y), 'val': (x, y), 'test': (x, y)}} "
                         "(val and test optional)"])
    unknown = sorted(set(out) - {*_SPLITS, "num_classes"})
    if unknown:
        raise SpecError([f"{key} returned unknown entries {unknown}; fix: return only train, val, test (each an "
                         "(x, y) pair of tensors or a Dataset) and num_classes"])
    given = _given_classes(key, out)
    splits = {name: _checked_dataset(key, name, out[name], given, spec.workers)
              if isinstance(out[name], torch.utils.data.Dataset) else _checkedsplit_off(key, name, out[name])
              for name in _SPLITS if out.get(name) is not None}
    _check_shapes(key, splits)
    train = splits["train"]
    g = torch.Generator().manual_seed(spec.split_seed)
    if "test" not in splits:
        keep, held = split_off(len(train), spec.test_fraction, g)
        splits["test"], train = train.subset(held), train.subset(keep)
    if "val" not in splits:
        keep, held = split_off(len(train), spec.val_fraction, g)
        splits["val"], train = train.subset(held), train.subset(keep)
    if spec.train_subset:
        train = train.subset(torch.arange(min(spec.train_subset, len(train))))
    val, test = splits["val"], splits["test"]
    num_classes = _num_classes(key, given, [s for s in (train, val, test) if not s.streamed])
    if spec.normalize:
        train, val, test = standardize(train, val, test)
    return DataBundle(train, val, test, num_classes, train.sample_shape)


def _checkedsplit_off(key: str, name: str, pair: Any) -> Split:
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(t, torch.Tensor) for t in pair)):
        raise SpecError([f"{key}: {name} is a {type(pair).__name__}, not an (x, y) pair of tensors; fix: return "
                         f"'{name}': (x, y) with x float (N, ...) and y integer labels (N,), or a map-style Dataset"])
    x, y = pair
    problems = []
    if not x.is_floating_point():
        problems.append(f"{key}: {name} x has dtype {x.dtype}; fix: return float features (x.float())")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        problems.append(f"{key}: {name} y has dtype {y.dtype}; fix: return integer class labels (y.long())")
    if y.dim() != 1:
        problems.append(f"{key}: {name} y has shape {tuple(y.shape)}; fix: one class index per sample, shape (N,)")
    if x.dim() < 2:
        problems.append(f"{key}: {name} x has shape {tuple(x.shape)}; fix: one row per sample, shape (N, ...)")
    elif len(x) != len(y):
        problems.append(f"{key}: {name} has {len(x)} samples in x but {len(y)} labels in y; fix: return as many "
                        "labels as samples")
    if not problems and len(y) == 0:
        problems.append(f"{key}: {name} is empty; fix: return at least one sample")
    if problems:
        raise SpecError(problems)
    return Split(x.detach().to("cpu", torch.float32), y.detach().to("cpu", torch.long))


def _checked_dataset(key: str, name: str, ds: torch.utils.data.Dataset, num_classes: int | None,
                     workers: int) -> StreamedSplit:
    """A Dataset split, checked by its length and first item only: it may be far too large to scan."""
    if isinstance(ds, torch.utils.data.IterableDataset):
        raise SpecError([f"{key}: {name} is an IterableDataset ({type(ds).__name__}); fix: return a map-style "
                         "Dataset (__len__, and __getitem__(i) -> (x, y)), so sal can draw each epoch's order"])
    if num_classes is None:
        raise SpecError([f"{key} returned a torch Dataset for {name} but no num_classes; fix: return "
                         "'num_classes': int beside the splits (a streamed set is read batch by batch, never "
                         "scanned for its largest label)"])
    try:
        n = len(ds)
    except Exception as err:  # a user's Dataset may fail in any way
        raise SpecError([f"{key}: {name}: len() raised {type(err).__name__}: {err}; fix: give the Dataset a "
                         "__len__ that returns its number of samples"]) from None
    if n == 0:
        raise SpecError([f"{key}: {name} is empty; fix: return at least one sample"])
    try:
        item = ds[0]
    except Exception as err:
        raise SpecError([f"{key}: reading {name} item 0 raised {type(err).__name__}: {err}; fix: correct the "
                         "Dataset's __getitem__ or data.args"]) from None
    where = f"{key}: {name} item 0"
    if not (isinstance(item, (tuple, list)) and len(item) == 2):
        raise SpecError([f"{where} is a {type(item).__name__}, not an (x, y) pair; fix: return (x, y) from "
                         "__getitem__, x a float tensor of one sample and y an int class index"])
    x, y = item
    if not isinstance(x, torch.Tensor):
        raise SpecError([f"{where}: x is a {type(x).__name__}, not a tensor; fix: return "
                         "torch.as_tensor(x, dtype=torch.float32)"])
    if not x.is_floating_point():
        raise SpecError([f"{where}: x has dtype {x.dtype}; fix: return float features (x.float())"])
    if x.dim() == 0:
        raise SpecError([f"{where}: x is a scalar; fix: return one sample as a tensor, e.g. shape (features,)"])
    label = _int_label(y)
    if label is None:
        raise SpecError([f"{where}: y={y!r} is not an integer class index; fix: return int(y), a class index in "
                         f"0 .. {num_classes - 1}"])
    _check_label_range(key, label, label, num_classes)
    return StreamedSplit(ds, tuple(x.shape), num_classes, source=f"{key} {name}", workers=workers)


def _int_label(y: Any) -> int | None:
    if isinstance(y, torch.Tensor):
        integral = y.dim() == 0 and not (y.is_floating_point() or y.is_complex() or y.dtype == torch.bool)
        return int(y) if integral else None
    return int(y) if isinstance(y, numbers.Integral) and not isinstance(y, bool) else None


def _check_shapes(key: str, splits: dict[str, AnySplit]) -> None:
    shape = splits["train"].sample_shape
    for name, s in splits.items():
        if s.sample_shape != shape:
            raise SpecError([f"{key}: {name} samples have shape {s.sample_shape} but train samples {shape}; "
                             "fix: return every split with the same sample shape"])


def _given_classes(key: str, out: Mapping) -> int | None:
    given = out.get("num_classes")
    if given is not None and (isinstance(given, bool) or not isinstance(given, int)):
        raise SpecError([f"{key}: num_classes={given!r} is not an int; fix: return an int (or leave it out)"])
    if given is not None and given < 2:
        raise SpecError([f"{key}: num_classes={given}; fix: return labels of at least two classes"])
    return given


def _check_label_range(key: str, smallest: int, largest: int, num_classes: int) -> None:
    if smallest < 0:
        raise SpecError([f"{key}: a label is {smallest}; fix: labels are class indices 0 .. num_classes - 1"])
    if largest >= num_classes:
        raise SpecError([f"{key}: a label is {largest} but num_classes={num_classes}; fix: labels in 0 .. "
                         f"{num_classes - 1} or a larger num_classes"])


def _num_classes(key: str, given: int | None, splits: list[Split]) -> int:
    """``given``, else the largest label + 1; the labels of tensor splits checked against it."""
    filled = [s for s in splits if len(s)]
    if not filled:  # every split is streamed: num_classes was required
        return given
    largest, smallest = max(int(s.y.max()) for s in filled), min(int(s.y.min()) for s in filled)
    n = largest + 1 if given is None else given
    _check_label_range(key, smallest, largest, n)
    if n < 2:
        raise SpecError([f"{key}: {n} class; fix: return labels of at least two classes"])
    return n
