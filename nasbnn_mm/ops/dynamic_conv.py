"""The weight-shared binary convolution: the one place where shared weights are sliced.

Three forms of one layer, OFA style:
  * dynamic: :class:`SharedBinaryConv2d` sized for the largest choices (the supernet);
  * static: ``SharedBinaryConv2d.to_static(c_in, c_out, kernel, groups, mode)``, the same class
    sized for exactly one choice, transforms folded into its weight (a static subnet, the mmdet
    backbone);
  * deployed: ``to_deployed()`` on a static conv, a :class:`DeployedBinaryConv2d` holding the
    signs (±1) and the per-output-channel alpha (the packed 1-bit form).

Shared tensor: ``weight`` of shape (max_out, max_in // min_groups, K, K), K the largest
kernel. For a choice (c_in, c_out, k, g):
  1. rows: the first c_out filters;
  2. columns (groups): with ``sub = c_in // g`` input channels per group and
     ``R = min(c_in, max_in // min_groups) // sub`` column blocks available, output channel o
     reads columns ``[(o // (c_out / g) mod R) * sub, ... + sub)`` -- the layout of the
     authors' release, so their checkpoints convert 1:1;
  3. kernel: k < K takes the centre k x k crop times a learnable (k^2 x k^2) transform
     (identity at init), one per smaller kernel size;
  4. Bi-Transformation (binary mode, k == K > 1): a learnable K^2 x K^2 matrix on the
     flattened kernel (identity at init);
  5. channel-wise weight normalization (W - mean) / sqrt(var + eps) per output channel, var
     biased by default; ``wn_unbiased=True, wn_eps=0`` reproduces the authors' release exactly
     ((W - mean) / W.std(), unbiased, no eps), as needed for their converted checkpoints;
  6. binary mode: alpha * sign(.), alpha = mean |.| per output channel (detached), sign with
     a straight-through gradient clipped at |w| <= 1. Teacher mode (Bi-Teacher, FWBA) stops
     after step 5 and skips step 4.

The binary-mode convolution itself runs on the path ``conv_precision`` / ``conv_grad`` select
(``ops/lowp.py``: ``'fp32'`` is ``F.conv2d(x, alpha * sign)``; ``'bf16'`` the exact
``alpha * conv(x, sign)`` in the hardware's bfloat16 mode); the backbones set them
(``binary_conv_precision``, ``binary_conv_grad``).
"""
from __future__ import annotations
import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from . import lowp
from .binarize import _clipped_ste_grad, sign_ste
from .packing import BITS, FP32, Field, PackedFormatError

__all__ = [
    'SharedBinaryConv2d', 'DeployedBinaryConv2d', 'BINARY', 'TEACHER', 'FULL', 'WEIGHT_MODES', 'normalize_weight',
    'normalize_binarize_weight', 'binarize_weight', 'check_mode'
]

# the weight / activation modes of a pass: binary (students, deployment), teacher = Bi-Teacher FWBA
# (full-precision normalized weights, binary activations), full = FWFA (full-precision weights and
# activations; an ablation's teacher)
BINARY, TEACHER, FULL = 'binary', 'teacher', 'full'
WEIGHT_MODES = (BINARY, TEACHER, FULL)


def check_mode(mode: str) -> str:
    if mode not in WEIGHT_MODES:
        raise ValueError(f'mode: {mode!r} not allowed (allowed: {", ".join(WEIGHT_MODES)})')
    return mode


def _rows(t: torch.Tensor) -> torch.Tensor:
    """(R, ...) -> (R, N) in memory order: a view for contiguous and channels_last tensors.
    Two tensors of the same layout give element-wise matching rows."""
    if _layout(t) is torch.channels_last:
        t = t.permute(0, 2, 3, 1)
    return t.reshape(t.shape[0], -1)


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-row (dim 0) dot product of two same-shape, same-layout tensors, without an a*b
    temporary."""
    r = a.shape[0]
    return torch.bmm(_rows(a).unsqueeze(1), _rows(b).unsqueeze(2)).view(r, *([1] * (a.dim() - 1)))


def _layout(x: torch.Tensor):
    """The memory format of an activation tensor: channels_last or contiguous."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


