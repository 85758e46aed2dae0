"""The element-wise glue after a conv of a deployed NAS-BNN subnet: folded BN, shortcut, RPReLU.

After every conv, :class:`~nasbnn_mm.models.NASBNNDeployedSubnet` computes (``models.blocks._bn_rprelu``)::

    v = F.batch_norm(y, mean 0, var 1, weight = scale, bias = shift, eps 0)    # folded BN
    v = v + shortcut(res)       # 2x2 average pooling (ceil mode) when the conv strides, channels tiled
    v = prelu(v + b1, a) + b2   # RPReLU

:class:`Glue` computes the same float32 numbers in one native pass (``csrc/glue.cpp``; also fused into
the popcount conv, :meth:`nasbnn_mm.deploy.BinaryConvKernel.fused`). PyTorch's inference BN is
``x * scale + shift`` evaluated as one fused multiply-add on this build (one rounding); the native
glue does the same only where :func:`bn_mode` has checked it against ``F.batch_norm`` on this
machine ('fma'), or as a multiply then an add where that is what ``F.batch_norm`` computes
('mul_add'); otherwise (or without the native kernels, or ``NASBNN_GLUE=aten``) the glue calls the
deployed model's ATen ops themselves. Either way the results equal the deployed model's bitwise.

Imports torch only.
"""
from __future__ import annotations
import os
import threading
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .native import bitconv_ops

__all__ = ['Glue', 'bn_mode', 'glue_isa', 'shortcut_reference']

_BN_MODES = {'fma': 1, 'mul_add': 2}
_probe_lock = threading.Lock()
_probe: dict = {}


def _glue_env() -> str:
    v = os.environ.get('NASBNN_GLUE', 'native').strip().lower()
    if v not in ('native', 'aten'):
        raise ValueError(f'NASBNN_GLUE: {v!r} not allowed (allowed: native, aten)')
    return v


def glue_isa(isa: Optional[str] = None) -> Optional[int]:
    """The native glue's path (2 avx512, 1 avx2 + fma, 0 scalar) for the popcount path ``isa`` (default: the
    best this CPU has), or None without the native kernels."""
    ops = bitconv_ops()
    if ops is None:
        return None
    from .bitconv import ISAS, dispatch_path
    code = ISAS.index(dispatch_path(isa))
    while code > 0 and not ops.glue_isa_supported(code):
        code -= 1
    return code


def bn_mode() -> Optional[str]:
    """How ``F.batch_norm`` (inference, float32, channels_last) rounds on this machine: 'fma' (one rounding,
    ``fma(x, scale, shift)``), 'mul_add' (two), or None (neither, or no native kernels: the glue then calls
    ATen). Checked once per process against the native glue, bitwise, on channel counts with and without
    vector tails and on values that tell the two apart."""
    ops = bitconv_ops()
    if ops is None or _glue_env() == 'aten':
        return None
    with _probe_lock:
        if 'bn' not in _probe:
            _probe['bn'] = _probe_bn(ops)
    return _probe['bn']


def _probe_bn(ops) -> Optional[str]:
    gen = torch.Generator().manual_seed(0)
    isa = glue_isa()
    found = None
    for mode, code in _BN_MODES.items():
        ok = True
        for c in (1, 7, 16, 24, 37, 96, 130):
            for n, h, w in ((1, 3, 5), (2, 4, 4)):
                x = (torch.randn(n, c, h, w, generator=gen) * 3).contiguous(memory_format=torch.channels_last)
                scale, shift = torch.randn(c, generator=gen), torch.randn(c, generator=gen)
                with torch.no_grad():
                    ref = F.batch_norm(x, torch.zeros(c), torch.ones(c), scale, shift, False, 0.0, 0.0)
                out = ops.glue(x.clone(), scale, shift, code, None, 1, None, None, None, isa)
                ok = ok and torch.equal(out, ref)
        if ok:
            found = mode
            break
    return found


