"""SWA for packed seeds (sal/training/packed.py): each seed's running average of its slice of the stacked weights.

torch's own averaging function is elementwise, so one call averages every seed exactly as SWA does alone;
``update_bn`` is done by hand, because BatchNorm's cumulative average reads ``num_batches_tracked`` as a
Python float, which a packed forward cannot; momentum 1/i on the i-th batch is the same arithmetic.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.swa_utils import SWALR, get_swa_multi_avg_fn

__all__ = ["PackedSWA"]


class PackedSWA:
    """SWA per seed on stacked tensors: torch's own averaging function (elementwise) and update_bn
    done by hand, because BatchNorm's cumulative average reads num_batches_tracked as a Python float,
    which vmap cannot; momentum 1/i on the i-th batch is the same arithmetic."""

    def __init__(self, packed):
        k, spec = packed.specs[0].method, packed.specs[0]
        self.packed = packed
        self.start_epoch = math.floor(k.swa_start * spec.train.epochs)
        self.scheduler = SWALR(packed.optimizer, swa_lr=k.swa_lr or spec.optim.lr,
                                                     anneal_epochs=k.anneal_epochs)
        self.avg_params = {n: p.detach().clone() for n, p in packed.params.items()}
        self.avg_buffers = {n: b.clone() for n, b in packed.buffers.items()}
        self.n_averaged = 0
        self._n = torch.zeros((), dtype=torch.long, device=packed.device)
        self._avg_fn = get_swa_multi_avg_fn()
        self._bn_stale = False

    @torch.no_grad()
    def on_epoch_trained(self, epoch: int) -> None:
        if epoch <= self.start_epoch:
            return
        names = list(self.avg_params)
        avg, cur = [self.avg_params[n] for n in names], [self.packed.params[n].detach() for n in names]
        if self.n_averaged == 0:
            torch._foreach_copy_(avg, cur)
        else:
            self._avg_fn(avg, cur, self._n)
        for name, b in self.packed.buffers.items():
            self.avg_buffers[name].copy_(b)
        self._n += 1
        self.n_averaged += 1
        self._bn_stale = True

    def eval_weights(self) -> tuple[dict, dict]:
        if self._bn_stale:
            self._update_bn()
            self._bn_stale = False
        return self.avg_params, self.avg_buffers

    @torch.no_grad()
    def _update_bn(self) -> None:
        packed = self.packed
        bns = [m for m in packed.template.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not bns:
            return
        for name, b in self.avg_buffers.items():
            if name.endswith("running_mean") or name.endswith("num_batches_tracked"):
                b.zero_()
            elif name.endswith("running_var"):
                b.fill_(1)
        momenta = [m.momentum for m in bns]
        packed.template.train()
        try:
            train_set = packed.data.train
            for i, start in enumerate(range(0, len(train_set), packed.eval_bs), 1):
                for m in bns:
                    m.momentum = 1.0 / i
                x = train_set.x[start:start + packed.eval_bs]
                packed._forward(self.avg_params, self.avg_buffers, packed._masks(len(x), "swa"), x, x_batched=False)
        finally:
            for m, momentum in zip(bns, momenta):
                m.momentum = momentum
