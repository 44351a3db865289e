"""Base optimizers (adamw, sgd+nesterov, lion), lr schedules and gradient clipping, with every method."""

from __future__ import annotations

import contextlib
import copy
import math

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from sal.core.names import EVENT_DEFORM
from sal.methods import EpochStats, MethodContext, build_method
from sal.spec.config import SpecError, validate_run
from sal.training.run import train
from tests.helpers import STUDY_RUNS, tiny_spec

OPTIMIZERS = {"adamw": {"name": "adamw", "lr": 3e-3, "weight_decay": 0.05},
              "sgd_nesterov": {"name": "sgd", "lr": 0.05, "nesterov": True},
              "lion": {"name": "lion", "lr": 3e-4, "weight_decay": 0.1}}
METHODS = {"base": {"name": "base"}, "sal": {"name": "sal", "warmup": 1, "theta": 0.05},
           "sam": {"name": "sam"}, "swa": {"name": "swa", "swa_start": 0.5}}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("optim", OPTIMIZERS)
def test_every_optimizer_composes_with_every_method(optim, method):
    r = train(tiny_spec(optim=OPTIMIZERS[optim], method=METHODS[method], train={"epochs": 4}))
    assert r.ok, r.message
    losses = [row["train/loss"] for row in r.history]
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0], (optim, method, losses)
    assert math.isfinite(r.final["test/loss"])


def _lrs(schedule: dict, *, epochs: int = 8, method: dict | None = None, lr: float = 0.1) -> list[float]:
    r = train(tiny_spec(optim={"name": "sgd", "lr": lr, **schedule}, method=method or {"name": "base"},
                        train={"epochs": epochs, "batch_size": 32}, data={"num_samples": 200}))
    assert r.ok, r.message
    return [row["optim/lr"] for row in r.history]


def test_epoch_schedules_give_the_hand_computed_lr_per_epoch():
    lr, E = 0.1, 8
    assert _lrs({"schedule": "constant"}) == pytest.approx([lr] * E)
    assert _lrs({"schedule": "cosine"}) == pytest.approx([lr * (1 + math.cos(math.pi * k / E)) / 2 for k in range(E)])
    # warm-up W=3: lr/4, 2lr/4, 3lr/4, then the cosine over the remaining 5 epochs starting at lr
    W = 3
    expected = [lr * (k + 1) / (W + 1) for k in range(W)]
    expected += [lr * (1 + math.cos(math.pi * (k - W) / (E - W))) / 2 for k in range(W, E)]
    assert _lrs({"schedule": "warmup_cosine", "warmup_epochs": W}) == pytest.approx(expected)
    assert _lrs({"schedule": "step", "step_size": 3, "gamma": 0.5}) == pytest.approx(
        [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025])


def _one_cycle(step: int, total: int, lr: float) -> float:
    """torch's OneCycleLR defaults by hand: cosine lr/25 -> lr over 30% of the steps, then -> lr/25/1e4."""
    initial, final = lr / 25, lr / 25 / 1e4
    peak = 0.3 * total - 1
    cos = lambda a, b, pct: b + (a - b) / 2 * (1 + math.cos(math.pi * pct))
    if step <= peak:
        return cos(initial, lr, step / peak)
    return cos(lr, final, (step - peak) / (total - 1 - peak))


def test_onecycle_steps_once_per_batch():
    # 200 samples: 30 test, 145 train -> 4 batches of 32 per epoch; lr logged after the epoch's last step
    E, lr, batches = 6, 0.1, 4
    lrs = _lrs({"schedule": "onecycle"}, epochs=E, lr=lr)
    assert lrs == pytest.approx([_one_cycle(e * batches, E * batches, lr) for e in range(1, E + 1)], rel=1e-6)


def test_swa_takes_the_lr_over_from_onecycle_and_cosine():
    swa = {"name": "swa", "swa_start": 0.5, "swa_lr": 0.01}
    for schedule in ("onecycle", "cosine"):
        lrs = _lrs({"schedule": schedule}, method=swa)
        assert lrs[:4] == pytest.approx(_lrs({"schedule": schedule})[:4])  # before averaging: the schedule
        assert lrs[5:] == pytest.approx([0.01] * 3), schedule  # SWALR reached swa_lr and stays there


def _context(model, spec, loss_fn=F.cross_entropy):
    return MethodContext(model=model, spec=spec, loss_fn=loss_fn, generator=torch.Generator().manual_seed(0),
                         method_seed=0, autocast=contextlib.nullcontext, train_batches=lambda: iter(()))


@pytest.mark.parametrize("method", [{"name": "base"}, {"name": "sam", "rho": 0.05}])
def test_clip_grad_norm_bounds_every_step(method):
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    x, y = torch.randn(16, 5) * 100, torch.randint(0, 3, (16,))  # big inputs: gradient norm >> the clip
    spec = validate_run({"method": method, "optim": {"name": "sgd", "lr": 1.0, "momentum": 0.0,
                                                     "clip_grad_norm": 0.01}})
    untouched = copy.deepcopy(model)
    before = torch.cat([p.detach().flatten() for p in model.parameters()])
    build_method(_context(model, spec)).train_step(x, y)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert (after - before).norm().item() == pytest.approx(0.01, rel=1e-4)  # lr 1 x clipped norm 0.01
    unclipped = validate_run({"method": method, "optim": {"name": "sgd", "lr": 1.0, "momentum": 0.0}})
    build_method(_context(untouched, unclipped)).train_step(x, y)
    assert (torch.cat([p.detach().flatten() for p in untouched.parameters()]) - before).norm().item() > 0.1


