"""Sharpness, slices, trajectories and connectivity against exact answers (sal.landscape)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from sal.core.names import EVENT_DEFORM
from sal.landscape.connectivity import fourier_path, kernel_pca, linear_barrier
from sal.landscape.sharpness import (
    Projector,
    adaptive_sharpness,
    filter_normalized_direction,
    flat_weights,
    hessian_trace,
    loss_at,
    slice_2d,
    top_eigenvalue,
    trajectory_pca,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


class Quadratic(nn.Module):
    """Loss 0.5 w^T A w whatever the input: its Hessian is A everywhere."""

    def __init__(self, a: torch.Tensor):
        super().__init__()
        self.register_buffer("a", a)
        self.w = nn.Parameter(torch.linspace(-1, 1, len(a)))

    def forward(self, x):
        return self.w.expand(len(x), -1)


def quad_loss(a):
    return lambda out, y: 0.5 * ((out @ a) * out).sum(1).mean()


def known_matrix(d=6):
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen(3)))
    eig = torch.tensor([5.0, 2.0, 1.0, 0.5, -0.3, 0.1])[:d]
    return q @ torch.diag(eig) @ q.T, eig


BATCH = [(torch.zeros(4, 1), torch.zeros(4, dtype=torch.long))]


def test_quadratic_trace_and_top_eigenvalue_match_the_known_hessian():
    a, eig = known_matrix()
    model = Quadratic(a)
    est = hessian_trace(model, quad_loss(a), BATCH, probes=200, generator=gen(1))
    assert est.se > 0
    assert abs(est.value - eig.sum().item()) < 3 * est.se
    top = top_eigenvalue(model, quad_loss(a), BATCH, iters=500, tol=1e-8, generator=gen(1))
    assert top.converged
    assert top.value == pytest.approx(5.0, rel=1e-4)


def test_hutchinson_is_exact_on_a_diagonal_hessian():
    a = torch.diag(torch.tensor([1.0, 2.0, 3.0]))  # v^T A v = tr(A) for every Rademacher v: zero variance
    est = hessian_trace(Quadratic(a), quad_loss(a), BATCH, probes=8, generator=gen())
    assert est.value == pytest.approx(6.0, abs=1e-5) and est.se == pytest.approx(0.0, abs=1e-5)


def tiny_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 3))
    net.train()
    with torch.no_grad():  # non-trivial running statistics, so eval mode differs from train mode
        net(torch.randn(64, 4, generator=gen(9)) * 2 + 1)
    return net


def data(n=40, seed=5, d=4, classes=3, per=20):
    g = gen(seed)
    x = torch.randn(n, d, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return [(x[i:i + per], y[i:i + per]) for i in range(0, n, per)]


def exact_hessian(net, batches):
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for p in net.parameters()]
    sizes = [p.numel() for p in net.parameters()]
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    net.eval()

    def loss(flat):
        params = {n: t.view(s) for n, t, s in zip(names, flat.split(sizes), shapes)}
        return F.cross_entropy(functional_call(net, params, (x,)), y)

    h = torch.autograd.functional.hessian(loss, flat_weights(net))
    net.train()
    return h


def test_tiny_network_matches_autograd_hessian_in_eval_mode():
    net, batches = tiny_net(), data()
    h = exact_hessian(net, batches)
    est = hessian_trace(net, F.cross_entropy, batches, probes=300, generator=gen(2))
    assert abs(est.value - torch.trace(h).item()) < 3 * est.se
    eigs = torch.linalg.eigvalsh(h)
    largest = eigs[eigs.abs().argmax()].item()
    top = top_eigenvalue(net, F.cross_entropy, batches, iters=1000, tol=1e-9, generator=gen(2))
    assert top.value == pytest.approx(largest, rel=1e-3)
    assert net.training and net[1].training  # the model's own mode is restored


def test_determinism_and_the_global_rng_is_untouched():
    net, batches = tiny_net(), data()
    before = torch.get_rng_state()
    runs = [(hessian_trace(net, F.cross_entropy, batches, probes=5, generator=gen(7)),
             top_eigenvalue(net, F.cross_entropy, batches, iters=5, generator=gen(7)),
             adaptive_sharpness(net, F.cross_entropy, batches, rho=0.05, samples=4, generator=gen(7)),
             slice_2d(net, F.cross_entropy, batches, steps=3, generator=gen(7)).losses)
            for _ in range(2)]
    assert runs[0][:3] == runs[1][:3]
    assert torch.equal(runs[0][3], runs[1][3])
    assert torch.equal(torch.get_rng_state(), before)
    other = hessian_trace(net, F.cross_entropy, batches, probes=5, generator=gen(8))
    assert other != runs[0][0]


def test_adaptive_sharpness_of_a_quadratic_matches_its_expectation():
    # E[0.5 (w + |w| eps)^T A (w + |w| eps)] - 0.5 w^T A w = 0.5 rho^2 sum_i A_ii w_i^2
    a = torch.diag(torch.tensor([1.0, 4.0, 2.0]))
    model = Quadratic(a)
    est = adaptive_sharpness(model, quad_loss(a), BATCH, rho=0.1, samples=400, generator=gen())
    w = model.w.detach()
    exact = 0.5 * 0.01 * (torch.diag(a) * w**2).sum().item()
    assert abs(est.value - exact) < 3 * est.se


def test_filter_normalized_direction_scales_each_filter_and_zeroes_biases_and_norms():
    net = tiny_net()
    d = filter_normalized_direction(net, gen())
    w = net[0].weight.detach()
    assert torch.allclose(d["0.weight"].norm(dim=1), w.norm(dim=1), rtol=1e-5)
    for name in ("0.bias", "1.weight", "1.bias", "3.bias"):
        assert torch.count_nonzero(d[name]) == 0
    conv = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3))
    d = filter_normalized_direction(conv, gen())
    assert torch.allclose(d["0.weight"].flatten(1).norm(dim=1), conv[0].weight.detach().flatten(1).norm(dim=1))
    assert torch.count_nonzero(d["1.weight"]) == 0


def test_a_slice_has_the_right_shape_and_its_centre_is_the_loss_at_w():
    net, batches = tiny_net(), data()
    centre = loss_at(net, F.cross_entropy, batches).item()
    s2 = slice_2d(net, F.cross_entropy, batches, steps=5, span=1.0, generator=gen())
    assert s2.losses.shape == (5, 5) and s2.alphas.shape == s2.betas.shape == (5,)
    assert s2.losses[2, 2].item() == pytest.approx(centre, abs=1e-6)
    assert s2.losses.std() > 0
    with pytest.raises(ValueError, match="odd"):
        slice_2d(net, F.cross_entropy, batches, steps=4, generator=gen())


def test_projector_keeps_small_vectors_and_roughly_keeps_distances_of_large_ones():
    small = torch.arange(5.0)
    assert torch.equal(Projector(5, dim=8)(small), small)
    g = gen()
    a, b = torch.randn(5000, generator=g), torch.randn(5000, generator=g)
    proj = Projector(5000, dim=1024, seed=3, chunk=999)
    assert torch.equal(proj(a), proj(a))  # one fixed matrix
    ratio = (proj(a) - proj(b)).norm() / (a - b).norm()
    assert 0.9 < ratio.item() < 1.1


def test_trajectory_pca_of_a_straight_walk_is_one_axis():
    direction = torch.tensor([1.0, 2.0, -1.0, 0.5])
    snaps = torch.arange(6.0)[:, None] * direction
    coords, ratio = trajectory_pca(snaps)
    assert coords.shape == (6, 3) and ratio.shape == (3,)
    assert ratio[0].item() == pytest.approx(1.0, abs=1e-6)
    steps = coords[1:, 0] - coords[:-1, 0]
    assert torch.allclose(steps.abs(), torch.full((5,), direction.norm().item()), atol=1e-5)


def trained(seed, batches, epochs=60):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(epochs):
        for x, y in batches:
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
    return net


def test_barriers_self_zero_pairs_nonnegative_and_fourier_never_above_the_line():
    batches = data(n=80, per=40)
    a, b = trained(1, batches), trained(2, batches)
    wa = flat_weights(a)
    itself = linear_barrier(a, a, F.cross_entropy, batches, points=9)
    assert itself.barrier == 0.0
    assert torch.allclose(itself.losses, itself.losses[0].expand(9))
    line = linear_barrier(a, b, F.cross_entropy, batches, points=9)
    assert line.barrier > 0.05  # two seeds of a ReLU net: a real barrier on the line
    assert line.ts.shape == line.losses.shape == (9,)
    # The ends are measured with freshly recomputed BN statistics, like every point
    assert line.losses[0].item() == pytest.approx(linear_barrier(a, a, F.cross_entropy, batches, points=3)
                                                  .losses[0].item(), abs=1e-6)
    found = fourier_path(a, b, F.cross_entropy, batches, modes=3, train_points=12, points=9, steps=40, lr=0.05,
                         eval_every=5)
    assert found.history[0] == pytest.approx(line.barrier, abs=1e-6)  # starts at the line
    assert found.path.barrier <= line.barrier
    assert found.path.barrier < 0.8 * line.barrier  # and the fit does lower it
    assert found.path.barrier == min(found.history)
    assert torch.equal(flat_weights(a), wa)  # the models are not changed


def test_kernel_pca_separates_two_clusters_of_solutions():
    g = gen()
    centre = torch.randn(50, generator=g) * 10
    w = torch.cat([centre + 0.1 * torch.randn(3, 50, generator=g), -centre + 0.1 * torch.randn(3, 50, generator=g)])
    coords = kernel_pca(w, components=2)
    assert coords.shape == (6, 2)
    first = coords[:, 0]
    assert np.all(np.sign(first[:3]) == np.sign(first[0])) and np.all(np.sign(first[3:]) == -np.sign(first[0]))
    assert math.isclose(abs(first[:3].mean()), abs(first[3:].mean()), rel_tol=0.2)


def test_landscape_figures_draw_what_they_are_given():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from sal.report.landscape_plots import sharpness_figure, slice_figure, trajectory_figure

    net, batches = tiny_net(), data()
    fig = slice_figure(slice_2d(net, F.cross_entropy, batches, steps=5, generator=gen()))
    assert len(fig.axes) == 3  # contour, its colour bar, surface
    plt.close(fig)
    coords, ratio = trajectory_pca(torch.randn(8, 20, generator=gen()))
    fig = trajectory_figure(coords.numpy(), events={EVENT_DEFORM: [3, 6]}, explained=ratio.tolist())
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert labels == ["deform", "final"]
    plt.close(fig)
    hist = pd.DataFrame({"method": ["sal"] * 4 + ["base"] * 4, "seed": 1, "epoch": [1, 2, 3, 4] * 2,
                         "sharpness/trace": [5.0, 4, 6, 3, 5, 5, 5, 5], EVENT_DEFORM: [0, 0, 1, 0] + [0] * 4})
    fig = sharpness_figure(hist)
    ax = fig.axes[0]
    marked = [c for c in ax.collections if c.get_label() == "deform"][0]
    assert marked.get_offsets().tolist() == [[3.0, 6.0]]
    plt.close(fig)
    with pytest.raises(ValueError, match="analysis.sharpness"):
        sharpness_figure(hist.assign(**{"sharpness/trace": float("nan")}))
