"""Packed seeds: a seed trained in a pack has the history and weights of the seed trained alone."""

from __future__ import annotations

import math

import pytest
import torch

from sal.core.names import EVENT_DEFORM, EVENT_METRICS, EVENT_NOISE, TAG_CELL
from sal.spec.config import SpecError, config_hash
from sal.training.packed import PackedRun
from sal.training.seeds import SeedRuns, should_pack, start_seeds, train_seeds
from tests.helpers import ABLATION_RUNS, STUDY_RUNS, assert_same_history, tiny_spec, train_alone

# Knobs that make SAL act within a few epochs: stress never counts progress (eps_loss huge), so it
# crosses s_noise after one epoch and yields after two, and a deformation is reverted after one.
_SAL = dict(warmup=0, rho=0.0, theta=0.01, s_noise=0.005, s_yield=0.02, eps_loss=10.0, delta=1e-3,
            recovery_patience=1, sigma_y=0.05, lambda_=0.1)
METHODS = {
    "base": {"name": "base"},
    "sal": {"name": "sal", **_SAL},
    "sal_noise_only": {"name": "sal_noise_only", **_SAL},
    "sal_deform_only": {"name": "sal_deform_only", **_SAL},
    "sal_no_recovery": {"name": "sal_no_recovery", **_SAL},
    "random_trigger": {"name": "random_trigger", **_SAL, "trigger_prob": 0.5},
    "shrink_perturb": {"name": "shrink_perturb", "every": 2, "warmup": 1, "sigma_y": 0.05},
    "sam": {"name": "sam", "rho": 0.1},
    "asam": {"name": "sam", "rho": 0.5, "adaptive": True, "eta": 0.01},
    "swa": {"name": "swa", "swa_start": 0.4},
}
MODELS = {
    "mlp_dropout": {"name": "mlp", "width": 16, "dropout": 0.3},
    "cnn_bn_dropout": {"name": "cnn", "width": 4, "dropout": 0.2},
}
_FAST = {"epochs": 5, "batch_size": 32, "sharpness_samples": 0, "infer_batches": 1}


def _packed_weights(packed: PackedRun, s: int) -> dict[str, torch.Tensor]:
    params, buffers = packed.eval_weights()
    return {**{k: v[s] for k, v in params.items()}, **{k: v[s] for k, v in buffers.items()}}


# A fast representative subset runs by default; the whole matrix is marked slow (seconds each on 2 cores).
_FAST_CASES = {("base", "cnn_bn_dropout"), ("sal", "mlp_dropout"), ("swa", "cnn_bn_dropout")}
CASES = [pytest.param(m, d, marks=() if (m, d) in _FAST_CASES else pytest.mark.training)
         for m in METHODS for d in MODELS]


@pytest.mark.parametrize("method,model", CASES)
def test_packed_seed_equals_seed_alone(method, model):
    _check_packed_equals_alone(method, model)


def _check_packed_equals_alone(method, model, grouped=None):
    """Each seed of a pack (``grouped``: the packed forward; None: the default) has the history and final
    weights of the seed trained alone, and SAL acted (else the check would be void)."""
    specs = [tiny_spec(method=METHODS[method], model=MODELS[model], train=_FAST, seed=seed) for seed in (3, 7)]
    packed = PackedRun(specs, grouped=grouped)
    assert (packed.grouped is not None) == (grouped is not False)  # sal's models all have grouped layers
    while not packed.done:
        packed.step()
    results = packed.finish()
    for s, spec in enumerate(specs):
        alone, weights = train_alone(spec)
        assert_same_history(results[s], alone)
        packed_weights = _packed_weights(packed, s)
        assert set(packed_weights) == set(weights)
        for name, w in weights.items():
            torch.testing.assert_close(packed_weights[name].to(w.dtype), w.detach(), atol=1e-5, rtol=0,
                                       msg=f"{method}/{model} seed {spec.seed}: {name}")
    if method.startswith("sal") or method == "random_trigger":
        # The test would be void if SAL never acted: its knobs make it add noise, deform and revert.
        events = {k for r in results for row in r.history for k in EVENT_METRICS
                  if row.get(k)}
        assert events >= {EVENT_NOISE} if method == "sal_noise_only" else events >= {EVENT_DEFORM}
        if method == "sal":
            assert events == set(EVENT_METRICS)


@pytest.mark.parametrize("method", ["sal", pytest.param("sam", marks=pytest.mark.training),
                                    pytest.param("swa", marks=pytest.mark.training)])
def test_the_vmap_forward_is_exact_too(method):
    """Models with layers the grouped forward lacks train under vmap: the same exactness holds."""
    _check_packed_equals_alone(method, "cnn_bn_dropout", grouped=False)


def test_seeds_differ_within_a_pack():
    """Each seed has its own init, data order and dropout: the slices are not copies of one another."""
    specs = [tiny_spec(model=MODELS["mlp_dropout"], train=_FAST, seed=seed) for seed in (1, 2)]
    packed = PackedRun(specs)
    packed.step()
    losses = [r.history[0]["train/loss"] for r in packed.results]
    assert losses[0] != losses[1]
    first = next(iter(packed.params.values()))
    assert not torch.equal(first[0], first[1])


def test_a_diverged_seed_stops_alone():
    """A seed whose loss becomes NaN is marked diverged; the other seed of the pack trains on unchanged
    (and its packed sharpness is the one measured alone)."""
    specs = [tiny_spec(train={**_FAST, "sharpness_samples": 100}, seed=seed) for seed in (1, 2)]
    packed = PackedRun(specs)
    packed.step()
    with torch.no_grad():
        next(iter(packed.params.values()))[0].fill_(math.nan)
    while not packed.done:
        packed.step()
    results = packed.finish()
    assert results[0].status == "diverged" and len(results[0].history) == 2
    assert "test/acc" not in results[0].final
    alone, _ = train_alone(specs[1])
    assert_same_history(results[1], alone)


