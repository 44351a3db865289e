"""Each training method: trains, and matches its definition on tiny hand-checked cases."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sal.core.names import EVENT_DEFORM, EVENT_NOISE
from sal.methods import MethodContext, build_method
from sal.spec.config import METHOD_NAMES, validate_run
from sal.training.run import train
from tests.helpers import tiny_spec


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_every_method_trains_on_digits(name):
    method = {"name": name}
    if name.startswith("sal") or name in ("random_trigger", "shrink_perturb"):
        method["warmup"] = 1
    r = train(tiny_spec(data={"name": "digits"}, optim={"lr": 0.003}, method=method, train={"epochs": 3}))
    assert r.ok, r.message
    assert r.history[-1]["train/loss"] < r.history[0]["train/loss"]
    assert r.final["test/acc"] > 0.3  # 10 classes: chance is 0.1


def _context(model, method, optim=None):
    spec = validate_run({"method": method, "optim": optim or {"name": "sgd", "lr": 0.1, "momentum": 0.0}})
    return MethodContext(model=model, spec=spec, loss_fn=F.cross_entropy, generator=torch.Generator(),
                         method_seed=0, autocast=contextlib.nullcontext, train_batches=lambda: iter(()))


def _linear():
    torch.manual_seed(0)
    return nn.Linear(3, 2, bias=False)


X = torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.8, -1.0], [2.0, 0.1, 0.4]])
Y = torch.tensor([0, 1, 1])


def _grad(w):
    w = w.clone().requires_grad_(True)
    F.cross_entropy(X @ w.T, Y).backward()
    return w.grad


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_matches_the_two_step_update(adaptive):
    model = _linear()
    w0 = model.weight.detach().clone()
    rho, lr = 0.1, 0.1
    build_method(_context(model, {"name": "sam", "rho": rho, "adaptive": adaptive})).train_step(X, Y)
    g1 = _grad(w0)
    t = w0.abs() if adaptive else torch.ones_like(w0)
    e = rho * t * t * g1 / (t * g1).norm()
    expected = w0 - lr * _grad(w0 + e)
    assert torch.allclose(model.weight, expected, atol=1e-6)


class _FirstPassBias(nn.Module):
    """Uses its bias on the first forward only, so the bias gets no gradient on SAM's second pass."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(3, 2))
        self.bias = nn.Parameter(torch.randn(2))
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x @ self.weight + (self.bias if self.calls == 1 else 0)


def test_sam_restores_parameters_without_a_second_gradient():
    model = _FirstPassBias()
    bias = model.bias.detach().clone()
    sam = build_method(_context(model, {"name": "sam", "rho": 0.5}, {"name": "sgd", "lr": 0.1, "momentum": 0.0}))
    sam.train_step(X, Y)
    assert model.bias.grad is None  # the base optimizer did not move it
    assert torch.allclose(model.bias, bias, atol=1e-7)  # and SAM took its perturbation back


def test_sam_updates_batchnorm_statistics_on_the_first_pass_only():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    with torch.no_grad():
        first_pass = model[0](X)
    expected = 0.1 * first_pass.mean(0)  # running mean starts at 0, momentum 0.1
    build_method(_context(model, {"name": "sam", "rho": 0.5})).train_step(X, Y)
    assert torch.allclose(model[1].running_mean, expected, atol=1e-6)
    assert model[1].momentum == 0.1  # restored after the second pass


def test_swa_average_is_the_mean_of_the_snapshots():
    model = _linear()
    spec_method = {"name": "swa", "swa_start": 0.5}
    ctx = _context(model, spec_method)
    ctx.spec = validate_run({"method": spec_method, "train": {"epochs": 4},
                             "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.0}})
    swa = build_method(ctx)
    snapshots = []
    for epoch in range(1, 5):
        swa.train_step(X, Y)
        swa.on_epoch_trained(epoch)
        if epoch > 2:
            snapshots.append(model.weight.detach().clone())
    averaged = swa.eval_model()
    assert averaged is not model
    assert torch.allclose(averaged.module.weight, torch.stack(snapshots).mean(0), atol=1e-7)


def _rolling_vs_sgd(lr: float, radius: float) -> float:
    """Relative distance between one rolling-ball step and one SGD step from the same weights."""
    model, reference = _linear(), _linear()
    w0 = model.weight.detach().clone()
    sgd = {"name": "sgd", "lr": lr, "momentum": 0.0}
    build_method(_context(model, {"name": "rolling_ball", "radius": radius, "inner_steps": 3}, sgd)).train_step(X, Y)
    opt = torch.optim.SGD(reference.parameters(), lr=lr)
    F.cross_entropy(reference(X), Y).backward()
    opt.step()
    d_rb, d_gd = model.weight.detach() - w0, reference.weight.detach() - w0
    return ((d_rb - d_gd).norm() / d_gd.norm()).item()


def test_rolling_ball_with_a_tiny_radius_is_gradient_descent():
    # The projection onto the curved graph differs from the GD step by O(lr^2): relative O(lr).
    errors = [_rolling_vs_sgd(lr, 1e-9) for lr in (0.1, 0.01, 0.001)]
    assert errors[0] < 0.03 and errors[1] < errors[0] / 5 and errors[2] < errors[1] / 5
    assert _rolling_vs_sgd(0.01, 0.5) > 0.05  # a real radius rolls elsewhere


def test_lbfgs_uses_the_full_batch_and_converges_fast():
    r = train(tiny_spec(method={"name": "lbfgs", "max_iter": 10}, train={"epochs": 3}))
    assert r.ok and r.history[-1]["train/loss"] < 0.5 * r.history[0]["train/loss"]


def test_random_trigger_fires_exactly_count_times_after_the_warmup():
    r = train(tiny_spec(method={"name": "random_trigger", "warmup": 3, "trigger_count": 4, "recovery": False},
                        train={"epochs": 12}))
    fired = [row["epoch"] for row in r.history if row[EVENT_DEFORM]]
    assert len(fired) == 4 and min(fired) > 3
    assert all(r.history[e - 1][EVENT_NOISE] for e in fired)


def test_random_trigger_fires_with_its_probability():
    r = train(tiny_spec(method={"name": "random_trigger", "warmup": 0, "trigger_prob": 0.5, "recovery": False},
                        train={"epochs": 40}))
    fired = sum(row[EVENT_DEFORM] for row in r.history)
    assert 10 <= fired <= 30  # Binomial(40, 0.5): outside this range with probability < 0.2%
