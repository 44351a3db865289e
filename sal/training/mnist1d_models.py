"""The models of MNIST-1D's paper (Greydanus & Kobak, "Scaling down deep learning with MNIST-1D"), layer
for layer as the authors' ``notebooks/models.py`` builds them, so that sal can reproduce their table
(logistic regression 32%, MLP 68%, CNN 94% test accuracy; benchmarks/bench_mnist1d_table.py).

The authors' parameter counts are the check that nothing differs: 410 (linear), 15,210 (MLP, hidden
width 100), 5,210 (CNN, 25 channels). Layer names follow theirs (``conv1.weight``, ``linear1.bias``), so
their state dicts load. PyTorch's default initialisation, as theirs. The GRU of their table is left out:
``vmap`` cannot pack a recurrent layer and it trains ~15x slower than the CNN on a CPU.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..spec.config import ModelSpec, SpecError

__all__ = ["MNIST1D_MODELS"]


def _features(in_shape: tuple[int, ...]) -> int:
    n = 1
    for d in in_shape:
        n *= d
    return n


def _linear(spec: ModelSpec, in_shape: tuple[int, ...], classes: int) -> nn.Module:
    """Their LinearBase: logistic regression on the flattened signal."""
    return nn.Sequential(OrderedDict(flatten=nn.Flatten(), linear=nn.Linear(_features(in_shape), classes)))


class _ResidualMLP(nn.Module):
    """Their MLPBase: ``h = relu(W1 x); h = h + relu(W2 h); W3 h`` (the middle layer is a skip block)."""

    def __init__(self, features: int, hidden: int, classes: int):
        super().__init__()
        self.linear1 = nn.Linear(features, hidden)
        self.linear2 = nn.Linear(hidden, hidden)
        self.linear3 = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.linear1(x.flatten(1)).relu()  # theirs takes N x 40; sal's sequences are N x 1 x 40
        h = h + self.linear2(h).relu()
        return self.linear3(h)


def _mlp(spec: ModelSpec, in_shape: tuple[int, ...], classes: int) -> nn.Module:
    return _ResidualMLP(_features(in_shape), 100, classes)


def _cnn(spec: ModelSpec, in_shape: tuple[int, ...], classes: int) -> nn.Module:
    """Their ConvBase: three stride-2 convolutions (kernels 5, 3, 3; padding 1; 25 channels; ReLU) and a
    linear classifier on the flattened channels (25 x 5 = 125 features for a length-40 signal). Theirs
    views its input as N x 1 x L, which sal's sequences already are; a Sequential keeps the grouped
    packed forward (sal/training/packed_ops.py) available."""
    if len(in_shape) != 2:
        raise SpecError([f"model.name='mnist1d_cnn' needs sequences (C x L), got samples of shape {in_shape}; "
                         "fix: use data.name=mnist1d, or model.name=cnn for images"])
    channels, length = 25, in_shape[1]
    for kernel in (5, 3, 3):
        length = (length + 2 - kernel) // 2 + 1  # stride 2, padding 1
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv1d(in_shape[0], channels, 5, stride=2, padding=1), relu1=nn.ReLU(),
        conv2=nn.Conv1d(channels, channels, 3, stride=2, padding=1), relu2=nn.ReLU(),
        conv3=nn.Conv1d(channels, channels, 3, stride=2, padding=1), relu3=nn.ReLU(),
        flatten=nn.Flatten(), linear=nn.Linear(channels * length, classes),
    ))


# model.name -> builder, dispatched by sal.training.models (sal.spec.config's ModelName admits the names; a test
# checks both agree).
MNIST1D_MODELS = {"mnist1d_linear": _linear, "mnist1d_mlp": _mlp, "mnist1d_cnn": _cnn}
