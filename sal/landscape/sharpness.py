"""Sharpness and loss landscape of a trained model: Hessian trace and top eigenvalue, adaptive sharpness,
filter-normalised slices and the weight trajectory in 3-D PCA. Pure torch.

Everything is measured in eval mode (BatchNorm uses its running statistics, dropout is off), in fp32, on
a fixed list of training batches ``[(x, y), ...]`` that the caller draws once with a seeded generator, so
two models are measured on the same data. The loss over ``batches`` is the sample-weighted mean of
``loss_fn(logits, y)`` (a mean-reduced loss). Randomness comes only from the ``generator`` passed in: the
global RNG is never touched, and the model's weights and mode are left as they were.
Connectivity between solutions (barriers, Fourier paths, kernel PCA) lives in ``sal.landscape.connectivity``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import NamedTuple

import torch
from torch import nn
from torch.func import functional_call

__all__ = [
    "Batches", "LossFn", "Estimate", "Eigen", "Slice2D",
    "eval_mode", "trainable", "flat_weights", "loss_at", "hvp",
    "hessian_trace", "top_eigenvalue", "adaptive_sharpness",
    "filter_normalized_direction", "slice_2d",
    "Projector", "trajectory_pca",
]

Batches = list[tuple[torch.Tensor, torch.Tensor]]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Estimate(NamedTuple):
    """A Monte-Carlo estimate and its standard error (sd / sqrt(samples))."""

    value: float
    se: float


class Eigen(NamedTuple):
    value: float
    iterations: int
    converged: bool


class Slice2D(NamedTuple):
    alphas: torch.Tensor  # (steps,) along the first direction
    betas: torch.Tensor  # (steps,) along the second
    losses: torch.Tensor  # (steps, steps): losses[i, j] at w + alphas[i] d1 + betas[j] d2


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode for the duration; every submodule's own mode restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters the landscape is a function of, by name (frozen ones are part of the function)."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def flat_weights(model: nn.Module) -> torch.Tensor:
    """The trainable parameters as one fp32 vector (a copy), in ``named_parameters`` order."""
    return torch.cat([p.detach().reshape(-1).float() for p in trainable(model).values()])


def _unflatten(model: nn.Module, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    out, i = {}, 0
    for name, p in trainable(model).items():
        out[name] = flat[i:i + p.numel()].view_as(p).to(p.dtype)
        i += p.numel()
    return out


def _total(batches: Batches) -> int:
    if not batches:
        raise ValueError("batches is empty; pass at least one (x, y) pair of training data")
    return sum(len(y) for _, y in batches)


@torch.no_grad()
def loss_at(model: nn.Module, loss_fn: LossFn, batches: Batches, params: dict[str, torch.Tensor] | None = None
            ) -> torch.Tensor:
    """Mean loss over ``batches`` in eval mode, at the model's weights or at ``params`` (a 0-d tensor)."""
    n = _total(batches)
    with eval_mode(model):
        total = torch.zeros((), device=batches[0][0].device)
        for x, y in batches:
            logits = model(x) if params is None else functional_call(model, params, (x,))
            total += loss_fn(logits.float(), y).float() * (len(y) / n)
    return total


def gradient_norm(model: nn.Module, loss_fn: LossFn, batches: Batches) -> float:
    """The L2 norm of the gradient of the mean loss over ``batches`` in eval mode: the paper's measure of
    sharpness per epoch (Fig. 7). Nothing is accumulated into ``.grad``, so training is untouched."""
    n = _total(batches)
    params = list(trainable(model).values())
    total = [torch.zeros_like(p) for p in params]
    with eval_mode(model):
        for x, y in batches:
            loss = loss_fn(model(x).float(), y) * (len(y) / n)
            for acc, g in zip(total, torch.autograd.grad(loss, params, allow_unused=True)):
                if g is not None:
                    acc += g
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(total))).item()


def _grads_with_graph(model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, weight: float):
    params = list(trainable(model).values())
    loss = loss_fn(model(x).float(), y) * weight
    return params, torch.autograd.grad(loss, params, create_graph=True)


