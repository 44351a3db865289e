"""The ``analysis`` section: sharpness per epoch, trajectory and final weights, without touching training."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch

from sal.core.names import EVENT_DEFORM
from sal.spec.config import SpecError, validate_run
from sal.tracking.store import TRAJECTORY_ARTIFACT, WEIGHTS_ARTIFACT, log_result, run_tensors
from sal.training.data import load_data
from sal.training.models import build_model
from sal.training.run import _evaluate, train
from tests.helpers import tiny_spec

MEASURED = {"sharpness/trace", "sharpness/trace_se", "sharpness/eig", "sharpness/adaptive", "sharpness/adaptive_se",
            "time/sharpness_s", "time/sharpness_trace_s", "time/sharpness_eig_s", "time/sharpness_adaptive_s"}


def _spec(analysis=None, **extra):
    # BatchNorm, dropout and interventions drawing from the method's generator: all a measurement could disturb
    return tiny_spec(model={"name": "cnn", "width": 4, "dropout": 0.2},
                     train={"epochs": 4, "batch_size": 64, "sharpness_samples": 0},
                     method={"name": "random_trigger", "warmup": 0, "trigger_prob": 0.7},
                     analysis=analysis or {}, **extra)


ALL = {"sharpness": ["trace", "eig", "adaptive"], "every": 2, "samples": 128, "probes": 4, "eig_iters": 5,
       "adaptive_samples": 2, "trajectory": True, "save_weights": True}


def _training(history):
    return [{k: v for k, v in row.items() if not k.startswith(("time/", "sharpness/"))} for row in history]


@pytest.mark.training  # trains several small CNNs
def test_analysis_leaves_training_untouched_and_measures_every_k_epochs():
    plain, measured = train(_spec()), train(_spec(ALL))
    assert plain.ok and measured.ok
    assert _training(measured.history) == _training(plain.history)
    assert measured.final["test/acc"] == plain.final["test/acc"]
    assert any(row[EVENT_DEFORM] for row in plain.history)  # the method's generator was in use
    assert [sorted(MEASURED & set(row)) for row in measured.history] == [[], sorted(MEASURED), [], sorted(MEASURED)]
    last = measured.history[-1]
    assert last["sharpness/trace_se"] > 0 and math.isfinite(last["sharpness/trace"])
    assert last["sharpness/eig"] > 0
    assert last["time/sharpness_s"] == pytest.approx(sum(last[f"time/sharpness_{m}_s"]
                                                          for m in ("trace", "eig", "adaptive")))
    assert not any(k.startswith("sharpness/") for row in plain.history for k in row)
    assert plain.analysis == {}


@pytest.mark.training  # trains several small CNNs
def test_analysis_is_deterministic_and_keeps_weights_and_trajectory():
    a, b = train(_spec(ALL)), train(_spec(ALL))
    keys = ["sharpness/trace", "sharpness/eig", "sharpness/adaptive"]
    assert [[r.get(k) for k in keys] for r in a.history] == [[r.get(k) for k in keys] for r in b.history]
    traj = a.analysis["trajectory"]
    assert traj["epochs"].tolist() == [1, 2, 3, 4]
    assert traj["weights"].shape == (4, ALL.get("trajectory_dim", 512))  # the CNN has more weights: projected
    assert torch.equal(traj["weights"], b.analysis["trajectory"]["weights"])
    other_seed = train(_spec(ALL, seed=2))
    assert other_seed.history[-1]["sharpness/trace"] != a.history[-1]["sharpness/trace"]


@pytest.mark.training  # trains several small CNNs
def test_saved_weights_round_trip_through_mlflow_and_reproduce_the_test_accuracy(mlflow_uri):
    spec = _spec({"save_weights": True, "trajectory": True, "trajectory_dim": 4096})
    result = train(spec)
    run_id = log_result(result, uri=mlflow_uri, experiment="analysis-test", kind="train")
    state = run_tensors(mlflow_uri, run_id, WEIGHTS_ARTIFACT)
    data = load_data(spec.data)
    model = build_model(spec.model, data.in_shape, data.num_classes)
    model.load_state_dict(state)
    (_, correct, _), _ = _evaluate(model, data.test, 512, contextlib.nullcontext)
    assert correct.item() / len(data.test) == result.final["test/acc"]
    traj = run_tensors(mlflow_uri, run_id, TRAJECTORY_ARTIFACT)
    n = sum(p.numel() for p in model.parameters())
    assert n <= 4096 and traj["weights"].shape == (4, n)  # small enough: the exact weights, unprojected
    assert torch.equal(traj["weights"][-1], torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    bare = log_result(train(_spec()), uri=mlflow_uri, experiment="analysis-test", kind="train")
    assert run_tensors(mlflow_uri, bare, WEIGHTS_ARTIFACT) is None


@pytest.mark.parametrize("analysis, says", [
    ({"sharpness": ["trace", "hessian"]}, "analysis.sharpness.1='hessian'"),
    ({"sharpness": ["eig", "eig"]}, "names ['eig'] twice"),
    ({"probes": 1}, "analysis.probes=1"),
    ({"every": 0}, "analysis.every=0"),
    ({"sharpnes": ["trace"]}, "analysis.sharpnes: unknown setting"),
])
def test_bad_analysis_settings_name_the_key_and_the_fix(analysis, says):
    with pytest.raises(SpecError) as err:
        validate_run({"analysis": analysis})
    assert says in str(err.value) and "fix:" in str(err.value)


def test_grad_norm_per_epoch_is_the_gradient_norm_on_one_subset_shared_by_every_seed():
    """train/grad_norm each epoch: training untouched, the last value recomputed by hand from the saved
    weights, and the same samples for two seeds (so curves compare)."""
    from sal.training.run_analysis import SHARED_SUBSET_SEED, RunAnalysis, fixed_batches

    analysis = {"sharpness": ["grad_norm"], "samples": 96, "save_weights": True}
    spec = tiny_spec(model={"name": "mlp", "width": 8}, train={"epochs": 3, "batch_size": 32, "sharpness_samples": 0},
                     method={"name": "sal", "warmup": 0}, analysis=analysis)
    plain = train(spec.model_copy(update={"analysis": type(spec.analysis)()}))
    measured = train(spec)
    untouched = [{k: v for k, v in row.items() if k != "train/grad_norm"} for row in _training(measured.history)]
    assert untouched == _training(plain.history)
    values = [row["train/grad_norm"] for row in measured.history]
    assert len(values) == 3 and all(v > 0 and math.isfinite(v) for v in values)

    data = load_data(spec.data, torch.device("cpu"))
    model = build_model(spec.model, data.in_shape, data.num_classes)
    model.load_state_dict(measured.analysis["weights"])
    model.eval()
    batches = fixed_batches(data.train, samples=96, seed=SHARED_SUBSET_SEED)
    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    loss = torch.nn.functional.cross_entropy(model(x), y)  # the mean over the 96 samples, in one batch
    grads = torch.autograd.grad(loss, [p for p in model.parameters()])
    by_hand = torch.sqrt(sum((g ** 2).sum() for g in grads)).item()
    assert values[-1] == pytest.approx(by_hand, rel=1e-5)

    other_seed = RunAnalysis(spec.model_copy(update={"seed": 7}), data.train, model=model).shared_batches
    mine = RunAnalysis(spec, data.train, model=model).shared_batches
    assert all(torch.equal(a[0], b[0]) for a, b in zip(mine, other_seed))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(
        RunAnalysis(spec, data.train, model=model).batches,
        RunAnalysis(spec.model_copy(update={"seed": 7}), data.train, model=model).batches))
