"""Connectivity between solutions: the loss barrier on the straight line, the barrier on a Fourier path
optimised around it (FourierPathFinder of Yu & Morozov 2026), and kernel PCA of final weights. Pure torch
(and scikit-learn for the kernel PCA).

Every point of a path is measured the same way: the weights are set, BatchNorm's running statistics are
recomputed from training batches (an interpolated network's statistics are not the interpolation of the
ends'), then the mean loss on ``batches`` is taken in eval mode. The barrier of a path is the largest
excess of its loss over the straight interpolation of the end losses; both paths use one grid of t, so
their barriers compare.
"""

from __future__ import annotations

import copy
import math
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from .sharpness import Batches, LossFn, _unflatten, flat_weights, loss_at, trainable

__all__ = ["PathLosses", "FourierPath", "path_grid", "linear_barrier", "fourier_path", "kernel_pca"]

_NORMS = (nn.modules.batchnorm._BatchNorm,)


class PathLosses(NamedTuple):
    ts: torch.Tensor  # (points,) from 0 to 1
    losses: torch.Tensor  # (points,)
    barrier: float  # max over t of losses - ((1 - t) losses[0] + t losses[-1]); >= 0 by construction


class FourierPath(NamedTuple):
    path: PathLosses  # the best path seen (the straight line if nothing beat it)
    coefficients: torch.Tensor  # (modes, n_params): b_n of the best path
    history: list[float]  # the barrier at each evaluation, the line's first


def path_grid(points: int) -> torch.Tensor:
    if points < 3:
        raise ValueError(f"points={points}: a path needs at least 3 points (both ends and one between)")
    return torch.linspace(0.0, 1.0, points)


def _barrier(ts: torch.Tensor, losses: torch.Tensor) -> float:
    # lerp is exact for equal ends ((1 - t) a + t a can miss a by one ulp and show a barrier of 6e-8)
    line = torch.lerp(losses[0].expand_as(ts), losses[-1].expand_as(ts), ts)
    return max(float((losses - line).max()), 0.0)  # the ends are on the line: never below 0


