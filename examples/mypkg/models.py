"""A tiny MLP, built the way sal calls a model builder: ``build(args, in_shape, num_classes)``."""

from __future__ import annotations

import math

from torch import nn


def build(args: dict, in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """``args``: ``hidden`` units per layer (default 32), ``layers`` hidden layers (default 2).

    Ends in its classifier, so SAL's deformation of the last three trainable layers hits the head.
    """
    hidden, layers = int(args.get("hidden", 32)), int(args.get("layers", 2))
    width = math.prod(in_shape)
    blocks: list[nn.Module] = [nn.Flatten()]
    for _ in range(layers):
        blocks += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    return nn.Sequential(*blocks, nn.Linear(width, num_classes))