def hvp(model: nn.Module, loss_fn: LossFn, batches: Batches, vector: list[torch.Tensor]) -> list[torch.Tensor]:
    """Hessian-vector product H v of the mean loss over ``batches`` (double backward), per parameter."""
    n = _total(batches)
    out = [torch.zeros_like(v) for v in vector]
    with eval_mode(model):
        for x, y in batches:
            params, grads = _grads_with_graph(model, loss_fn, x, y, len(y) / n)
            torch._foreach_add_(out, torch.autograd.grad(grads, params, grad_outputs=vector))
    return out


def _rademacher(like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    signs = torch.randint(0, 2, like.shape, generator=generator, device=generator.device, dtype=torch.int8)
    return (signs.to(like.device, like.dtype) * 2 - 1)


def hessian_trace(model: nn.Module, loss_fn: LossFn, batches: Batches, *, probes: int = 64,
                  generator: torch.Generator) -> Estimate:
    """Hutchinson's estimate of Tr(H) = E[v^T H v] over Rademacher probes v, with its standard error.

    The gradient graph of each batch is built once and reused by every probe; the probes are re-drawn
    from the same generator state for each batch (instead of kept), so memory is one probe, not all.
    """
    if probes < 2:
        raise ValueError(f"probes={probes}: a standard error needs at least 2 probes")
    n = _total(batches)
    start = generator.get_state()
    quad = torch.zeros(probes, device=batches[0][0].device)
    with eval_mode(model):
        for x, y in batches:
            generator.set_state(start)
            params, grads = _grads_with_graph(model, loss_fn, x, y, len(y) / n)
            for i in range(probes):
                v = [_rademacher(p, generator) for p in params]
                hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=i < probes - 1)
                quad[i] += sum((h * u).sum() for h, u in zip(hv, v))
    mean, sd = quad.mean().item(), quad.std().item()
    return Estimate(mean, sd / math.sqrt(probes))


def _dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a, b))


def top_eigenvalue(model: nn.Module, loss_fn: LossFn, batches: Batches, *, iters: int = 100, tol: float = 1e-3,
                   generator: torch.Generator) -> Eigen:
    """The Hessian's eigenvalue of largest magnitude by power iteration on HVPs (at a minimum: the top one).

    Stops when the Rayleigh quotient changes by less than ``tol`` relative to its size.
    """
    params = list(trainable(model).values())
    v = [torch.randn(p.shape, generator=generator, device=generator.device).to(p.device, p.dtype) for p in params]
    norm = torch.sqrt(_dot(v, v))
    v = [u / norm for u in v]
    value = math.nan
    for it in range(1, iters + 1):
        hv = hvp(model, loss_fn, batches, v)
        new = _dot(hv, v).item()  # Rayleigh quotient (v has unit norm): one sync per iteration
        norm = torch.sqrt(_dot(hv, hv))
        if norm.item() == 0:
            return Eigen(0.0, it, True)
        v = [h / norm for h in hv]
        if math.isfinite(value) and abs(new - value) <= tol * max(abs(new), 1e-12):
            return Eigen(new, it, True)
        value = new
    return Eigen(value, iters, False)


def adaptive_sharpness(model: nn.Module, loss_fn: LossFn, batches: Batches, *, rho: float = 0.01,
                       samples: int = 16, generator: torch.Generator) -> Estimate:
    """Average adaptive sharpness E[L(w + |w| * eps)] - L(w), eps ~ N(0, rho^2), with its standard error.

    Scaling the noise by |w| makes it invariant to the layer-wise rescalings that leave the function
    unchanged (Kwon et al. 2021), which is what makes sharpness comparable across methods.
    """
    if samples < 2:
        raise ValueError(f"samples={samples}: a standard error needs at least 2 samples")
    base = loss_at(model, loss_fn, batches)
    weights = {k: p.detach() for k, p in trainable(model).items()}
    rises = []
    for _ in range(samples):
        moved = {k: w + w.abs() * torch.randn(w.shape, generator=generator, device=generator.device).to(w.device)
                 * rho for k, w in weights.items()}
        rises.append(loss_at(model, loss_fn, batches, moved) - base)
    rise = torch.stack(rises)
    return Estimate(rise.mean().item(), rise.std().item() / math.sqrt(samples))


