"""The NAS-BNN building blocks: the 8-bit stem and the separable binary layer.

The same classes build the supernet (sized for the largest choices), a static subnet (sized
for exactly one choice; ``to_static``) and a deployed subnet (``to_deployed``); only their
children's forms differ.
"""
from __future__ import annotations
import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from ..ops import (BINARY, FULL, DeployedBinaryConv2d, LSQConv2d, PackedFormatError, RPReLU, RSign, SharedBinaryConv2d,
                   SlicedBatchNorm2d)
from ..space import LayerChoice

__all__ = ['Stem', 'SeparableBinaryLayer', 'BinaryConvUnit', 'shortcut']


def shortcut(x: torch.Tensor, out_channels: int, stride: int) -> torch.Tensor:
    """Weight-free shortcut: 2x2 average pooling when the resolution halves (ceil mode, so odd
    sizes match the stride-2 conv's ceil(H/2)), channel tiling when the width grows."""
    if stride == 2:
        x = F.avg_pool2d(x, 2, 2, ceil_mode=True, count_include_pad=False)
    c = x.shape[1]
    if out_channels != c:
        reps = math.ceil(out_channels / c)
        x = (x.repeat(1, reps, 1, 1) if reps > 1 else x)[:, :out_channels]
    return x


class _AddTiled(torch.autograd.Function):
    """In place: y += x tiled along channels (out channel k reads x channel k mod C_x)."""

    @staticmethod
    def forward(ctx, y, x):
        c, out = x.shape[1], y.shape[1]
        for k in range(0, out, c):
            n = min(c, out - k)
            y[:, k:k + n].add_(x[:, :n])
        ctx.mark_dirty(y)
        ctx.c = c
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        c, out = ctx.c, grad.shape[1]
        gx = None
        if ctx.needs_input_grad[1]:
            gx = grad[:, :c].clone()
            for k in range(c, out, c):
                n = min(c, out - k)
                gx[:, :n].add_(grad[:, k:k + n])
        return grad, gx


def _add_shortcut_(y: torch.Tensor, x: torch.Tensor, stride: int) -> torch.Tensor:
    """``y + shortcut(x, y.shape[1], stride)`` written into ``y`` (a fresh BN output that
    nothing saved for backward), without materializing the tiled shortcut."""
    if stride == 2:
        x = F.avg_pool2d(x, 2, 2, ceil_mode=True, count_include_pad=False)
    c, out = x.shape[1], y.shape[1]
    if c == out:
        return y.add_(x)
    if c > out:
        return y.add_(x[:, :out])
    return _AddTiled.apply(y, x)


def _observed(module: nn.Module) -> bool:
    """Whether forward hooks could observe ``module``'s output (then it must not be modified in place)."""
    if nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks:
        return True
    return bool(module._forward_hooks or module._forward_pre_hooks)


def _bn_rprelu(bn: nn.Module,
               act: nn.Module,
               y: torch.Tensor,
               res: Optional[torch.Tensor] = None,
               stride: int = 1) -> torch.Tensor:
    """``act(bn(y) + shortcut(res, C, stride))`` (no shortcut when ``res`` is None), in the
    authors' order of operations: BN, + shortcut, + RPReLU input bias, PReLU, + output bias.

    The shortcut is added in place into the fresh BN output (nothing saved it for backward)
    without materializing the tiled shortcut; the RPReLU keeps no copy of its biased input."""
    z = bn(y)
    if res is not None:
        z = z + shortcut(res, z.shape[1], stride) if _observed(bn) else _add_shortcut_(z, res, stride)
    return act(z)


def _named(name: str, fn):
    """``fn()``, with a PackedFormatError's message prefixed by the module's name."""
    try:
        return fn()
    except PackedFormatError as e:
        raise e.within(name) from None


def _shell(cls, *args, **kwargs):
    """An instance built on the meta device (shapes only), whose children the caller replaces."""
    with torch.device('meta'):
        return cls(*args, **kwargs)


