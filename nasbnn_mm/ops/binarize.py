"""Binarizers (sign with surrogate gradients) and the ReActNet-style RSign / RPReLU.

The activation modules hold parameters for the largest channel count a position can see
and use the first ``C`` entries for an input with ``C`` channels, so the same module serves
the supernet (any width) and a static subnet (one width).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['approx_sign', 'sign_ste', 'RSign', 'RPReLU']


class _ApproxSign(torch.autograd.Function):
    """sign(x) forward; ApproxSign (Bi-Real) backward: 2 - 2|x| for |x| <= 1, else 0."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.sign(x)

    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved_tensors
        # (2 - 2|x|).clamp(min=0) is 0 exactly where |x| >= 1: one fused expression
        return grad * (2.0 - 2.0 * x.abs()).clamp_(min=0.0)


class _SignSTE(torch.autograd.Function):
    """sign(w) forward; straight-through backward clipped to |w| <= 1 (weights)."""

    @staticmethod
    def forward(ctx, w):
        ctx.save_for_backward(w)
        return torch.sign(w)

    @staticmethod
    def backward(ctx, grad):
        w, = ctx.saved_tensors
        return grad * (w.abs() <= 1).to(grad.dtype)


def approx_sign(x: torch.Tensor) -> torch.Tensor:
    return _ApproxSign.apply(x)


def sign_ste(w: torch.Tensor) -> torch.Tensor:
    return _SignSTE.apply(w)


class RSign(nn.Module):
    """sign(x + b) with a learnable per-channel shift b (ReActNet's RSign)."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        return approx_sign(x + self.bias[:c].view(1, c, 1, 1))

    def extra_repr(self) -> str:
        return f'{self.bias.numel()}'


class RPReLU(nn.Module):
    """PReLU(x + b1) + b2 with per-channel b1, slope (init 0.25) and b2 (ReActNet's RPReLU)."""

    def __init__(self, channels: int, init_slope: float = 0.25):
        super().__init__()
        self.bias_in = nn.Parameter(torch.zeros(channels))
        self.slope = nn.Parameter(torch.full((channels,), init_slope))
        self.bias_out = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        y = F.prelu(x + self.bias_in[:c].view(1, c, 1, 1), self.slope[:c])
        return y + self.bias_out[:c].view(1, c, 1, 1)

    def extra_repr(self) -> str:
        return f'{self.slope.numel()}'