def filter_normalized_direction(model: nn.Module, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A random direction with each filter (output row of a weight) scaled to that filter's norm
    (Li et al. 2018); biases and normalisation parameters (1-D) get zero, so slices of nets with
    different weight scales are comparable."""
    out = {}
    for name, p in trainable(model).items():
        d = torch.randn(p.shape, generator=generator, device=generator.device).to(p.device, torch.float32)
        if p.dim() <= 1:
            out[name] = torch.zeros_like(d)
            continue
        w = p.detach().float()
        dims = tuple(range(1, p.dim()))
        scale = (torch.linalg.vector_norm(w, dim=dims, keepdim=True)
                 / torch.linalg.vector_norm(d, dim=dims, keepdim=True).clamp_min(1e-12))
        out[name] = d * scale
    return out


def _grid(steps: int, span: float, device) -> torch.Tensor:
    if steps < 3 or steps % 2 == 0:
        raise ValueError(f"steps={steps}: use an odd number >= 3, so the grid has w itself at its centre")
    k = steps // 2
    return torch.arange(-k, k + 1, device=device, dtype=torch.float32) * (span / k)  # centre exactly 0


def slice_2d(model: nn.Module, loss_fn: LossFn, batches: Batches, *, steps: int = 21, span: float = 1.0,
             generator: torch.Generator) -> Slice2D:
    """Losses on the plane w + alpha d1 + beta d2 of two filter-normalised directions (paper Fig. 8)."""
    d1 = filter_normalized_direction(model, generator)
    d2 = filter_normalized_direction(model, generator)
    weights = {k: p.detach() for k, p in trainable(model).items()}
    grid = _grid(steps, span, weights[next(iter(weights))].device)
    values = grid.tolist()
    losses = torch.stack([torch.stack([
        loss_at(model, loss_fn, batches, {k: w + (a * d1[k] + b * d2[k]).to(w.dtype) for k, w in weights.items()})
        for b in values]) for a in values])
    return Slice2D(grid.cpu(), grid.cpu().clone(), losses.cpu())


class Projector:
    """Down-projects flat weight vectors to ``dim`` numbers by one fixed seeded Gaussian matrix
    (Johnson-Lindenstrauss: distances, hence PCA, are kept approximately); vectors of at most ``dim``
    numbers are kept as they are. The matrix is regenerated in chunks on each call, never stored whole."""

    def __init__(self, n: int, *, dim: int = 512, seed: int = 0, chunk: int = 1 << 16):
        self.n, self.dim, self.seed, self.chunk = n, dim, seed, chunk

    def __call__(self, flat: torch.Tensor) -> torch.Tensor:
        flat = flat.detach().float().reshape(-1)
        if flat.numel() != self.n:
            raise ValueError(f"expected {self.n} weights, got {flat.numel()}")
        if self.n <= self.dim:
            return flat.cpu().clone()
        g = torch.Generator(flat.device).manual_seed(self.seed)
        out = torch.zeros(self.dim, device=flat.device)
        for start in range(0, self.n, self.chunk):
            part = flat[start:start + self.chunk]
            out += part @ torch.randn(len(part), self.dim, generator=g, device=flat.device)
        return (out / math.sqrt(self.dim)).cpu()


def trajectory_pca(snapshots: torch.Tensor, *, k: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Snapshots (T, d) -> coordinates (T, k) on the first k principal axes and their explained variance
    ratios (k,). Signs are fixed (each axis's largest loading positive) so reruns draw the same picture."""
    x = snapshots.double() - snapshots.double().mean(0)
    _, s, vt = torch.linalg.svd(x, full_matrices=False)
    vt = vt[:k]
    signs = torch.sign(vt.gather(1, vt.abs().argmax(1, keepdim=True))).squeeze(1)
    signs[signs == 0] = 1
    vt = vt * signs[:, None]
    coords = x @ vt.T
    total = (s**2).sum()
    ratio = (s[:k] ** 2) / total if total > 0 else torch.zeros(min(k, len(s)), dtype=torch.float64)
    if coords.shape[1] < k:  # fewer snapshots than axes: pad, so callers always get k columns
        coords = torch.cat([coords, coords.new_zeros(len(coords), k - coords.shape[1])], 1)
        ratio = torch.cat([ratio, ratio.new_zeros(k - len(ratio))])
    return coords.float(), ratio.float()