class _WeightNorm(torch.autograd.Function):
    """Channel-wise weight normalization, optionally followed by alpha * sign(.) (binary),
    as one Function with a hand-written backward.

    Forward: the plain formulas (the biased variance as a two-pass mean / 2-norm, no Welford
    kernel; no temporaries besides the result). Backward, with h the gradient reaching
    w_n (binary: alpha * STE-masked incoming gradient) and D the variance divisor (N or N-1):
    dL/dw = rstd * (h - mean(h) - w_n * sum(h * w_n) / D), as two row reductions and two fused
    multiply-adds. Only the normalized weight and per-row scalars are saved.

    ``memory_format``: layout of the result (channels_last for a convolution on channels_last
    activations, which would otherwise convert the weight in forward and backward and the
    gradient back); the gradient is returned in the layout of ``w``. The conversions happen
    inside the subtraction (forward) and the first multiply-add (backward)."""

    @staticmethod
    def forward(ctx, w, eps, unbiased, binary, memory_format=torch.contiguous_format):
        dims = tuple(range(1, w.dim()))
        n = w[0].numel()
        if w.dim() != 4:
            memory_format = torch.contiguous_format
        ctx.in_format = _layout(w)
        mean = w.mean(dim=dims, keepdim=True)
        w_n = torch.empty_like(w, memory_format=memory_format)
        torch.sub(w, mean, out=w_n)
        if unbiased:  # the authors' arithmetic: (W - mean) / W.std()
            std = (w.std(dim=dims, keepdim=True) if eps == 0 else torch.sqrt(w.var(dim=dims, keepdim=True) + eps))
            w_n.div_(std)
            rstd = std.reciprocal()
            ctx.divisor = n - 1
        else:
            # two-pass variance: mean, then the centred values' 2-norm (several times faster
            # than var_mean's Welford kernel on CPU; relative error ~1e-7)
            sq = torch.linalg.vector_norm(w_n, 2, dim=dims, keepdim=True)
            rstd = torch.rsqrt(sq.square_().div_(n).add_(eps))
            w_n.mul_(rstd)
            ctx.divisor = n
        ctx.n, ctx.binary = n, binary
        if not binary:
            ctx.save_for_backward(w_n, rstd)
            return w_n
        # alpha = mean |w_n| per output channel (a constant for autograd), computed in the
        # output buffer (|w_n| first, then overwritten by sign(w_n)): no extra temporary
        out = torch.abs(w_n)
        alpha = out.mean(dim=dims, keepdim=True)
        torch.sign(w_n, out=out)
        ctx.save_for_backward(w_n, rstd, alpha)
        return out.mul_(alpha)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        if ctx.binary:
            w_n, rstd, alpha = ctx.saved_tensors
            h = _clipped_ste_grad(grad, w_n)  # STE: d sign(w_n) / d w_n = 1 for |w_n| <= 1
            scale = alpha * rstd
        else:
            w_n, rstd = ctx.saved_tensors
            h = grad
            scale = rstd
        if h.stride() != w_n.stride():  # _rowdot pairs elements in memory order
            h = h.contiguous(memory_format=_layout(w_n))
        dims = tuple(range(1, h.dim()))
        s1 = h.sum(dim=dims, keepdim=True)
        s2 = _rowdot(h, w_n)
        out = torch.empty_like(w_n, memory_format=ctx.in_format)
        torch.addcmul(s1.mul_(scale).div_(-ctx.n), h, scale, out=out)
        out.addcmul_(w_n, s2.mul_(scale).div_(-ctx.divisor))
        return out, None, None, None, None


def normalize_weight(w: torch.Tensor,
                     eps: float = 1e-5,
                     unbiased: bool = False,
                     memory_format=torch.contiguous_format) -> torch.Tensor:
    """Channel-wise weight normalization over (in, kh, kw) of each output channel.

    ``unbiased``: Bessel-corrected variance, computed with the authors' arithmetic
    ((W - mean) / W.std() when ``eps == 0``) so that float32 results match theirs bit for bit.
    ``memory_format``: layout of the result (see :class:`_WeightNorm`)."""
    return _WeightNorm.apply(w, eps, unbiased, False, memory_format)


def normalize_binarize_weight(w: torch.Tensor,
                              eps: float = 1e-5,
                              unbiased: bool = False,
                              memory_format=torch.contiguous_format) -> torch.Tensor:
    """``binarize_weight(normalize_weight(w, eps, unbiased))`` as one fused autograd Function."""
    return _WeightNorm.apply(w, eps, unbiased, True, memory_format)