class Stem(nn.Module):
    """3x3 conv with 8-bit LSQ weights on the full-precision image, then BN and RPReLU.

    Args:
        max_width: output channels (the largest choice in a supernet).
        stride, kernel, in_channels: of the conv.
        deployed: build the deployed form's modules (folded BN); filled by ``unpack``.
    """

    def __init__(self, max_width: int, stride: int = 2, kernel: int = 3, in_channels: int = 3, deployed: bool = False):
        super().__init__()
        self.conv = LSQConv2d(in_channels, max_width, kernel, stride)
        self.bn = SlicedBatchNorm2d.deployed(max_width) if deployed else SlicedBatchNorm2d(max_width)
        self.act = RPReLU(max_width)

    def forward(self, x: torch.Tensor, width: int) -> torch.Tensor:
        return _bn_rprelu(self.bn, self.act, self.conv(x, width))

    def to_static(self, width: int) -> 'Stem':
        """The stem of one width, holding copies of this one's first ``width`` channels."""
        stem = _shell(Stem, width, self.conv.stride, self.conv.kernel_size, self.conv.in_channels)
        stem.conv, stem.bn, stem.act = self.conv.to_static(width), self.bn.to_static(width), self.act.to_static(width)
        return stem

    def to_deployed(self) -> 'Stem':
        stem = _shell(Stem, self.conv.max_out, self.conv.stride, self.conv.kernel_size, self.conv.in_channels)
        stem.conv, stem.bn, stem.act = (_named(n, getattr(self, n).to_deployed) for n in ('conv', 'bn', 'act'))
        return stem


class SeparableBinaryLayer(nn.Module):
    """RSign -> binary k x k group conv (keeps channels, may stride) -> BN -> +shortcut -> RPReLU
    -> RSign -> binary 1x1 conv (to the layer's width) -> BN -> +shortcut -> RPReLU.

    The one description of a layer: a supernet's (dynamic, sized for the largest choices), a
    static subnet's (``to_static``: one choice) and a deployed subnet's (``to_deployed``: ±1 signs
    and alpha, folded BN) layers are this class with other children.

    Args:
        max_in, max_out: input channels and width (the largest choices in a supernet).
        kernels, groups: the k x k conv's choices; stride: its stride.
        bi_transform: learn a Bi-Transformation matrix (supernet).
        wn_eps, wn_unbiased: the binary convs' weight normalization.
        deployed: build the deployed form's modules (one kernel and groups value).
        weight_norm, kernel_transform: see :class:`~nasbnn_mm.ops.SharedBinaryConv2d` (ablations).
    """

    def __init__(self,
                 max_in: int,
                 max_out: int,
                 kernels=(3, ),
                 groups=(1, ),
                 stride: int = 1,
                 bi_transform: bool = True,
                 wn_eps: float = 1e-5,
                 wn_unbiased: bool = False,
                 deployed: bool = False,
                 weight_norm: bool = True,
                 kernel_transform: bool = True):
        super().__init__()
        self.stride = stride
        bn = SlicedBatchNorm2d.deployed if deployed else SlicedBatchNorm2d
        self.sign1 = RSign(max_in)
        if deployed:
            if len(kernels) != 1 or len(groups) != 1:
                raise ValueError(f'SeparableBinaryLayer: a deployed layer has one kernel and groups value, '
                                 f'got kernels {tuple(kernels)}, groups {tuple(groups)}')
            self.conv_kxk = DeployedBinaryConv2d(max_in, max_in, kernels[0], groups[0])
        else:
            self.conv_kxk = SharedBinaryConv2d(max_in, max_in, kernels, groups, bi_transform, wn_eps, wn_unbiased,
                                               weight_norm, kernel_transform)
        self.bn1 = bn(max_in)
        self.act1 = RPReLU(max_in)
        self.sign2 = RSign(max_in)
        self.conv_1x1 = (
            DeployedBinaryConv2d(max_in, max_out, 1, 1) if deployed else SharedBinaryConv2d(
                max_in, max_out, (1, ), (1, ), bi_transform, wn_eps, wn_unbiased, weight_norm))
        self.bn2 = bn(max_out)
        self.act2 = RPReLU(max_out)

    def forward(self, x: torch.Tensor, width: int, kernel: int, groups: int, mode: str = BINARY):
        c = x.shape[1]
        binary = mode != FULL  # FWFA (an ablation's teacher): full-precision activations
        y = self.conv_kxk(self.sign1(x, binary), c, kernel, groups, self.stride, mode)
        y = _bn_rprelu(self.bn1, self.act1, y, x, self.stride)
        z = self.conv_1x1(self.sign2(y, binary), width, 1, 1, 1, mode)
        return _bn_rprelu(self.bn2, self.act2, z, y, 1)

    def to_static(self, c_in: int, choice: LayerChoice, mode: str = BINARY) -> 'SeparableBinaryLayer':
        """The layer of one choice for ``c_in`` input channels (binary-mode weights fold the
        Bi-Transformation; teacher-mode weights do not)."""
        w, k, g = choice.width, choice.kernel, choice.groups
        layer = _shell(SeparableBinaryLayer, c_in, w, (k, ), (g, ), self.stride, False)
        layer.sign1, layer.sign2 = self.sign1.to_static(c_in), self.sign2.to_static(c_in)
        layer.conv_kxk = self.conv_kxk.to_static(c_in, c_in, k, g, mode)
        layer.conv_1x1 = self.conv_1x1.to_static(c_in, w, 1, 1, mode)
        layer.bn1, layer.act1 = self.bn1.to_static(c_in), self.act1.to_static(c_in)
        layer.bn2, layer.act2 = self.bn2.to_static(w), self.act2.to_static(w)
        return layer

    def to_deployed(self) -> 'SeparableBinaryLayer':
        """The deployed form of a static layer."""
        kxk = self.conv_kxk
        layer = _shell(SeparableBinaryLayer, kxk.max_in, self.conv_1x1.max_out, kxk.kernel_sizes, kxk.groups_choices,
                       self.stride, False)
        for name, child in self.named_children():
            setattr(layer, name, _named(name, child.to_deployed))
        return layer


