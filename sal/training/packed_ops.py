"""The packed forward as grouped operations, for the layer types of sal's own models.

``vmap`` over a stacked model is general but pays per operation: its BatchNorm rule copies the running
statistics in and out, and every layer permutes. Here the S seeds' activations are laid out so that one
plain kernel serves all seeds: images as [B, S*C, ...] (a convolution with ``groups=S``, BatchNorm and
pooling per channel, all on views of the stacked weights and buffers, so running statistics update in
place), features as [S, B, F] (a batched matmul). Each seed's slice sees exactly its own weights, so the
arithmetic per seed is the unpacked model's. Models with other layer types fall back to ``vmap``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .models import _BasicBlock

__all__ = ["MaskedDropout", "GroupedForward"]


class MaskedDropout(nn.Module):
    """Dropout whose mask is set from outside (``mask``: this seed's, or all seeds' stacked masks)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.mask: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or self.mask is None:
            return x
        return x * self.mask


_CONV = (nn.Conv1d, nn.Conv2d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d)
_POOL = {nn.MaxPool1d: F.max_pool1d, nn.MaxPool2d: F.max_pool2d}
_GAP = {nn.AdaptiveAvgPool1d: F.adaptive_avg_pool1d, nn.AdaptiveAvgPool2d: F.adaptive_avg_pool2d}
SUPPORTED = (nn.Sequential, *_CONV, *_BN, *_POOL, *_GAP, nn.ReLU, nn.Flatten, nn.Linear, MaskedDropout,
             nn.Dropout, _BasicBlock)


class GroupedForward:
    """``forward(params, buffers, x, x_batched)`` -> logits [S, B, classes] for a template of SUPPORTED layers.

    Activations are ("raw", x) for the input ([S, B, ...] or a shared [B, ...]), ("chan", [B, S*C, ...])
    or ("feat", [S, B, F]).
    """

    def __init__(self, template: nn.Module, seeds: int, *, channels_last: bool = False):
        self.template, self.S, self.channels_last = template, seeds, channels_last

    @staticmethod
    def supports(model: nn.Module) -> bool:
        return all(type(m) in SUPPORTED for m in model.modules())

    def __call__(self, params: dict, buffers: dict, x: torch.Tensor, *, x_batched: bool = True) -> torch.Tensor:
        self.p, self.b = params, buffers
        kind, h = self._run(self.template, "", ("raw", x, x_batched))
        assert kind == "feat", "the model must end in a Linear layer"
        return h

    def _chan(self, state) -> torch.Tensor:
        kind, h = state[0], state[1]
        if kind == "chan":
            return h
        if kind != "raw":
            raise ValueError("a convolution after a flattened layer cannot be packed")
        if state[2]:  # [S, B, C, ...] -> [B, S*C, ...]
            h = h.transpose(0, 1).reshape(h.shape[1], -1, *h.shape[3:])
        else:
            h = h.repeat(1, self.S, *[1] * (h.dim() - 2))
        if self.channels_last and h.dim() == 4:
            h = h.contiguous(memory_format=torch.channels_last)
        return h

    def _run(self, m: nn.Module, prefix: str, state):
        S, p, b = self.S, self.p, self.b
        if isinstance(m, nn.Sequential):
            for name, child in m.named_children():
                state = self._run(child, f"{prefix}{name}.", state)
            return state
        if isinstance(m, _BasicBlock):
            out = self._run(m.conv1, f"{prefix}conv1.", state)
            out = ("chan", torch.relu(self._run(m.bn1, f"{prefix}bn1.", out)[1]))
            out = self._run(m.bn2, f"{prefix}bn2.", self._run(m.conv2, f"{prefix}conv2.", out))[1]
            short = self._run(m.shortcut, f"{prefix}shortcut.", state)
            return "chan", torch.relu(out + self._chan(short))
        if isinstance(m, _CONV):
            h = self._chan(state)
            w = p[prefix + "weight"]
            w = w.reshape(-1, *w.shape[2:])
            bias = p[prefix + "bias"].reshape(-1) if m.bias is not None else None
            conv = F.conv1d if isinstance(m, nn.Conv1d) else F.conv2d
            return "chan", conv(h, w, bias, m.stride, m.padding, m.dilation, m.groups * S)
        if isinstance(m, _BN):
            h = self._chan(state)
            training = m.training or not m.track_running_stats
            if m.training and m.track_running_stats:
                b[prefix + "num_batches_tracked"].add_(1)
            momentum = 0.0 if m.momentum is None else m.momentum  # None only in SWA's update_bn, which sets it
            rm, rv = b.get(prefix + "running_mean"), b.get(prefix + "running_var")
            return "chan", F.batch_norm(h, None if rm is None else rm.view(-1), None if rv is None else rv.view(-1),
                                        p[prefix + "weight"].reshape(-1), p[prefix + "bias"].reshape(-1),
                                        training, momentum, m.eps)
        if type(m) in _POOL:
            return "chan", _POOL[type(m)](self._chan(state), m.kernel_size, m.stride, m.padding, m.dilation,
                                          ceil_mode=m.ceil_mode)
        if type(m) in _GAP:
            return "chan", _GAP[type(m)](self._chan(state), m.output_size)
        if isinstance(m, nn.ReLU):
            return state[0], torch.relu(state[1]), *state[2:]
        if isinstance(m, nn.Flatten):
            kind, h = state[0], state[1]
            if kind == "chan":  # [B, S*C, ...] -> [S, B, C*...]
                return "feat", h.reshape(h.shape[0], S, -1).transpose(0, 1)
            if kind == "raw":
                return "feat", h.flatten(2) if state[2] else h.flatten(1).expand(S, -1, -1)
            return state
        if isinstance(m, nn.Linear):
            h = state[1] if state[0] == "feat" else self._run(nn.Flatten(), prefix, state)[1]
            w = p[prefix + "weight"].transpose(1, 2)
            if m.bias is None:
                return "feat", torch.bmm(h, w)
            return "feat", torch.baddbmm(p[prefix + "bias"].unsqueeze(1), h, w)
        if isinstance(m, MaskedDropout):
            if m.training and m.p > 0 and m.mask is not None:
                return state[0], state[1] * m.mask, *state[2:]
            return state
        if isinstance(m, nn.Dropout) and m.p == 0:
            return state
        raise TypeError(f"{type(m).__name__} cannot be grouped")