def test_train_seeds_and_pack_modes():
    specs = [tiny_spec(train={**_FAST, "pack": "on"}, seed=s) for s in (1, 2, 3)]
    assert isinstance(start_seeds(specs), PackedRun)
    assert isinstance(start_seeds([s.model_copy(update={"train": s.train.model_copy(update={"pack": "off"})})
                                   for s in specs]), SeedRuns)
    assert should_pack(specs[:1]) is False  # one seed: nothing to pack
    lbfgs = [tiny_spec(method={"name": "lbfgs"}, train={**_FAST, "pack": "on"}, seed=s) for s in (1, 2)]
    assert isinstance(start_seeds(lbfgs), SeedRuns)  # cannot be packed: one at a time
    results = train_seeds(specs)
    assert [r.spec.seed for r in results] == [1, 2, 3]
    assert all(len(r.history) == _FAST["epochs"] and 0 <= r.final["test/acc"] <= 1 for r in results)
    # how seeds are trained is not part of a run's identity
    assert config_hash(specs[0]) == config_hash(tiny_spec(train={**_FAST, "pack": "off"}))


def test_auto_falls_back_when_the_pack_would_not_fit():
    specs = [tiny_spec(train={**_FAST, "pack": "auto"}, seed=s) for s in (1, 2)]
    assert should_pack(specs, n_params=1000, in_shape=(1, 8, 8)) is True
    assert should_pack(specs, n_params=10**15, in_shape=(1, 8, 8)) is False
    assert should_pack(specs, n_params=700_000, in_shape=(3, 32, 32)) is False  # on the CPU: slower packed


def test_only_one_configuration_packs():
    specs = [tiny_spec(train=_FAST, seed=1), tiny_spec(train=_FAST, optim={"lr": 0.01}, seed=2)]
    with pytest.raises(SpecError, match="optim.lr"):
        PackedRun(specs)


# ---------------------------------------------------------------- the callers: studies and ablations


def _study(tmp_path, name, pack):
    import yaml

    from sal.spec.study_spec import load_study_spec
    doc = {"name": name, "seeds": 3, "n_trials": 2, "sampler": {"name": "tpe", "seed": 1},
           "pruner": {"name": "median", "options": {"n_startup_trials": 0, "n_warmup_steps": 0}},
           "objective": {"metric": "val/acc", "aggregate": "mean"},
           "base": {"data": {"name": "synthetic", "num_samples": 300}, "model": {"name": "mlp", "width": 8},
                    "method": {"name": "sal", **_SAL}, "train": {**_FAST, "epochs": 3, "pack": pack}},
           "space": {"method.theta": {"low": 1e-3, "high": 5e-2, "log": True}}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_study_spec(path)


@pytest.mark.training
def test_a_packed_study_gives_the_unpacked_trials_and_one_run_per_seed(tmp_path, mlflow_uri):
    from sal.queue.engine import StorageRef
    from sal.sweeps.study import run_study
    from sal.tracking.store import runs_frame
    studies = {pack: run_study(_study(tmp_path, f"pack-{pack}", pack), ref=StorageRef(str(tmp_path / f"{pack}.db")),
                               uri=mlflow_uri) for pack in ("on", "off")}
    on, off = (studies[p].get_trials() for p in ("on", "off"))
    assert [t.params for t in on] == [t.params for t in off]
    assert [t.value for t in on] == [t.value for t in off]
    assert [t.intermediate_values for t in on] == [t.intermediate_values for t in off]  # what the pruner saw
    assert all(t.intermediate_values for t in on)
    runs = runs_frame(mlflow_uri, ["sal-study-pack-on"], STUDY_RUNS)
    assert len(runs) == 6 and sorted(runs["tags.seed"]) == ["1", "1", "2", "2", "3", "3"]


@pytest.mark.training
def test_an_ablation_cell_trains_its_seeds_packed_with_the_unpacked_values(tmp_path, mlflow_uri):
    import yaml

    from sal.queue.engine import StorageRef
    from sal.sweeps.ablation import load_ablation, run_ablation
    from sal.tracking.store import runs_frame
    values = {}
    for pack in ("on", "off"):
        doc = {"name": f"abl-{pack}", "seeds": 3,
               "base": {"data": {"name": "synthetic", "num_samples": 300}, "model": {"name": "mlp", "width": 8},
                        "train": {**_FAST, "epochs": 3, "pack": pack}},
               "cells": {"adam": {"method.name": "base"}, "sal": {"method.name": "sal", **{
                   f"method.{k}": v for k, v in _SAL.items()}}}}
        path = tmp_path / f"abl-{pack}.yaml"
        path.write_text(yaml.safe_dump(doc))
        spec, items = load_ablation(path)
        out = run_ablation(spec, items, ref=StorageRef(str(tmp_path / f"abl-{pack}.journal")), uri=mlflow_uri)
        assert out["states"] == {"COMPLETE": 6}
        runs = runs_frame(mlflow_uri, [f"sal-ablation-abl-{pack}"], ABLATION_RUNS)
        assert len(runs) == 6  # one MLflow run per (cell, seed)
        values[pack] = sorted(zip(runs[f"tags.{TAG_CELL}"], runs["tags.seed"], runs["metrics.val/acc"]))
    assert values["on"] == values["off"]