def binarize_weight(w_n: torch.Tensor) -> torch.Tensor:
    """alpha * sign(w_n) with alpha = mean |w_n| per output channel (no gradient through alpha)."""
    with torch.no_grad():
        alpha = w_n.abs().flatten(1).mean(1).view(-1, *([1] * (w_n.dim() - 1)))
    return sign_ste(w_n).mul_(alpha)


class SharedBinaryConv2d(nn.Module):
    """The weight-shared binary conv (see the module doc).

    Args:
        max_in, max_out: the largest input / output channels.
        kernel_sizes, groups: the choices.
        bi_transform: learn a Bi-Transformation matrix for the largest kernel (paper; an ablation
            switches it off).
        wn_eps, wn_unbiased: the channel-wise weight normalization.
        weight_norm: normalize the weights channel-wise before binarizing (paper; off: ``alpha *
            sign(W)`` of the raw latent weights, as XNOR-Net / ReActNet).
        kernel_transform: smaller kernels are the centre crop times a learnable transform (paper;
            off: the plain centre crop, as OFA without its transform).
    """

    # the binary-mode convolution's path (ops/lowp.py); set by the backbones
    # (``lowp.set_binary_conv_precision``), copied by ``to_static``
    conv_precision: str = 'fp32'
    conv_grad: str = 'auto'

    def __init__(self,
                 max_in: int,
                 max_out: int,
                 kernel_sizes=(1, ),
                 groups=(1, ),
                 bi_transform: bool = True,
                 wn_eps: float = 1e-5,
                 wn_unbiased: bool = False,
                 weight_norm: bool = True,
                 kernel_transform: bool = True):
        super().__init__()
        self.weight_norm = bool(weight_norm)
        self.kernel_sizes = tuple(sorted(set(kernel_sizes)))
        self.groups_choices = tuple(sorted(set(groups)))
        self.max_in, self.max_out = max_in, max_out
        self.max_kernel = self.kernel_sizes[-1]
        self.in_cols = max_in // self.groups_choices[0]
        self.wn_eps = wn_eps
        self.wn_unbiased = wn_unbiased
        self.weight = nn.Parameter(torch.empty(max_out, self.in_cols, self.max_kernel, self.max_kernel))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        # one transform per smaller kernel size, e.g. 'k3' for 3 from 5
        self.kernel_transforms = nn.ParameterDict({
            f'k{k}': nn.Parameter(torch.eye(k * k))
            for k in self.kernel_sizes if k < self.max_kernel and kernel_transform
        })
        K2 = self.max_kernel**2
        self.bi_transform = nn.Parameter(torch.eye(K2)) if (bi_transform and self.max_kernel > 1) else None

    # ------------------------------------------------------------------ slicing
    def latent_weight(self, c_in: int, c_out: int, kernel: int, groups: int) -> torch.Tensor:
        """Steps 1-3: the full-precision latent kernel of a choice, shape (c_out, c_in/g, k, k)."""
        if kernel not in self.kernel_sizes:
            raise ValueError(f'kernel {kernel} not in {self.kernel_sizes}')
        sub = c_in // groups
        # slice only where needed: a full-range slice still costs a full-size zero-filled
        # gradient buffer in backward
        w = self.weight if c_out == self.weight.shape[0] else self.weight[:c_out]
        if groups == 1:
            w = w if c_in == w.shape[1] else w[:, :c_in]
        else:
            R = min(c_in, self.in_cols) // sub
            if R <= 1:
                w = w if sub == w.shape[1] else w[:, :sub]
            elif groups % R == 0:
                # group a*R + r reads column block r: the (r, r) diagonal of a view, copied once;
                # its backward is a strided copy (no index_put accumulation)
                per = c_out // groups
                blocks = w[:, :R * sub].reshape(groups // R, R, per, R, sub, *w.shape[2:])
                w = torch.diagonal(blocks, dim1=1, dim2=3).movedim(-1, 1).reshape(c_out, sub, *w.shape[2:])
            else:
                per = c_out // groups
                idx = torch.arange(groups, device=w.device)
                blocks = w[:, :R * sub].reshape(groups, per, R, sub, *w.shape[2:])
                w = blocks[idx, :, idx % R].reshape(c_out, sub, *w.shape[2:])
        if kernel < self.max_kernel:
            off = (self.max_kernel - kernel) // 2
            w = w[:, :, off:off + kernel, off:off + kernel]
            if f'k{kernel}' in self.kernel_transforms:
                m = self.kernel_transforms[f'k{kernel}']
                w = (w.reshape(-1, kernel * kernel) @ m.t()).view(c_out, sub, kernel, kernel)
        return w

    def transformed_weight(self, latent: torch.Tensor, kernel: int, mode: str) -> torch.Tensor:
        """Step 4 (Bi-Transformation), only in binary mode with the layer's largest kernel."""
        if mode == BINARY and self.bi_transform is not None and kernel == self.max_kernel:
            k2 = kernel * kernel
            return (latent.reshape(-1, k2) @ self.bi_transform.t()).view_as(latent)
        return latent

    def effective_weight(self,
                         c_in: int,
                         c_out: int,
                         kernel: int,
                         groups: int,
                         mode: str = BINARY,
                         memory_format=torch.contiguous_format):
        """The kernel the convolution uses; ``memory_format`` is the layout wanted for it."""
        w = self.transformed_weight(self.latent_weight(c_in, c_out, kernel, groups), kernel, mode)
        if not self.weight_norm:  # ablation: no channel-wise normalization
            w = w.contiguous(memory_format=memory_format) if w.dim() == 4 else w
            return binarize_weight(w) if mode == BINARY else w
        normalize = normalize_binarize_weight if mode == BINARY else normalize_weight
        return normalize(w, self.wn_eps, self.wn_unbiased, memory_format)

    def forward(self,
                x: torch.Tensor,
                c_out: int,
                kernel: Optional[int] = None,
                groups: int = 1,
                stride: int = 1,
                mode: str = BINARY) -> torch.Tensor:
        kernel = self.max_kernel if kernel is None else kernel
        # the kernel in the activations' layout: no weight conversions inside the convolution
        w = self.effective_weight(x.shape[1], c_out, kernel, groups, mode, memory_format=_layout(x))
        if mode == BINARY:  # 'fp32': the same F.conv2d call as below
            return lowp.binary_conv2d(x, w, stride, kernel // 2, groups, self.conv_precision, self.conv_grad)
        return F.conv2d(x, w, None, stride, kernel // 2, 1, groups)

    # ------------------------------------------------------------------ static and deployed forms
    @property
    def is_static(self) -> bool:
        """Sized for exactly one choice (one kernel, one groups value, no Bi-Transformation)."""
        return (len(self.kernel_sizes) == 1 and len(self.groups_choices) == 1 and self.bi_transform is None
                and not self.kernel_transforms)

    @torch.no_grad()
    def to_static(self, c_in: int, c_out: int, kernel: int, groups: int, mode: str = BINARY) -> 'SharedBinaryConv2d':
        """The conv of one choice: weight (c_out, c_in / groups, kernel, kernel) with the slicing,
        the kernel transform and (binary mode) the Bi-Transformation folded in; the weight
        normalization (and binarization) stays in its forward."""
        w = self.transformed_weight(self.latent_weight(c_in, c_out, kernel, groups), kernel, check_mode(mode))
        with torch.device('meta'):
            conv = SharedBinaryConv2d(c_in, c_out, (kernel, ), (groups, ), False, self.wn_eps, self.wn_unbiased,
                                      self.weight_norm)
        conv.weight = nn.Parameter(w.detach().clone().contiguous(), requires_grad=self.weight.requires_grad)
        conv.conv_precision, conv.conv_grad = self.conv_precision, self.conv_grad
        return conv

    @torch.no_grad()
    def to_deployed(self) -> 'DeployedBinaryConv2d':
        """The deployed form of a static conv: its effective binary weight alpha * sign as ±1 signs and
        alpha (exact: the effective weight is rebuilt bit for bit)."""
        if not self.is_static:
            raise ValueError('SharedBinaryConv2d.to_deployed: call to_static(...) first (a dynamic conv has no '
                             'single weight)')
        k, g = self.max_kernel, self.groups_choices[0]
        w = self.effective_weight(self.max_in, self.max_out, k, g, BINARY)
        alpha = w.abs().flatten(1).amax(1)
        sign = torch.where(w > 0, 1.0, -1.0).to(w.dtype)
        if not torch.equal(sign * alpha.view(-1, 1, 1, 1), w):
            raise PackedFormatError('the effective binary weight is not ±alpha per output channel (a zero entry: '
                                    'the normalized weight is exactly 0 there), which ±1 bits cannot store')
        conv = DeployedBinaryConv2d(self.max_in, self.max_out, k, g).to(w)
        conv.sign.copy_(sign)
        conv.alpha.copy_(alpha)
        return conv

    def extra_repr(self) -> str:
        return (f'max_in={self.max_in}, max_out={self.max_out}, kernels={self.kernel_sizes}, '
                f'groups={self.groups_choices}, bi_transform={self.bi_transform is not None}' +
                ('' if self.weight_norm else ', weight_norm=False'))


class DeployedBinaryConv2d(nn.Module):
    """The deployed binary conv: ``sign`` (±1, shape (out, in / groups, k, k)) and per-output-channel
    ``alpha``; its kernel is ``sign * alpha`` (no latent weight, no normalization). Same call
    signature as :class:`SharedBinaryConv2d` (the layer code is shared); inference only.

    Forward: ``F.conv2d(x, sign) * alpha`` per output channel. On the ±1 / 0 inputs of the deployed
    model (an RSign's output) the convolution sums integers, exact in float32 in any order (< 2^24),
    so the result is rounded once, by the multiplication: the integer form that the 1-bit runtime
    (:mod:`nasbnn_mm.deploy`) computes with XNOR-popcount, bit for bit. The static model convolves
    with ``alpha * sign`` instead, whose float sums round at every step: the two agree to rounding
    (``tests/test_packed.py``), not bitwise.

    Args:
        in_channels, out_channels, kernel, groups: its one choice.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, groups: int):
        super().__init__()
        self.in_channels, self.out_channels, self.kernel, self.groups = in_channels, out_channels, kernel, groups
        self.register_buffer('sign', torch.ones(out_channels, in_channels // groups, kernel, kernel))
        self.register_buffer('alpha', torch.ones(out_channels))

    def effective_weight(self,
                         c_in: int,
                         c_out: int,
                         kernel: int,
                         groups: int,
                         mode: str = BINARY,
                         memory_format=torch.contiguous_format) -> torch.Tensor:
        # ``memory_format`` is a layout hint; the stored kernel is returned as it is (a deployed
        # model converts nothing per call)
        self._check_call(c_in, c_out, kernel, groups, mode)
        return self.sign * self.alpha.view(-1, 1, 1, 1)

    def _check_call(self, c_in: int, c_out: int, kernel: int, groups: int, mode: str) -> None:
        if mode != BINARY:
            raise ValueError(f'mode: {mode!r} not allowed for a deployed binary conv (allowed: {BINARY})')
        if (c_in, c_out, kernel, groups) != (self.in_channels, self.out_channels, self.kernel, self.groups):
            raise ValueError(f'DeployedBinaryConv2d: asked for (in {c_in}, out {c_out}, k {kernel}, g {groups}), '
                             f'holds (in {self.in_channels}, out {self.out_channels}, k {self.kernel}, '
                             f'g {self.groups})')

    def forward(self,
                x: torch.Tensor,
                c_out: int,
                kernel: Optional[int] = None,
                groups: int = 1,
                stride: int = 1,
                mode: str = BINARY) -> torch.Tensor:
        kernel = self.kernel if kernel is None else kernel
        self._check_call(x.shape[1], c_out, kernel, groups, mode)
        acc = F.conv2d(x, self.sign, None, stride, kernel // 2, 1, groups)  # exact integers on ±1 / 0 inputs
        return acc.mul_(self.alpha.view(1, -1, 1, 1))  # one rounding

    # packed form (see ops/packing.py)
    def packed_fields(self):
        return [Field(BITS, 'sign', tuple(self.sign.shape), self.groups), Field(FP32, 'alpha', (self.out_channels, ))]

    def packed_values(self):
        return [(self.sign > 0).reshape(-1), self.alpha.detach().float()]

    def unpacked_state(self, values):
        bits, alpha = values
        return dict(sign=bits.float().mul(2).sub(1).reshape(self.sign.shape), alpha=alpha)

    def extra_repr(self) -> str:
        return f'{self.in_channels}, {self.out_channels}, k={self.kernel}, groups={self.groups}'