def test_sal_deformation_shrinks_on_top_of_adamw_decoupled_decay():
    """With zero gradients AdamW only decays: w <- (1 - lr wd) w per step. A deformation (sigma_y = 0,
    no noise) then multiplies the deformed layers by method.shrink on top: 0.9 (1 - lr wd)^steps, and
    leaves AdamW's moment estimates alone. The layers SAL does not deform see the decay only."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2))
    w0 = [p.detach().clone() for p in model.parameters()]
    lr, wd, steps = 0.01, 0.5, 3
    spec = validate_run({"optim": {"name": "adamw", "lr": lr, "weight_decay": wd},
                         "method": {"name": "random_trigger", "trigger_prob": 1.0, "warmup": 0, "sigma_y": 0.0,
                                    "delta": 0.0, "lambda": 0.0, "recovery": False}})
    m = build_method(_context(model, spec, loss_fn=lambda logits, y: (logits * 0).sum()))
    x, y = torch.randn(8, 4), torch.zeros(8, dtype=torch.long)
    for _ in range(steps):
        m.train_step(x, y)
    moments = [s["exp_avg_sq"].clone() for s in m.optimizer.state.values()]
    events = m.end_epoch(EpochStats(1, 1.0, 0.5, 1.0, 0.5))
    assert events[EVENT_DEFORM] == 1.0
    decay = (1 - lr * wd) ** steps
    params = list(model.parameters())
    for p, p0 in zip(params[:2], w0[:2]):  # first layer: not deformed (the last 3 are)
        assert torch.allclose(p, p0 * decay, atol=1e-7)
    for p, p0 in zip(params[2:], w0[2:]):
        assert torch.allclose(p, p0 * decay * 0.9, atol=1e-7)
    assert all(torch.equal(a, s["exp_avg_sq"]) for a, s in zip(moments, m.optimizer.state.values()))


@pytest.mark.parametrize("optim, train_, text", [
    ({"name": "sgd", "nesterov": True, "momentum": 0.0}, {}, "optim.nesterov=True with optim.momentum=0"),
    ({"name": "adam", "nesterov": True}, {}, "optim.nesterov=True with optim.name='adam'"),
    ({"schedule": "warmup_cosine", "warmup_epochs": 4}, {"epochs": 4}, "optim.warmup_epochs=4 is not below"),
    ({"clip_grad_norm": 0}, {}, "optim.clip_grad_norm=0"),
    ({"name": "adamw_typo"}, {}, "optim.name='adamw_typo'"),
    ({"schedule": "step", "gamma": 2.0}, {}, "optim.gamma=2.0"),
])
def test_bad_optimizer_settings_name_the_key_and_the_fix(optim, train_, text):
    with pytest.raises(SpecError) as err:
        validate_run({"optim": optim, "train": train_})
    assert text in str(err.value) and "fix:" in str(err.value)


@pytest.mark.training
def test_adamw_and_every_schedule_in_a_study(tmp_path, mlflow_uri):
    from sal.queue.engine import StorageRef
    from sal.spec.study_spec import load_study_spec
    from sal.sweeps.study import run_study
    from sal.tracking.store import runs_frame

    schedules = ["constant", "cosine", "warmup_cosine", "step", "onecycle"]
    doc = {"name": "optims", "seeds": 1, "n_trials": 10, "enqueue_defaults": False, "pruner": {"name": "none"},
           "sampler": {"name": "grid", "seed": 0},
           "base": {"data": {"name": "synthetic", "num_samples": 300}, "model": {"name": "mlp", "width": 8},
                    "optim": {"lr": 0.01, "weight_decay": 0.05, "warmup_epochs": 1, "step_size": 1, "gamma": 0.5},
                    "method": {"name": "sal", "warmup": 1}, "train": {"epochs": 3, "batch_size": 32}},
           "space": {"optim.name": {"choices": ["adamw", "adam"]}, "optim.schedule": {"choices": schedules}}}
    path = tmp_path / "optims.yaml"
    path.write_text(yaml.safe_dump(doc))
    study = run_study(load_study_spec(path), ref=StorageRef(str(tmp_path / "o.journal")), uri=mlflow_uri)
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 10
    assert {(t.params["optim.name"], t.params["optim.schedule"]) for t in trials} == \
        {(n, s) for n in ("adamw", "adam") for s in schedules}
    runs = runs_frame(mlflow_uri, ["sal-study-optims"], STUDY_RUNS)
    assert len(runs) == 10
    last_lr = {(r["params.optim.name"], r["params.optim.schedule"]): r["metrics.optim/lr"] for _, r in runs.iterrows()}
    for name in ("adamw", "adam"):  # epoch 3's lr, by hand
        assert last_lr[(name, "constant")] == pytest.approx(0.01)
        assert last_lr[(name, "cosine")] == pytest.approx(0.01 * (1 + math.cos(math.pi * 2 / 3)) / 2)
        assert last_lr[(name, "warmup_cosine")] == pytest.approx(0.01 * (1 + math.cos(math.pi / 2)) / 2)
        assert last_lr[(name, "step")] == pytest.approx(0.0025)
