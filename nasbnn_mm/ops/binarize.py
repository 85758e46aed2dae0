"""Binarizers (sign with surrogate gradients) and the ReActNet-style RSign / RPReLU.

The activation modules hold parameters for the largest channel count a position can see
and use the first ``C`` entries for an input with ``C`` channels, so the same module serves
the supernet (any width) and a static subnet (one width).

Speed notes (element-wise passes over activations are a large share of CPU training time): every
operator here is one autograd Function with a hand-written backward that keeps the number
of full-size passes and temporaries minimal; the numerics are those of the plain formulas
(see tests/test_ops_fused.py, which checks each against plain autograd):

* ApproxSign backward ``g * max(0, 2 - 2|u|)`` is computed as ``g * clamp(2 - 2 * u * sign(u), 0)``
  (``u * sign(u) == |u|`` exactly): one fused multiply-add, a clamp and a multiply, reusing the
  sign output that the following convolution keeps for its own backward anyway.
* The weight STE ``g * (|w| <= 1)`` is one pass (``hardtanh_backward`` with the bound moved to
  the next float above 1, which keeps ``|w| == 1`` inside), with no bool/float mask tensors.
* RSign fuses the bias add, the sign and the bias gradient; RPReLU fuses ``prelu(x + b1) + b2``
  and computes its backward from vectorized kernels (aten's PReLU backward is scalar code,
  several times slower on CPU), recomputing ``x + b1`` instead of keeping it.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from . import native
from .packing import Fp32Fields

__all__ = ['approx_sign', 'sign_ste', 'RSign', 'RPReLU']


def _channel_view(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """(C,) -> (1, C, 1, ...) for broadcasting against an (N, C, ...) tensor."""
    return v.view(1, -1, *([1] * (ndim - 2)))


def _reduce_dims(ndim: int):
    """All dims but the channel dim 1."""
    return [0] + list(range(2, ndim))


def _native_for(x: torch.Tensor, *params: torch.Tensor):
    """The native kernels (ops/native.py) where they apply to activation ``x`` with per-channel
    float32 ``params``; None means: use the ATen reference path below."""
    if not native.supports(x) or any(p.dtype != torch.float32 or p.device.type != 'cpu' for p in params):
        return None
    return native.native_ops()


def _approx_sign_grad(grad: torch.Tensor, u: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """grad * max(0, 2 - 2|u|) given s = sign(u); a new tensor."""
    t = torch.addcmul(torch.full((), 2.0, dtype=u.dtype, device=u.device), u, s, value=-2.0)
    return t.clamp_(min=0.0).mul_(grad)


class _ApproxSign(torch.autograd.Function):
    """sign(x) forward; ApproxSign (Bi-Real) backward: 2 - 2|x| for |x| <= 1, else 0."""

    @staticmethod
    def forward(ctx, x):
        s = torch.sign(x)
        ctx.save_for_backward(x, s)
        return s

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, s = ctx.saved_tensors
        return _approx_sign_grad(grad, x, s)


class _SignSTE(torch.autograd.Function):
    """sign(w) forward; straight-through backward clipped to |w| <= 1 (weights)."""

    @staticmethod
    def forward(ctx, w):
        ctx.save_for_backward(w)
        return torch.sign(w)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        w, = ctx.saved_tensors
        return _clipped_ste_grad(grad, w)


def _clipped_ste_grad(grad: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """grad * (|w| <= 1) in one pass: hardtanh_backward zeroes where w <= lo or w >= hi, so
    with hi = the next float above 1 exactly |w| > 1 is zeroed."""
    bound = 1.0 + torch.finfo(w.dtype).eps
    return torch.ops.aten.hardtanh_backward(grad, w, -bound, bound)


class _RSignFn(torch.autograd.Function):
    """sign(x + b) with the ApproxSign gradient for x and b (b: per channel)."""

    @staticmethod
    def forward(ctx, x, b):
        ops = _native_for(x, b)
        ctx.native = ops is not None
        if ctx.native:
            # the native backward recomputes u = x + b from x (alive anyway: the previous
            # layer's output): no u tensor is allocated or kept
            s = ops.rsign_forward(x, b)
            ctx.save_for_backward(x, b)
            return s
        u = torch.add(x, _channel_view(b, x.dim()))
        s = torch.sign(u)
        # s is also what the next convolution saves, so keeping it costs no memory
        ctx.save_for_backward(u, s)
        return s

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        need_b = ctx.needs_input_grad[1]
        if ctx.native:
            x, b = ctx.saved_tensors
            ops = _native_for(grad)
            if ops is not None:
                gx, gb = ops.rsign_backward(grad, x, b, need_b)
                return gx, (gb if need_b else None)
            u = torch.add(x, _channel_view(b, x.dim()))  # grad not float32 / CPU: reference path
            s = torch.sign(u)
        else:
            u, s = ctx.saved_tensors
        gu = _approx_sign_grad(grad, u, s)
        gb = gu.sum(_reduce_dims(gu.dim())) if need_b else None
        return gu, gb


class _RPReLUFn(torch.autograd.Function):
    """prelu(x + b1, a) + b2 with per-channel b1, a, b2, in the authors' order of operations
    (x: the BN output plus the shortcut). Only x and the parameters are saved: backward
    recomputes z = x + b1 (the same float add), so no z tensor is kept."""

    @staticmethod
    def forward(ctx, x, b1, a, b2):
        ops = _native_for(x, b1, a, b2)
        if ops is not None:
            y = ops.rprelu_forward(x, b1, a, b2)
        else:
            nd = x.dim()
            y = F.prelu(torch.add(x, _channel_view(b1, nd)), a)
            y.add_(_channel_view(b2, nd))
        ctx.native = ops is not None
        ctx.save_for_backward(x, b1, a)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, b1, a = ctx.saved_tensors
        need_x, need_b1, need_a, need_b2 = ctx.needs_input_grad
        ops = _native_for(grad) if ctx.native else None
        if ops is not None:
            gz, gb1, ga, gb2 = ops.rprelu_backward(grad, x, b1, a, need_x, need_b1, need_a, need_b2)
            return ((gz if need_x else None), (gb1 if need_b1 else None), (ga if need_a else None),
                    (gb2 if need_b2 else None))
        dims = _reduce_dims(grad.dim())
        z = torch.add(x, _channel_view(b1, x.dim()))
        gz = ga = gb1 = gb2 = None
        if need_b2:
            gb2 = grad.sum(dims)
        if need_x or need_b1 or need_a:
            # PReLU backward from vectorized kernels (aten's prelu backward is scalar code):
            # t = grad * [z > 0], t2 = grad - t = grad * [z <= 0] (both exact), then
            # dz = t + a * t2 (exactly grad or a * grad) and da = sum(t2 * z).
            t = torch.ops.aten.threshold_backward(grad, z, 0)
            t2 = torch.sub(grad, t)
            gz = t.addcmul_(t2, _channel_view(a, z.dim()))
            if need_a:
                ga = t2.mul_(z).sum(dims)
            del t2
            if need_b1:
                gb1 = gz.sum(dims)
        return (gz if need_x else None), gb1, ga, gb2


def approx_sign(x: torch.Tensor) -> torch.Tensor:
    return _ApproxSign.apply(x)


def sign_ste(w: torch.Tensor) -> torch.Tensor:
    return _SignSTE.apply(w)


def _copy_slice(dst: torch.Tensor, src: torch.Tensor) -> None:
    with torch.no_grad():
        dst.copy_(src[:dst.numel()])


class RSign(Fp32Fields, nn.Module):
    """sign(x + b) with a learnable per-channel shift b (ReActNet's RSign). Dynamic: an input with
    C channels uses the first C entries of b."""

    _packed_attrs = ('bias', )

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, binary: bool = True) -> torch.Tensor:
        """``sign(x + b)``; ``binary=False`` (a full-precision-activation pass, FWFA): ``x + b``."""
        c = x.shape[1]
        b = self.bias if c == self.bias.numel() else self.bias[:c]
        if not binary:
            return x + _channel_view(b, x.dim())
        return _RSignFn.apply(x, b)

    def to_static(self, channels: int) -> 'RSign':
        """An RSign of exactly ``channels`` channels holding a copy of this one's first entries."""
        m = RSign(channels).to(self.bias)
        _copy_slice(m.bias, self.bias)
        return m

    def to_deployed(self) -> 'RSign':
        return self.to_static(self.bias.numel())

    def extra_repr(self) -> str:
        return f'{self.bias.numel()}'


class RPReLU(Fp32Fields, nn.Module):
    """PReLU(x + b1) + b2 with per-channel b1, slope (init 0.25) and b2 (ReActNet's RPReLU)."""

    _packed_attrs = ('bias_in', 'slope', 'bias_out')

    def __init__(self, channels: int, init_slope: float = 0.25):
        super().__init__()
        self.bias_in = nn.Parameter(torch.zeros(channels))
        self.slope = nn.Parameter(torch.full((channels, ), init_slope))
        self.bias_out = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c == self.slope.numel():
            return _RPReLUFn.apply(x, self.bias_in, self.slope, self.bias_out)
        return _RPReLUFn.apply(x, self.bias_in[:c], self.slope[:c], self.bias_out[:c])

    def to_static(self, channels: int) -> 'RPReLU':
        m = RPReLU(channels).to(self.slope)
        for a in self._packed_attrs:
            _copy_slice(getattr(m, a), getattr(self, a))
        return m

    def to_deployed(self) -> 'RPReLU':
        return self.to_static(self.slope.numel())

    def extra_repr(self) -> str:
        return f'{self.slope.numel()}'