class BinaryConvUnit(nn.Module):
    """One binary convolution with everything around it: RSign -> binary k x k conv (groups 1, may
    stride) -> BN -> + shortcut -> RPReLU, the pieces and the order of a :class:`SeparableBinaryLayer`'s
    halves. The binary detection neck and RPN are built from it (``nasbnn_mm.det``).

    Args:
        in_channels, out_channels: channels.
        kernel: kernel size (odd); padding ``kernel // 2``.
        stride: 1 or 2.
        shortcut: add the weight-free shortcut of the backbone (2 x 2 average pooling when the
            resolution halves, channels tiled when they grow, the first ones kept when they shrink).
        wn_eps, wn_unbiased: the binary conv's weight normalization.
        deployed: build the deployed form (±1 signs and alpha, folded BN); filled by ``to_deployed``.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel: int = 3,
                 stride: int = 1,
                 shortcut: bool = True,
                 wn_eps: float = 1e-5,
                 wn_unbiased: bool = False,
                 deployed: bool = False):
        super().__init__()
        if kernel % 2 != 1 or stride not in (1, 2):
            raise ValueError(f'BinaryConvUnit: kernel {kernel} / stride {stride} not allowed '
                             '(allowed: an odd kernel, stride 1 or 2)')
        self.in_channels, self.out_channels, self.kernel, self.stride = in_channels, out_channels, kernel, stride
        self.use_shortcut = bool(shortcut)
        self.sign = RSign(in_channels)
        self.conv = (
            DeployedBinaryConv2d(in_channels, out_channels, kernel, 1) if deployed else SharedBinaryConv2d(
                in_channels, out_channels, (kernel, ), (1, ), False, wn_eps, wn_unbiased))
        self.bn = (SlicedBatchNorm2d.deployed if deployed else SlicedBatchNorm2d)(out_channels)
        self.act = RPReLU(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(self.sign(x), self.out_channels, self.kernel, 1, self.stride, BINARY)
        return _bn_rprelu(self.bn, self.act, y, x if self.use_shortcut else None, self.stride)

    def to_deployed(self) -> 'BinaryConvUnit':
        unit = _shell(BinaryConvUnit, self.in_channels, self.out_channels, self.kernel, self.stride, self.use_shortcut)
        for name, child in self.named_children():
            setattr(unit, name, _named(name, child.to_deployed))
        return unit

    def extra_repr(self) -> str:
        return (f'{self.in_channels}, {self.out_channels}, k={self.kernel}, s={self.stride}, '
                f'shortcut={self.use_shortcut}')
