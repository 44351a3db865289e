"""Noisy interleaved spirals, loaded the way sal calls a data loader: ``load(args, split_seed)``."""

from __future__ import annotations

import math

import torch


def load(args: dict, split_seed: int) -> dict:
    """``args``: ``classes`` spiral arms (default 3), ``per_class`` points (default 600), ``noise`` (0.25).

    Returns train and test splits as (x, y) tensors; sal holds the validation set out of train.
    """
    classes, per_class = int(args.get("classes", 3)), int(args.get("per_class", 600))
    noise = float(args.get("noise", 0.25))
    g = torch.Generator().manual_seed(split_seed)
    r = torch.rand(classes, per_class, generator=g)
    angle = 4 * r + torch.arange(classes)[:, None] * (2 * math.pi / classes)
    points = torch.stack([r * torch.cos(angle), r * torch.sin(angle)], -1).view(-1, 2)
    x = points + noise * r.view(-1, 1) * torch.randn(classes * per_class, 2, generator=g)
    y = torch.arange(classes).repeat_interleave(per_class)
    order = torch.randperm(len(y), generator=g)
    x, y = x[order], y[order]
    n_test = len(y) // 5
    return {"train": (x[n_test:], y[n_test:]), "test": (x[:n_test], y[:n_test]), "num_classes": classes}