def shortcut_reference(res: torch.Tensor, out_channels: int, stride: int) -> torch.Tensor:
    """The deployed model's weight-free shortcut (``models.blocks.shortcut``): 2x2 average pooling (ceil
    mode, padding not counted) at stride 2, then channel k reads channel k mod C."""
    if stride == 2:
        res = F.avg_pool2d(res, 2, 2, ceil_mode=True, count_include_pad=False)
    c = res.shape[1]
    if out_channels != c:
        reps = -(-out_channels // c)
        res = (res.repeat(1, reps, 1, 1) if reps > 1 else res)[:, :out_channels]
    return res


def _vec(name: str, v, channels: int) -> torch.Tensor:
    if not isinstance(v, torch.Tensor) or v.dim() != 1 or v.numel() != channels:
        what = f'{tuple(v.shape)}' if isinstance(v, torch.Tensor) else type(v).__name__
        raise ValueError(f'{name}: {what} not allowed (allowed: a tensor of shape ({channels},))')
    return v.detach().to(torch.float32).contiguous().clone()


class Glue:
    """Folded BN -> + shortcut -> RPReLU after one conv, as the deployed model computes it.

    Args:
        channels (int): the conv's output channels.
        bn (tuple, optional): (scale, shift) of the folded BN (the deployed BN's ``weight`` / ``bias``).
        rprelu (tuple, optional): (bias_in, slope, bias_out) of the RPReLU.
        residual_stride (int): 1 or 2, the stride of the conv whose input is the shortcut.
        isa (str, optional): the popcount path whose glue path to use (default: the best).

    Call: ``glue(y, residual=None)`` with ``y`` float32 (N, channels, H, W) channels_last (modified in
    place by the native path: pass a fresh conv output) and ``residual`` the conv's input (channels_last,
    (N, C, H * stride (+ 1), ...)); returns the glued tensor, channels_last.
    """

    def __init__(self,
                 channels: int,
                 bn: Optional[Sequence[torch.Tensor]] = None,
                 rprelu: Optional[Sequence[torch.Tensor]] = None,
                 residual_stride: int = 1,
                 isa: Optional[str] = None):
        if residual_stride not in (1, 2):
            raise ValueError(f'residual_stride: {residual_stride!r} not allowed (allowed: 1, 2)')
        self.channels = int(channels)
        self.bn = None if bn is None else tuple(_vec(f'bn[{i}]', t, channels) for i, t in enumerate(bn))
        self.rprelu = None if rprelu is None else tuple(_vec(f'rprelu[{i}]', t, channels) for i, t in enumerate(rprelu))
        if self.bn is not None and len(self.bn) != 2 or self.rprelu is not None and len(self.rprelu) != 3:
            raise ValueError('bn / rprelu: not allowed (allowed: (scale, shift) / (bias_in, slope, bias_out))')
        self.residual_stride = residual_stride
        self.isa = glue_isa(isa)
        mode = bn_mode() if self.bn is not None else 'fma'
        self.native = self.isa is not None and mode is not None
        self._bn_code = _BN_MODES[mode] if self.bn is not None and self.native else 0
        self._zeros = torch.zeros(self.channels)
        self._ones = torch.ones(self.channels)

    @property
    def nbytes(self) -> int:
        return 4 * self.channels * ((2 if self.bn else 0) + (3 if self.rprelu else 0))

    def native_args(self, residual: Optional[torch.Tensor]) -> Tuple:
        """(bn_w, bn_b, bn_mode, res, res_stride, b1, a, b2, isa): the native ops' glue arguments."""
        bn_w, bn_b = self.bn if self.bn is not None else (None, None)
        b1, a, b2 = self.rprelu if self.rprelu is not None else (None, None, None)
        return (bn_w, bn_b, self._bn_code, residual, self.residual_stride, b1, a, b2, self.isa)

    def __call__(self, y: torch.Tensor, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        if not y.is_contiguous(memory_format=torch.channels_last):
            y = y.contiguous(memory_format=torch.channels_last)
        if residual is not None and not residual.is_contiguous(memory_format=torch.channels_last):
            residual = residual.contiguous(memory_format=torch.channels_last)
        if self.native:
            return bitconv_ops().glue(y, *self.native_args(residual))
        return self.reference(y, residual)

    def reference(self, y: torch.Tensor, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The deployed model's ATen ops (``F.batch_norm``, ``F.avg_pool2d``, ``F.prelu``)."""
        with torch.no_grad():
            if self.bn is not None:
                y = F.batch_norm(y, self._zeros, self._ones, self.bn[0], self.bn[1], False, 0.0, 0.0)
            if residual is not None:
                y = y + shortcut_reference(residual, y.shape[1], self.residual_stride)
            if self.rprelu is not None:
                b1, slope, b2 = self.rprelu
                y = F.prelu(y + b1.view(1, -1, 1, 1), slope) + b2.view(1, -1, 1, 1)
        return y.contiguous(memory_format=torch.channels_last)
