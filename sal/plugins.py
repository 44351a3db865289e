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
(DESIGN.md). ``data.normalize`` standardises features with training statistics as for built-in sets;
``data.train_subset`` caps the training samples. A torch ``Dataset`` per split (streamed data) is not
supported yet: the loader is told so, with the fix.

Everything is checked by ``check_plugins`` before the first run: the import, the function, its
signature, what it returns (an ``nn.Module`` that maps two training samples to ``(2, num_classes)``
logits; tensors of matching lengths, dtypes and shapes). Each problem is a SpecError naming the key,
the value and the fix. The Python API may pass callables instead (``sal.train(spec, model=fn)``);
they are registered under ``module:qualname`` for this process only.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from .config import DataSpec, ModelSpec, RunSpec, SpecError, is_import_path
from .data import DataBundle, Split, _split, load_data, standardize

__all__ = ["resolve", "register", "build_plugin_model", "load_plugin_data", "check_plugins", "ensure_cwd_importable"]

_CONTRACTS = {
    "model": ("build(args: dict, in_shape: tuple, num_classes: int) -> nn.Module", 3),
    "data": ('load(args: dict, split_seed: int) -> {"train": (x, y), "val": (x, y), "test": (x, y)}', 2),
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
                         "(x, y) pair of tensors) and num_classes"])
    splits = {name: _checked_split(key, name, out[name]) for name in _SPLITS if out.get(name) is not None}
    _check_shapes(key, splits)
    x, y = splits["train"].x, splits["train"].y
    g = torch.Generator().manual_seed(spec.split_seed)
    if "test" not in splits:
        keep, held = _split(len(y), spec.test_fraction, g)
        splits["test"], x, y = Split(x[held], y[held]), x[keep], y[keep]
    if "val" not in splits:
        keep, held = _split(len(y), spec.val_fraction, g)
        splits["val"], x, y = Split(x[held], y[held]), x[keep], y[keep]
    if spec.train_subset:
        x, y = x[:spec.train_subset], y[:spec.train_subset]
    train, val, test = Split(x, y), splits["val"], splits["test"]
    num_classes = _num_classes(key, out.get("num_classes"), [train, val, test])
    if spec.normalize:
        train, val, test = standardize(train, val, test)
    return DataBundle(train, val, test, num_classes, tuple(train.x.shape[1:]))


def _checked_split(key: str, name: str, pair: Any) -> Split:
    if isinstance(pair, torch.utils.data.Dataset):
        raise SpecError([f"{key} returned a torch Dataset for {name}; streaming data is not supported yet; fix: "
                         "return tensors (x, y) that fit in memory"])
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(t, torch.Tensor) for t in pair)):
        raise SpecError([f"{key}: {name} is a {type(pair).__name__}, not an (x, y) pair of tensors; fix: return "
                         f"'{name}': (x, y) with x float (N, ...) and y integer labels (N,)"])
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


def _check_shapes(key: str, splits: dict[str, Split]) -> None:
    shape = tuple(splits["train"].x.shape[1:])
    for name, s in splits.items():
        if tuple(s.x.shape[1:]) != shape:
            raise SpecError([f"{key}: {name} samples have shape {tuple(s.x.shape[1:])} but train samples {shape}; "
                             "fix: return every split with the same sample shape"])


def _num_classes(key: str, given: Any, splits: list[Split]) -> int:
    largest = max(int(s.y.max()) for s in splits if len(s))
    smallest = min(int(s.y.min()) for s in splits if len(s))
    if smallest < 0:
        raise SpecError([f"{key}: a label is {smallest}; fix: labels are class indices 0 .. num_classes - 1"])
    if given is None:
        n = largest + 1
    elif isinstance(given, bool) or not isinstance(given, int):
        raise SpecError([f"{key}: num_classes={given!r} is not an int; fix: return an int (or leave it out)"])
    else:
        n = given
        if largest >= n:
            raise SpecError([f"{key}: a label is {largest} but num_classes={n}; fix: labels in 0 .. {n - 1} or a "
                             "larger num_classes"])
    if n < 2:
        raise SpecError([f"{key}: {n} class; fix: return labels of at least two classes"])
    return n


# ---------------------------------------------------------------- checks before compute


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
        x = data.train.x[:2]
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
