"""The paper's method, equation by equation (sal/methods/pdo.py)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sal.methods.pdo import PDO, Interventions, StressSignal, last_trainable_layers


def _stress_trace(losses, accs, **knobs):
    s = StressSignal(**knobs)
    return [s.update(loss, acc) for loss, acc in zip(losses, accs)]


def test_stress_decays_on_progress_and_grows_on_stagnation():
    # progress, progress, stall (loss up), stall (acc flat), progress
    trace = _stress_trace([1.0, 0.9, 0.95, 0.8, 0.7], [0.5, 0.6, 0.7, 0.7, 0.8], rho=0.001, theta=0.01)
    assert trace == pytest.approx([0.0, 0.0, 0.01, 0.02, 0.019])


def test_progress_needs_both_loss_and_accuracy():
    # loss improves but accuracy does not -> stagnation; accuracy improves but loss does not -> stagnation
    assert _stress_trace([1.0, 0.5], [0.5, 0.5], theta=0.005) == pytest.approx([0.0, 0.005])
    assert _stress_trace([1.0, 1.0], [0.5, 0.9], theta=0.005) == pytest.approx([0.0, 0.005])


def test_stress_is_capped_and_floored():
    up = _stress_trace([1.0] * 6, [0.5] * 6, theta=0.3, s_max=1.0)
    assert up == pytest.approx([0.0, 0.3, 0.6, 0.9, 1.0, 1.0])  # first epoch: inf -> 1.0 is progress
    down = _stress_trace([5, 4, 3], [0.1, 0.2, 0.3], rho=0.5)
    assert down == [0.0, 0.0, 0.0]


def test_epsilon_thresholds_make_small_gains_count_as_stagnation():
    trace = _stress_trace([1.0, 0.99, 0.5], [0.5, 0.6, 0.7], theta=0.01, rho=0.001, eps_loss=0.05)
    assert trace == pytest.approx([0.0, 0.01, 0.009])


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8))
        self.head = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 6), nn.Linear(6, 3))


def _pdo(model, **knobs):
    from sal.methods.sal import SALSpec

    return PDO(model, SALSpec(**knobs), generator=torch.Generator().manual_seed(0))


def _feed(pdo, seq):
    return [pdo.end_epoch(epoch, loss, acc) for epoch, (loss, acc) in enumerate(seq, start=1)]


STALL = (1.0, 0.5)


def test_paper_defaults_deform_after_two_stagnant_epochs_and_reset():
    torch.manual_seed(0)
    pdo = _pdo(_Net(), warmup=0, recovery=False)
    # epoch 1 is progress (inf -> 1), then stalls: S = 0.005 (not > S_noise), 0.01 (>= S_yield)
    events = _feed(pdo, [STALL, STALL, STALL, STALL])
    assert [e.stress for e in events] == pytest.approx([0.0, 0.005, 0.01, 0.005])
    assert [e.noise for e in events] == [False, False, True, False]
    assert [e.deform for e in events] == [False, False, True, False]
    assert pdo.signal.stress == pytest.approx(0.005)  # reset to 0 at epoch 3, +theta at epoch 4


def test_yield_strict_uses_algorithm_1s_greater_than():
    pdo = _pdo(_Net(), warmup=0, recovery=False, yield_strict=True)
    events = _feed(pdo, [STALL] * 4)
    assert [e.deform for e in events] == [False, False, False, True]  # 0.01 is not > 0.01; 0.015 is


def test_warmup_gates_interventions_but_stress_accumulates():
    pdo = _pdo(_Net(), warmup=3, recovery=False)
    events = _feed(pdo, [STALL] * 5)
    assert [e.stress for e in events] == pytest.approx([0.0, 0.005, 0.01, 0.015, 0.005])
    assert [e.deform for e in events] == [False, False, False, True, False]


def test_warmup_without_stress_holds_it_at_zero():
    pdo = _pdo(_Net(), warmup=3, recovery=False, stress_in_warmup=False)
    events = _feed(pdo, [STALL] * 6)
    assert [e.stress for e in events] == pytest.approx([0.0, 0.0, 0.0, 0.005, 0.01, 0.005])
    assert [e.deform for e in events] == [False] * 4 + [True, False]


def test_noise_std_matches_eq2_on_a_large_tensor():
    w = nn.Linear(1000, 1000, bias=False)
    before = w.weight.detach().clone()
    pdo = _pdo(w, s_noise=0.0, s_yield=0.5, delta=1e-3, lambda_=0.1, warmup=0, recovery=False)
    stress = 0.2
    expected = min(1.0, stress / 0.5) * (1e-3 + 0.1 * stress)
    assert pdo.noise_std(stress) == pytest.approx(expected)
    pdo.act.noise(pdo.noise_std(stress))
    diff = w.weight.detach() - before
    # 1e6 samples: the sample std is within ~0.1% of the truth
    assert diff.std().item() == pytest.approx(expected, rel=0.01)
    assert abs(diff.mean().item()) < 5 * expected / 1000


def test_no_noise_at_or_below_s_noise():
    net = _Net()
    before = [p.detach().clone() for p in net.parameters()]
    pdo = _pdo(net, warmup=0, recovery=False, s_noise=0.005, s_yield=0.02)
    events = _feed(pdo, [STALL, STALL])  # S = 0, 0.005: never > S_noise
    assert not any(e.noise or e.deform for e in events)
    assert all(torch.equal(b, p) for b, p in zip(before, net.parameters()))


def test_deformation_touches_only_the_last_k_layers_with_eq3():
    net = _Net()
    layers = last_trainable_layers(net, 3)
    assert layers == [net.head[0], net.head[1], net.head[2]]
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    act = Interventions(list(net.parameters()), [p for m in layers for p in m.parameters()],
                        torch.Generator().manual_seed(7))
    act.deform(0.9, 0.02)
    # Recreate the same draws: one flat standard normal over the deformed tensors, in order.
    deformed = [n for n, _ in net.named_parameters() if n.startswith("head")]
    noise = torch.randn(sum(before[n].numel() for n in deformed), generator=torch.Generator().manual_seed(7))
    offset = 0
    for name, p in net.named_parameters():
        if name in deformed:
            z = noise[offset:offset + p.numel()].view_as(p)
            offset += p.numel()
            assert torch.allclose(p, 0.9 * before[name] + 0.02 * z, atol=1e-7)
        else:
            assert torch.equal(p, before[name]), name  # bit-identical


def test_recovery_restores_the_yield_point_exactly_when_no_progress_follows():
    net = _Net()
    # no noise (Delta = lambda = 0), so the yield point is the state before epoch 3
    pdo = _pdo(net, warmup=0, recovery=True, recovery_patience=2, delta=0.0, lambda_=0.0)
    _feed(pdo, [STALL, STALL])
    yield_point = [p.detach().clone() for p in net.parameters()]
    assert pdo.end_epoch(3, 1.0, 0.5).deform
    assert not all(torch.equal(a, p) for a, p in zip(yield_point, net.parameters()))
    e4 = pdo.end_epoch(4, 1.0, 0.5)  # no progress yet, patience 2
    assert not e4.revert
    e5 = pdo.end_epoch(5, 1.0, 0.5)  # patience over without progress: back to the yield point
    assert e5.revert and not e5.deform and not e5.noise
    assert all(torch.equal(a, p) for a, p in zip(yield_point, net.parameters()))
    assert pdo.signal.stress == 0.0


def test_recovery_keeps_a_deformation_that_helps():
    net = _Net()
    pdo = _pdo(net, warmup=0, recovery=True, recovery_patience=2)
    _feed(pdo, [STALL, STALL, STALL])  # deform at epoch 3 with loss 1.0
    after = [p.detach().clone() for p in net.parameters()]
    e4 = pdo.end_epoch(4, 0.8, 0.6)  # progress: the watch ends
    e5 = pdo.end_epoch(5, 0.9, 0.6)
    assert not e4.revert and not e5.revert
    assert all(torch.equal(a, p) for a, p in zip(after, net.parameters()))


def test_revert_restores_exact_pre_deformation_weights():
    net = _Net()
    params = list(net.parameters())
    act = Interventions(params, params[-2:], torch.Generator().manual_seed(1))
    before = [p.detach().clone() for p in params]
    act.deform(0.9, 0.5)
    act.revert()
    assert all(torch.equal(b, p) for b, p in zip(before, params))


def test_interventions_are_in_place():
    net = _Net()
    ptrs = [p.data_ptr() for p in net.parameters()]
    pdo = _pdo(net, warmup=0, recovery=True)
    _feed(pdo, [STALL] * 8)
    assert ptrs == [p.data_ptr() for p in net.parameters()]
    assert math.isfinite(sum(p.sum().item() for p in net.parameters()))


def test_deformed_layers_skip_normalisation_layers():
    from sal.spec.config import ModelSpec
    from sal.training.models import build_model

    resnet = build_model(ModelSpec(name="resnet18", width=4), (3, 8, 8), 10)
    chosen = last_trainable_layers(resnet, 3)
    # old main chose the last BatchNorm (gamma shrunk to 0.9 plus noise) among the three
    assert [type(m).__name__ for m in chosen] == ["Conv2d", "Conv2d", "Linear"]
    assert chosen[-1] is resnet[-1]  # the head
    for name in ("cnn", "mlp"):
        net = build_model(ModelSpec(name=name, width=8), (1, 8, 8), 10)
        assert [type(m).__name__ for m in last_trainable_layers(net, 3)] == ["Linear"] * 3