@torch.no_grad()
def _recompute_bn(work: nn.Module, params: dict[str, torch.Tensor], bn_batches: Batches) -> None:
    """Running statistics of every BatchNorm as the exact average over ``bn_batches`` at ``params``."""
    norms = [m for m in work.modules() if isinstance(m, _NORMS) and m.track_running_stats]
    if not norms:
        return
    saved = [(m, m.momentum, m.training) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average, so the batch order does not matter
        m.train()
    try:
        for x, _ in bn_batches:
            functional_call(work, params, (x,))
    finally:
        for m, momentum, training in saved:
            m.momentum, m.training = momentum, training


def _point_loss(work: nn.Module, loss_fn: LossFn, batches: Batches, bn_batches: Batches,
                flat: torch.Tensor) -> torch.Tensor:
    params = _unflatten(work, flat)
    work.eval()  # the BN recompute switches only the norm layers to train: dropout stays off
    _recompute_bn(work, params, bn_batches)
    return loss_at(work, loss_fn, batches, params)


def _losses_along(work, loss_fn, batches, bn_batches, point, ts) -> PathLosses:
    losses = torch.stack([_point_loss(work, loss_fn, batches, bn_batches, point(t)) for t in ts.tolist()]).cpu()
    return PathLosses(ts, losses, _barrier(ts, losses))


def _ends(model_a: nn.Module, model_b: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    wa, wb = flat_weights(model_a), flat_weights(model_b)
    if wa.shape != wb.shape:
        raise ValueError(f"the two models differ in size ({wa.numel()} vs {wb.numel()} weights); "
                         "barriers need two solutions of one architecture")
    return wa, wb.to(wa.device)


def linear_barrier(model_a: nn.Module, model_b: nn.Module, loss_fn: LossFn, batches: Batches, *,
                   points: int = 25, bn_batches: Batches | None = None) -> PathLosses:
    """Losses along w(t) = (1 - t) w_a + t w_b and the barrier (BatchNorm statistics recomputed at each
    point from ``bn_batches``, default ``batches``). Neither model is changed."""
    ts = path_grid(points)
    wa, wb = _ends(model_a, model_b)
    work = copy.deepcopy(model_a)
    return _losses_along(work, loss_fn, batches, bn_batches or batches, lambda t: torch.lerp(wa, wb, t), ts)


def _length2(wa, wb, coeffs, ts) -> torch.Tensor:
    """sum_i |w(t_{i+1}) - w(t_i)|^2 through the Gram matrix of [w_b - w_a, b_1..b_N], so the (points x
    n_params) path is never materialised."""
    n = torch.arange(1, len(coeffs) + 1, device=ts.device, dtype=ts.dtype)
    basis = torch.cat([ts[:, None], torch.sin(math.pi * ts[:, None] * n)], 1)  # (points, 1 + modes)
    steps = basis[1:] - basis[:-1]
    vectors = torch.cat([(wb - wa)[None], coeffs], 0)
    gram = vectors @ vectors.T
    return torch.einsum("ip,pq,iq->", steps, gram, steps)


def fourier_path(model_a: nn.Module, model_b: nn.Module, loss_fn: LossFn, batches: Batches, *,
                 modes: int = 10, train_points: int = 50, points: int = 25, steps: int = 100, lr: float = 1e-2,
                 length_penalty: float = 1e-4, eval_every: int = 10, bn_batches: Batches | None = None
                 ) -> FourierPath:
    """FourierPathFinder: w(t) = (1 - t) w_a + t w_b + sum_n b_n sin(n pi t), b_n fitted by Adam to the
    summed loss at ``train_points`` values of t (one training batch per step, in turn) plus
    ``length_penalty`` * sum |dw|^2.

    b_n start at 0 (the straight line); every ``eval_every`` steps the path is measured exactly like
    ``linear_barrier`` on its ``points`` grid and the best path seen is kept, so the result's barrier is
    never above the line's. While fitting, BatchNorm normalises with batch statistics (the usual practice
    for curve fitting; recomputing running statistics per step would cost a pass per point).
    """
    ts, train_ts = path_grid(points), path_grid(train_points)
    wa, wb = _ends(model_a, model_b)
    device = wa.device
    work = copy.deepcopy(model_a)
    for p in work.parameters():
        p.requires_grad_(False)  # the path's coefficients are the only thing trained
    names = list(trainable(model_a))
    for name, p in work.named_parameters():
        p.requires_grad_(name in names)
    bn = bn_batches or batches
    coeffs = torch.zeros(modes, wa.numel(), device=device, requires_grad=True)
    n = torch.arange(1, modes + 1, device=device, dtype=torch.float32)
    point = lambda c: (lambda t: torch.lerp(wa, wb, t) + (torch.sin(math.pi * t * n) @ c))

    best = _losses_along(work, loss_fn, batches, bn, point(coeffs.detach()), ts)
    best_coeffs, history = coeffs.detach().clone(), [best.barrier]
    opt = torch.optim.Adam([coeffs], lr=lr)
    interior = train_ts[1:-1].tolist()  # the ends do not move: their loss has no gradient in b_n
    for step in range(1, steps + 1):
        x, y = batches[(step - 1) % len(batches)]
        opt.zero_grad(set_to_none=True)
        _set_norm_train(work)
        for t in interior:  # one backward per t keeps one forward graph in memory, not all
            params = _unflatten(work, point(coeffs)(t))
            loss_fn(functional_call(work, params, (x,)).float(), y).backward()
        (length_penalty * _length2(wa, wb, coeffs, train_ts.to(device))).backward()
        opt.step()
        if step % eval_every == 0 or step == steps:
            found = _losses_along(work, loss_fn, batches, bn, point(coeffs.detach()), ts)
            history.append(found.barrier)
            if found.barrier < best.barrier:
                best, best_coeffs = found, coeffs.detach().clone()
    return FourierPath(best, best_coeffs.cpu(), history)


def _set_norm_train(model: nn.Module) -> None:
    """Eval mode except the norm layers (dropout off: the global RNG is never drawn)."""
    model.eval()
    for m in model.modules():
        if isinstance(m, _NORMS):
            m.train()


def kernel_pca(weights: torch.Tensor | np.ndarray, *, components: int = 2) -> np.ndarray:
    """Final weights of several models (m, n_params) -> (m, components) coordinates of an RBF kernel PCA
    with gamma = 1 / n_params (Yu & Morozov 2026), which separates solution sets that PCA mixes."""
    from sklearn.decomposition import KernelPCA

    w = np.asarray(weights.detach().cpu() if isinstance(weights, torch.Tensor) else weights, dtype=np.float64)
    if w.ndim != 2 or len(w) < 2:
        raise ValueError(f"kernel_pca needs (models, n_params) with at least 2 models, got shape {w.shape}")
    k = min(components, len(w) - 1)
    return KernelPCA(n_components=k, kernel="rbf", gamma=1.0 / w.shape[1]).fit_transform(w)
