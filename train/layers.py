"""Streaming building blocks (convolutions whose context is an explicit state) and a model's cost."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class StreamConv1d(nn.Module):
    """Causal Conv1d whose left context is an explicit cache: out = conv(cat(cache, x))."""

    def __init__(self, cin, cout, kernel, stride=1, dilation=1):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel, stride=stride, dilation=dilation, bias=False)
        self.context = (kernel - 1) * dilation + 1 - stride
        self.cin = cin

    def state_shape(self) -> tuple[int, int]:
        return (self.cin, self.context)

    def forward(self, x, cache):
        xc = torch.cat([cache, x], dim=-1)
        return self.conv(xc), xc[..., xc.shape[-1] - self.context:]


class StreamConvTranspose1d(nn.Module):
    """Transposed conv with kernel 2*stride: the right overlap is carried into the next block."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv = nn.ConvTranspose1d(cin, cout, 2 * stride, stride=stride, bias=False)
        self.stride = stride
        self.cout = cout

    def state_shape(self) -> tuple[int, int]:
        return (self.cout, self.stride)

    def forward(self, x, overlap):
        y = self.conv(x)  # [B, cout, T + stride]
        n = y.shape[-1] - self.stride
        head = y[..., : self.stride] + overlap
        return torch.cat([head, y[..., self.stride: n]], dim=-1), y[..., n:]


class ResBlock(nn.Module):
    def __init__(self, channels, kernel, dilation, slope):
        super().__init__()
        self.conv = StreamConv1d(channels, channels, kernel, dilation=dilation)
        self.mix = nn.Conv1d(channels, channels, 1, bias=False)
        self.slope = slope

    def forward(self, h, gate, cache):
        y, cache = self.conv(F.leaky_relu(h, self.slope), cache)
        return h + self.mix(F.leaky_relu(y * gate, self.slope)), cache


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
