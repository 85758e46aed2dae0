"""Exact binary convolution kernels of a deployed NAS-BNN subnet, with several backends and an autotuner.

One binary conv of the deployed model (:class:`nasbnn_mm.models.packed.DeployedBinaryConv2d` after
its RSign), for float32 activations ``x`` (N, C, H, W) and a per-channel RSign threshold ``b``::

    s   = sign(x + b)                      # in {-1, 0, +1}; x + b in float32; 0 only where x + b == 0
    acc = conv2d(s, w, stride, padding=k // 2, groups)    # w in {-1, +1}; zero padding of s
    out = float32(acc) * alpha[o]          # acc is an exact integer: one rounding
    out = out * scale[o] + shift[o]        # optional fused per-channel affine (two roundings, no FMA)

Every backend returns exactly these float32 numbers (bitwise; the tests check it against
:func:`reference_binary_conv`, a float64 ``F.conv2d``):

========== =====================================================================================
backend    how
========== =====================================================================================
popcount   native XNOR-popcount kernels (``csrc/bitconv.cpp``): sign(x + b) bit-packed along the
           channels in one pass, weights 1 bit each; AVX-512 VPOPCNTDQ / AVX2 / scalar chosen at
           run time (:func:`dispatch_path`; force with ``isa=`` or ``NASBNN_BITCONV_ISA``).
int8       oneDNN quantized conv (``torch.ops.onednn.qconv2d_pointwise``): uint8 s + 1 with zero
           point 1 (the padding then contributes 0), int8 ±1 weights, alpha as the weight scale,
           float32 output. Any shape.
int8_mm    ``torch._int_mm`` (int8 x int8 -> int32 GEMM) of (N*Ho*Wo, C) by (C, cout); 1x1 convs
           with groups 1 only.
bf16       ``F.conv2d`` on float32 ±1/0 tensors under ``torch.backends.mkldnn.conv.fp32_precision =
           'bf16'`` (oneDNN down-converts the inputs to bf16 losslessly and accumulates in float32;
           set only around the call). NOT ``F.conv2d`` on bf16 tensors: that rounds the output.
fp32       plain ``F.conv2d`` on float32 ±1/0 tensors (exact: integer sums below 2^24).
reference  float64 ``F.conv2d`` (slow; the definition).
========== =====================================================================================

``backend='auto'`` (default) times the applicable backends once per input shape and thread count
(:meth:`BinaryConvKernel.tune`) and keeps the fastest, cached in a JSON file keyed by the CPU model
(:func:`autotune_cache_path`; ``NASBNN_BITCONV_AUTOTUNE=0`` skips the timing and takes 'popcount'
where the native kernels are built, else 'fp32').

Layouts: ``x`` may be contiguous (NCHW) or channels_last (NHWC); the output is channels_last by
default (``out_layout='nhwc'``: what the popcount kernel writes directly and what the next layer's
packing reads fastest) or contiguous (``out_layout='nchw'``).

This module imports torch only (not mmengine / mmpretrain / mmdet), so that a deployment runtime can
use it without the training stack.
"""
from __future__ import annotations
import contextlib
import json
import math
import os
import platform
import tempfile
import threading
import time
from typing import Dict, Iterable, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from .native import bitconv_ops

__all__ = [
    'BACKENDS', 'ISAS', 'BinaryConvKernel', 'reference_binary_conv', 'dispatch_path', 'supported_isas',
    'available_backends', 'pack_weight_words', 'unpack_weight_words', 'autotune_layer', 'autotune_cache_path',
    'cpu_model', 'popcount_peak'
]

BACKENDS = ('popcount', 'int8', 'int8_mm', 'bf16', 'fp32', 'reference')
TUNED_BACKENDS = ('popcount', 'int8', 'int8_mm', 'bf16', 'fp32')  # what 'auto' chooses from
ISAS = ('scalar', 'avx2', 'avx512')  # index = the native isa code
LAYOUTS = ('nchw', 'nhwc')
_ISA_ENV = 'NASBNN_BITCONV_ISA'
# 'auto' takes another backend than popcount only where its fastest call takes less than this share of
# popcount's (close calls are timing noise on a shared machine)
AUTOTUNE_MARGIN = 0.85
# the weight copies (BinaryConvKernel._backend_weights keys) each backend uses besides the packed bits
_BACKEND_WEIGHTS = {
    'popcount': (),
    'int8': ('int8', 'int8_zp'),
    'int8_mm': ('int8_mm', ),
    'bf16': ('float', 'float_cl'),
    'fp32': ('float', 'float_cl'),
    'reference': ('float', )
}


# ---------------------------------------------------------------------------- dispatch
def supported_isas() -> List[str]:
    """The popcount dispatch paths this CPU can run (empty without the native kernels)."""
    ops = bitconv_ops()
    return [name for i, name in enumerate(ISAS) if ops is not None and ops.isa_supported(i)]


def dispatch_path(isa: Optional[str] = None) -> str:
    """The popcount kernel's instruction-set path: ``isa`` if given, else ``NASBNN_BITCONV_ISA``, else
    the best this CPU supports ('avx512' needs AVX-512 F/BW/DQ/VL + VPOPCNTDQ, then 'avx2', 'scalar').

    Args:
        isa (str, optional): 'scalar', 'avx2' or 'avx512' to force a path (tests, benchmarks).

    Returns:
        str: one of :data:`ISAS`.
    """
    ops = bitconv_ops()
    if ops is None:
        raise RuntimeError('popcount backend: the native kernels are not available (no C++ compiler, or '
                           'NASBNN_BITCONV_NATIVE=0); allowed backends here: ' + ', '.join(available_backends()))
    want = isa if isa is not None else (os.environ.get(_ISA_ENV, '').strip().lower() or None)
    if want is None:
        return ISAS[ops.best_isa()]
    if want not in ISAS:
        src = 'isa' if isa is not None else _ISA_ENV
        raise ValueError(f'{src}: {want!r} not allowed (allowed: {", ".join(ISAS)})')
    if not ops.isa_supported(ISAS.index(want)):
        raise ValueError(f'isa: {want!r} not supported by this CPU (supported: {", ".join(supported_isas())})')
    return want


def _int8_conv_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.onednn, 'qconv2d_pointwise')


def available_backends(kernel: Optional[int] = None, groups: Optional[int] = None) -> List[str]:
    """Backends usable here (for a layer with ``kernel`` / ``groups`` if given), in :data:`BACKENDS` order."""
    out = []
    for b in BACKENDS:
        if b == 'popcount' and bitconv_ops() is None:
            continue
        if b == 'int8' and not _int8_conv_available():
            continue
        if b == 'int8_mm' and (kernel not in (None, 1) or groups not in (None, 1) or not hasattr(torch, '_int_mm')):
            continue
        if b == 'bf16' and not torch.backends.mkldnn.is_available():
            continue
        out.append(b)
    return out


@contextlib.contextmanager
def _mkldnn_conv_precision(precision: str):
    """Set oneDNN's float32 conv math mode around a call ('bf16': bf16 inputs, float32 accumulation and
    output; 'ieee': plain float32), restoring the previous value (process-global: not thread-safe)."""
    conv = torch.backends.mkldnn.conv
    old = conv.fp32_precision
    conv.fp32_precision = precision
    try:
        yield
    finally:
        conv.fp32_precision = old


# ---------------------------------------------------------------------------- weights
def _check_int(name: str, v, allowed: str, ok) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not ok(v):
        raise ValueError(f'{name}: {v!r} not allowed (allowed: {allowed})')
    return v


def pack_weight_words(negative: torch.Tensor, groups: int) -> torch.Tensor:
    """Pure-PyTorch packing of sign bits into the kernel layout (the native ``pack_weights`` computes the same).

    Args:
        negative (Tensor): bool (out, in/groups, k, k), True where the weight is -1.
        groups (int): conv groups.

    Returns:
        Tensor: int32 words (groups, ceil(out_per_group / 16), k*k, ceil(in_per_group / 32), 16): bit c % 32 of
        word [g, ob, ky*k + kx, c // 32, l] is the sign bit of output channel g*opg + ob*16 + l, input channel c
        (bits and lanes past the group's channels are 0).
    """
    cout, cpg, k, _ = negative.shape
    opg = cout // groups
    ob, wg = -(-opg // 16), -(-cpg // 32)
    full = torch.zeros(groups, ob * 16, wg * 32, k * k, dtype=torch.bool)
    full[:, :opg, :cpg] = negative.reshape(groups, opg, cpg, k * k)
    bits = full.view(groups, ob, 16, wg, 32, k * k).permute(0, 1, 5, 3, 2, 4).long()  # G, OB, kk, Wg, 16, 32
    words = (bits << torch.arange(32, dtype=torch.long)).sum(-1)  # distinct powers of two: their bitwise OR
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)  # the same 32 bits, as int32


def unpack_weight_words(words: torch.Tensor, out_channels: int, in_per_group: int, kernel: int) -> torch.Tensor:
    """Inverse of :func:`pack_weight_words`: bool (out, in/groups, k, k), True where the weight is -1."""
    groups, ob, kk, wg, lanes = words.shape
    opg = out_channels // groups
    bits = (words.long().unsqueeze(-1) >> torch.arange(32, dtype=torch.long)) & 1  # G, OB, kk, Wg, 16, 32
    bits = bits.permute(0, 1, 4, 3, 5, 2).reshape(groups, ob * lanes, wg * 32, kk)[:, :opg, :in_per_group]
    return bits.bool().reshape(out_channels, in_per_group, kernel, kernel)


def _negative_from_weight(sign_weight: torch.Tensor) -> torch.Tensor:
    """bool (out, in/g, k, k), True where -1, from a ±1 float tensor or a bool tensor (True = +1)."""
    if not isinstance(sign_weight, torch.Tensor):
        raise TypeError(f'sign_weight: {type(sign_weight).__name__} not allowed (allowed: a torch.Tensor; packed file '
                        'bits go through BinaryConvKernel.from_packed_bits)')
    if sign_weight.dim() != 4 or sign_weight.shape[2] != sign_weight.shape[3] or sign_weight.shape[2] % 2 != 1:
        raise ValueError(f'sign_weight: shape {tuple(sign_weight.shape)} not allowed (allowed: (out, in/groups, k, k) '
                         'with odd k)')
    w = sign_weight.detach().cpu()
    if w.dtype == torch.bool:
        return ~w
    if not w.is_floating_point():
        raise ValueError(f'sign_weight: dtype {w.dtype} not allowed (allowed: a float tensor of ±1, or bool with '
                         'True = +1)')
    if not bool(((w == 1) | (w == -1)).all()):
        raise ValueError('sign_weight: values other than ±1 not allowed (allowed: exactly +1 / -1; the scale '
                         'goes to alpha)')
    return w < 0


# ---------------------------------------------------------------------------- reference
def _check_x(x: torch.Tensor, cin: int) -> None:
    if not isinstance(x, torch.Tensor) or x.dtype is not torch.float32 or x.dim() != 4:
        what = f'{x.dtype} {tuple(x.shape)}' if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f'x: {what} not allowed (allowed: float32 (N, C, H, W))')
    if x.shape[1] != cin:
        raise ValueError(f'x: {x.shape[1]} channels not allowed (allowed: {cin}, the in_channels of this conv)')
    if x.is_cuda or x.device.type != 'cpu':
        raise ValueError(f'x: device {x.device} not allowed (allowed: cpu)')


def _check_vec(name: str, v: Optional[torch.Tensor], n: int) -> Optional[torch.Tensor]:
    if v is None:
        return None
    if not isinstance(v, torch.Tensor) or v.dtype != torch.float32 or tuple(v.shape) != (n, ) or v.device.type != 'cpu':
        what = f'{v.dtype} {tuple(v.shape)} on {v.device}' if isinstance(v, torch.Tensor) else type(v).__name__
        raise ValueError(f'{name}: {what} not allowed (allowed: float32 CPU tensor of shape ({n},))')
    return v.contiguous()


def _signs(x: torch.Tensor, threshold: Optional[torch.Tensor]) -> torch.Tensor:
    """sign(x + b) in float32, in x's layout (the RSign of the deployed model)."""
    return torch.sign(x if threshold is None else x + threshold.view(1, -1, 1, 1))


def _affine(out: torch.Tensor, scale: Optional[torch.Tensor], shift: Optional[torch.Tensor]) -> torch.Tensor:
    if scale is not None:
        out = out * scale.view(1, -1, 1, 1)
    if shift is not None:
        out = out + shift.view(1, -1, 1, 1)
    return out


def _to_layout(out: torch.Tensor, layout: str) -> torch.Tensor:
    fmt = torch.channels_last if layout == 'nhwc' else torch.contiguous_format
    return out.contiguous(memory_format=fmt)


def reference_binary_conv(x: torch.Tensor,
                          sign_weight: torch.Tensor,
                          alpha: torch.Tensor,
                          groups: int = 1,
                          stride: int = 1,
                          threshold: Optional[torch.Tensor] = None,
                          scale: Optional[torch.Tensor] = None,
                          shift: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The definition, in float64: ``F.conv2d(sign(x + b), w) * alpha`` rounded once to float32, then
    ``* scale + shift`` in float32.

    Args:
        x (Tensor): float32 (N, C, H, W).
        sign_weight (Tensor): (out, C/groups, k, k), ±1 float or bool (True = +1).
        alpha (Tensor): float32 (out,).
        groups (int): conv groups. Defaults to 1.
        stride (int): conv stride (padding is k // 2). Defaults to 1.
        threshold (Tensor, optional): float32 (C,), the RSign bias b; None means 0.
        scale (Tensor, optional): float32 (out,), multiplied after alpha.
        shift (Tensor, optional): float32 (out,), added last.

    Returns:
        Tensor: float32 (N, out, Ho, Wo), contiguous.
    """
    w = (1 - 2 * _negative_from_weight(sign_weight).double())
    k = w.shape[-1]
    s = _signs(x, threshold).double()
    acc = F.conv2d(s, w, None, stride, k // 2, 1, groups)
    out = (acc * alpha.double().view(1, -1, 1, 1)).float()  # exact product, rounded once
    return _affine(out, scale, shift).contiguous()


# ---------------------------------------------------------------------------- autotune cache
_cache_lock = threading.Lock()
_cache: Dict[str, Dict[str, dict]] = {}  # path -> entries


def cpu_model() -> str:
    """The CPU model string (``/proc/cpuinfo`` 'model name', else :func:`platform.processor`)."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or 'unknown-cpu'


def autotune_cache_path() -> str:
    """The autotune JSON file: ``NASBNN_BITCONV_CACHE`` if set, else ``~/.cache/nasbnn_mm/bitconv_autotune.json``."""
    return os.environ.get('NASBNN_BITCONV_CACHE') or os.path.join(
        os.path.expanduser('~'), '.cache', 'nasbnn_mm', 'bitconv_autotune.json')


def _cache_load(path: str) -> Dict[str, dict]:
    with _cache_lock:
        if path not in _cache:
            try:
                with open(path) as f:
                    data = json.load(f)
                _cache[path] = data if isinstance(data, dict) else {}
            except (OSError, ValueError):
                _cache[path] = {}
        return _cache[path]


def _cache_store(path: str, key: str, entry: dict) -> None:
    with _cache_lock:
        entries = _cache.setdefault(path, {})
        entries[key] = entry
        try:  # merge with what other processes wrote meanwhile, then replace atomically
            with open(path) as f:
                on_disk = json.load(f)
            if isinstance(on_disk, dict):
                entries = {**on_disk, **entries}
                _cache[path] = entries
        except (OSError, ValueError):
            pass
        try:
            os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix='.bitconv_autotune.', dir=os.path.dirname(path) or '.')
            with os.fdopen(fd, 'w') as f:
                json.dump(entries, f, indent=1, sort_keys=True)
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only home: the choice stays in memory


def _autotune_enabled() -> bool:
    return os.environ.get('NASBNN_BITCONV_AUTOTUNE', '1').strip().lower() not in ('0', 'false', 'no', 'off')


# ---------------------------------------------------------------------------- the kernel
class BinaryConvKernel:
    """One exact binary conv (see the module doc), weights packed once at construction.

    Args:
        sign_weight (Tensor): (out, in/groups, k, k): float ±1 (exactly), or bool with True = +1 (the
            ``w > 0`` bits that :mod:`nasbnn_mm.models.packed` stores). For the packed file bits use
            :meth:`from_packed_bits`.
        alpha (Tensor): float32 (out,), the per-output-channel scale.
        groups (int): conv groups (in and out channels divisible by it). Defaults to 1.
        stride (int): 1 or 2 (padding is always k // 2). Defaults to 1.
        backend (str): one of :data:`BACKENDS` or 'auto' (the fastest of the applicable ones, timed
            once per input shape and thread count and cached; see :meth:`tune`). Defaults to 'auto'.
        scale (Tensor, optional): float32 (out,), a fused per-channel multiplier after alpha (e.g. a
            folded BN scale). Defaults to None (off).
        shift (Tensor, optional): float32 (out,), a fused per-channel addend after scale. Defaults to None.
        out_layout (str): 'nhwc' (channels_last output, default) or 'nchw' (contiguous).
        isa (str, optional): force the popcount path ('scalar', 'avx2', 'avx512'); default:
            ``NASBNN_BITCONV_ISA`` if set, else the best this CPU supports. Resolved once, here.

    Attributes:
        in_channels, out_channels, kernel_size, groups, stride (int): the conv.
        backend (str): the backend the last call ran (before any call: the fixed backend, or 'auto').
        nbytes (int): bytes held: packed weight words, alpha / scale / shift, and the weight copies of
            the PyTorch backends that have been used (released by :meth:`release_backend_weights`).

    Call: ``kernel(x, threshold=None)`` with ``x`` float32 (N, in_channels, H, W) contiguous or
    channels_last (other strides are copied first) and ``threshold`` the RSign bias b (in_channels,)
    float32 or None (0: for an input that is already ±1/0). Returns float32 (N, out_channels, Ho, Wo),
    Ho = ceil(H / stride), in ``out_layout``. No autograd (inference only).

    Thread safety: calls may run concurrently except with the 'bf16' / 'fp32' backends, which set
    oneDNN's process-global fp32 math mode around their conv.
    """

    def __init__(self,
                 sign_weight: torch.Tensor,
                 alpha: torch.Tensor,
                 groups: int = 1,
                 stride: int = 1,
                 backend: str = 'auto',
                 *,
                 scale: Optional[torch.Tensor] = None,
                 shift: Optional[torch.Tensor] = None,
                 out_layout: str = 'nhwc',
                 isa: Optional[str] = None):
        negative = _negative_from_weight(sign_weight)
        cout, cpg, k, _ = negative.shape
        _check_int('groups', groups, 'a positive divisor of out_channels', lambda g: g >= 1 and cout % g == 0)
        _check_int('stride', stride, '1, 2', lambda s: s in (1, 2))
        if backend not in BACKENDS + ('auto', ):
            raise ValueError(f'backend: {backend!r} not allowed (allowed: auto, {", ".join(BACKENDS)})')
        if out_layout not in LAYOUTS:
            raise ValueError(f'out_layout: {out_layout!r} not allowed (allowed: {", ".join(LAYOUTS)})')
        if k * k * cpg >= 2**24:
            raise ValueError(f'sign_weight: k*k*in/groups = {k * k * cpg} not allowed (allowed: < 2^24, exact in '
                             'float32)')
        self.out_channels, self.kernel_size, self.groups, self.stride = cout, k, groups, stride
        self.in_channels = cpg * groups
        self.alpha = _check_vec('alpha', alpha, cout)
        self.scale = _check_vec('scale', scale, cout)
        self.shift = _check_vec('shift', shift, cout)
        self.out_layout = out_layout
        if isa is not None and isa not in ISAS:
            raise ValueError(f'isa: {isa!r} not allowed (allowed: {", ".join(ISAS)})')
        self._isa = isa
        # the popcount path, fixed at construction (isa argument, else NASBNN_BITCONV_ISA, else the best)
        self._isa_code = ISAS.index(dispatch_path(isa)) if bitconv_ops() is not None else None
        self._out_cl = out_layout == 'nhwc'
        self._conv_op = bitconv_ops().conv.default if bitconv_ops() is not None else None
        self._conv_glue_op = bitconv_ops().conv_glue.default if bitconv_ops() is not None else None
        self._checked_threshold = None  # the last threshold tensor that passed the checks (skip re-checking it)
        self._fixed = backend
        applicable = available_backends(k, groups)
        if backend != 'auto' and backend not in applicable:
            raise ValueError(f'backend: {backend!r} not available for this layer here (k={k}, groups={groups}; '
                             f'allowed: {", ".join(applicable)})')
        ops = bitconv_ops()
        # the one stored form of the weights: 1 bit per weight in the popcount layout
        self._words = ops.pack_weights(negative, groups) if ops is not None else pack_weight_words(negative, groups)
        self._backend_weights: Dict[str, object] = {}
        self._choice: Dict[str, str] = {}  # shape key -> backend ('auto')
        self.backend = backend
        self.last_tune: Optional[dict] = None

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def from_packed_bits(cls,
                         bits: Union[np.ndarray, torch.Tensor, bytes],
                         shape: Sequence[int],
                         alpha: torch.Tensor,
                         groups: int = 1,
                         stride: int = 1,
                         **kwargs) -> 'BinaryConvKernel':
        """From the bits of :mod:`nasbnn_mm.models.packed`: ``numpy.packbits`` (big bit order) of ``w > 0``
        over (out, in/groups, k, k) in C order, padded to a whole byte.

        Args:
            bits: uint8 array / tensor / bytes holding at least ceil(numel / 8) bytes.
            shape: (out, in/groups, k, k).
            alpha, groups, stride, **kwargs: as the constructor.
        """
        if len(shape) != 4:
            raise ValueError(f'shape: {tuple(shape)} not allowed (allowed: (out, in/groups, k, k))')
        numel = math.prod(int(v) for v in shape)
        if isinstance(bits, torch.Tensor):
            bits = bits.cpu().numpy()
        arr = np.frombuffer(bits, dtype=np.uint8) if isinstance(bits, (bytes, bytearray)) else np.asarray(bits)
        if arr.dtype != np.uint8 or arr.ndim != 1 or arr.size < -(-numel // 8):
            raise ValueError(f'bits: {arr.dtype} {arr.shape} not allowed (allowed: uint8 (>= {-(-numel // 8)},))')
        positive = np.unpackbits(arr, count=numel, bitorder='big').astype(bool).reshape(tuple(int(v) for v in shape))
        return cls(torch.from_numpy(positive), alpha, groups, stride, **kwargs)

    @property
    def sign_weight(self) -> torch.Tensor:
        """The ±1 float32 weight (out, in/groups, k, k), unpacked from the stored bits."""
        neg = unpack_weight_words(self._words, self.out_channels, self.in_channels // self.groups, self.kernel_size)
        return 1 - 2 * neg.float()

    @property
    def nbytes(self) -> int:
        n = self._words.numel() * self._words.element_size()
        n += sum(v.numel() * v.element_size() for v in (self.alpha, self.scale, self.shift) if v is not None)
        for name, w in self._backend_weights.items():
            if name == 'int8':  # prepacked oneDNN weight: an opaque tensor; count its int8 elements
                n += self.out_channels * (self.in_channels // self.groups) * self.kernel_size**2
            elif isinstance(w, torch.Tensor):
                n += w.numel() * w.element_size()
        return n

    def release_backend_weights(self) -> None:
        """Drop the weight copies made for the PyTorch backends (rebuilt on the next call that needs them)."""
        self._backend_weights.clear()

    def dispatch_path(self) -> Optional[str]:
        """The popcount kernel's ISA path ('avx512', 'avx2', 'scalar'), or None where popcount is unavailable."""
        if self._isa_code is None or bitconv_ops() is None:
            return None
        return ISAS[self._isa_code]

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(in={self.in_channels}, out={self.out_channels}, k={self.kernel_size}, '
                f'groups={self.groups}, stride={self.stride}, backend={self.backend!r}, '
                f'out_layout={self.out_layout!r})')

    # ------------------------------------------------------------------ backends
    def _float_weight(self) -> torch.Tensor:
        w = self._backend_weights.get('float')
        if w is None:
            w = self._backend_weights['float'] = self.sign_weight.contiguous()
        return w

    def _run(self, backend: str, x: torch.Tensor, threshold: Optional[torch.Tensor]) -> torch.Tensor:
        k, g, st = self.kernel_size, self.groups, self.stride
        if backend == 'popcount':
            return self._popcount(x, threshold)
        if backend == 'reference':
            out = reference_binary_conv(x, self._float_weight(), self.alpha, g, st, threshold, self.scale, self.shift)
            return _to_layout(out, self.out_layout)
        if backend in ('fp32', 'bf16'):
            w = self._float_weight()
            s = _signs(x, threshold)
            if s.is_contiguous(memory_format=torch.channels_last) and not s.is_contiguous():
                wk = self._backend_weights.get('float_cl')
                if wk is None:
                    wk = self._backend_weights['float_cl'] = w.contiguous(memory_format=torch.channels_last)
                w = wk
            with _mkldnn_conv_precision('bf16' if backend == 'bf16' else 'ieee'):
                acc = F.conv2d(s, w, None, st, k // 2, 1, g)
            out = acc.mul_(self.alpha.view(1, -1, 1, 1))
            return _to_layout(_affine(out, self.scale, self.shift), self.out_layout)
        if backend == 'int8':
            packed = self._backend_weights.get('int8')
            if packed is None:
                w8 = (1 -
                      2 * unpack_weight_words(self._words, self.out_channels, self.in_channels // g, k).to(torch.int8))
                packed = self._backend_weights['int8'] = torch.ops.onednn.qconv_prepack(
                    w8, self.alpha, 1.0, 1, [st, st], [k // 2, k // 2], [1, 1], g, None)
                self._backend_weights['int8_zp'] = torch.zeros(self.out_channels, dtype=torch.long)
            u = self._int8_signs(x, threshold, unsigned=True)
            out = torch.ops.onednn.qconv2d_pointwise(u, 1.0, 1, packed, self.alpha, self._backend_weights['int8_zp'],
                                                     None, [st, st], [k // 2, k // 2], [1, 1], g, 1.0, 0, torch.float32,
                                                     'none', [], '')
            return _to_layout(_affine(out, self.scale, self.shift), self.out_layout)
        if backend == 'int8_mm':
            wt = self._backend_weights.get('int8_mm')
            if wt is None:
                neg = unpack_weight_words(self._words, self.out_channels, self.in_channels, 1)
                wt = self._backend_weights['int8_mm'] = (1 - 2 * neg.to(torch.int8)).view(self.out_channels,
                                                                                          -1).t().contiguous()
            if st != 1:
                x = x[:, :, ::st, ::st]
            s8 = self._int8_signs(x, threshold, unsigned=False)  # channels_last: rows of C values
            n, c, h, w_ = s8.shape
            acc = torch._int_mm(s8.permute(0, 2, 3, 1).reshape(n * h * w_, c), wt)
            out = acc.float().mul_(self.alpha).view(n, h, w_, -1).permute(0, 3, 1, 2)
            return _to_layout(_affine(out, self.scale, self.shift), self.out_layout)
        raise ValueError(f'backend: {backend!r} not allowed (allowed: {", ".join(BACKENDS)})')

    def _popcount(self, x: torch.Tensor, threshold: Optional[torch.Tensor]) -> torch.Tensor:
        if not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)):
            x = x.contiguous()
        if self._conv_op is None:
            raise RuntimeError('popcount backend: the native kernels are not available (allowed backends here: '
                               f'{", ".join(available_backends(self.kernel_size, self.groups))})')
        return self._conv_op(x, threshold, self._words, self.alpha, self.scale, self.shift, self.groups,
                             self.kernel_size, self.stride, self._out_cl, self._isa_code)

    @staticmethod
    def _int8_signs(x: torch.Tensor, threshold: Optional[torch.Tensor], unsigned: bool) -> torch.Tensor:
        """sign(x + b) (+ 1 if unsigned) as (u)int8, channels_last."""
        ops = bitconv_ops()
        if ops is not None:
            if not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)):
                x = x.contiguous()
            return ops.rsign_int8(x, threshold, unsigned)
        s = _signs(x, threshold)
        s = (s + 1).to(torch.uint8) if unsigned else s.to(torch.int8)
        return s.contiguous(memory_format=torch.channels_last)

    # ------------------------------------------------------------------ auto
    def _key(self, x: torch.Tensor) -> str:
        layout = 'nhwc' if (x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()) else 'nchw'
        isa = self.dispatch_path() or 'none'
        n, c, h, w = x.shape
        return (f'{cpu_model()}|torch {torch.__version__}|isa {isa}|threads {torch.get_num_threads()}|'
                f'{c}>{self.out_channels} k{self.kernel_size} g{self.groups} s{self.stride}|'
                f'{n}x{h}x{w} {layout}>{self.out_layout}')

    def tune(self,
             x: torch.Tensor,
             threshold: Optional[torch.Tensor] = None,
             repeats: int = 5,
             backends: Optional[Iterable[str]] = None,
             cache: bool = True) -> dict:
        """Time the applicable backends on ``x`` (interleaved, ``repeats`` rounds after one warm-up call
        each) and make the fastest this kernel's choice for x's shape: the backend with the fastest call
        (the least disturbed by other load), where it beats popcount by more than the margin
        :data:`AUTOTUNE_MARGIN` (else popcount).

        Args:
            x, threshold: a representative input (as for a call).
            repeats (int): timed calls per backend. Defaults to 5.
            backends (Iterable[str], optional): candidates; default: all of :data:`TUNED_BACKENDS`
                available for this layer.
            cache (bool): write the result to the JSON cache (:func:`autotune_cache_path`). Defaults to True.

        Returns:
            dict: ``{'key': str, 'backend': str, 'times_ms': {backend: median ms}, 'min_ms': {backend: fastest
            call, ms}}``.
        """
        _check_x(x, self.in_channels)
        threshold = _check_vec('threshold', threshold, self.in_channels)
        applicable = available_backends(self.kernel_size, self.groups)
        cands = [b for b in (backends or TUNED_BACKENDS) if b in applicable]
        bad = [b for b in (backends or ()) if b not in applicable]
        if bad or not cands:
            raise ValueError(f'backends: {bad or list(backends or ())} not allowed here (allowed: '
                             f'{", ".join(b for b in applicable if b in TUNED_BACKENDS)})')
        times: Dict[str, List[float]] = {b: [] for b in cands}
        with torch.no_grad():
            for b in cands:
                self._run(b, x, threshold)  # warm-up: weight preparation, oneDNN primitive caches
            for r in range(max(1, int(repeats))):
                order = cands[r % len(cands):] + cands[:r % len(cands)]
                for b in order:
                    t0 = time.perf_counter()
                    self._run(b, x, threshold)
                    times[b].append(time.perf_counter() - t0)
        med = {b: float(np.median(v)) * 1e3 for b, v in times.items()}
        fastest = {b: float(min(v)) * 1e3 for b, v in times.items()}  # the least disturbed call of each
        best = min(fastest, key=fastest.get)
        if best != 'popcount' and 'popcount' in fastest and fastest[best] > AUTOTUNE_MARGIN * fastest['popcount']:
            best = 'popcount'  # another backend must win clearly: timing noise on a busy machine flips close calls
        key = self._key(x)
        entry = {
            'backend': best,
            'times_ms': {
                b: round(t, 5)
                for b, t in med.items()
            },
            'min_ms': {
                b: round(t, 5)
                for b, t in fastest.items()
            }
        }
        self._choice[key] = best
        if cache:
            _cache_store(autotune_cache_path(), key, entry)
        keep = _BACKEND_WEIGHTS[best]
        for name in list(self._backend_weights):  # keep only what the choice needs
            if name not in keep:
                del self._backend_weights[name]
        self.last_tune = {'key': key, **entry}
        return self.last_tune

    def resolve(self, x: torch.Tensor, threshold: Optional[torch.Tensor] = None) -> str:
        """The backend a call with ``x`` runs: the fixed one, else the tuned choice for x's shape (from
        memory, the JSON cache, or by timing now via :meth:`tune`)."""
        if self._fixed != 'auto':
            return self._fixed
        key = self._key(x)
        choice = self._choice.get(key)
        if choice is None:
            entry = _cache_load(autotune_cache_path()).get(key)
            applicable = available_backends(self.kernel_size, self.groups)
            if isinstance(entry, dict) and entry.get('backend') in applicable:
                choice = entry['backend']
            elif _autotune_enabled():
                choice = self.tune(x, threshold)['backend']
            else:
                choice = 'popcount' if 'popcount' in applicable else 'fp32'
            self._choice[key] = choice
        return choice

    def fused(self, x: torch.Tensor, threshold: Optional[torch.Tensor], glue, residual: Optional[torch.Tensor] = None):
        """``glue(self(x, threshold), residual)``: the conv followed by a deployed layer's folded BN, shortcut
        and RPReLU (:class:`nasbnn_mm.deploy.glue.Glue`). With the popcount backend and the native glue, one
        native call: each block of output rows is glued right after the conv wrote it. Output channels_last.
        Needs a kernel without its own ``scale`` / ``shift``."""
        if self.scale is not None or self.shift is not None:
            raise ValueError('fused: a kernel with scale / shift not allowed (allowed: the glue holds the BN)')
        _check_x(x, self.in_channels)
        if threshold is not None and threshold is not self._checked_threshold:
            threshold = _check_vec('threshold', threshold, self.in_channels)
            self._checked_threshold = threshold
        backend = self._fixed if self._fixed != 'auto' else self.resolve(x, threshold)
        self.backend = backend
        if backend == 'popcount' and glue.native and self._conv_glue_op is not None:
            if not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)):
                x = x.contiguous()
            if residual is not None and not residual.is_contiguous(memory_format=torch.channels_last):
                residual = residual.contiguous(memory_format=torch.channels_last)
            return self._conv_glue_op(x, threshold, self._words, self.alpha, self.groups, self.kernel_size, self.stride,
                                      self._isa_code, *glue.native_args(residual))
        if backend == 'popcount':
            y = self._popcount(x, threshold)
        else:
            with torch.no_grad():
                y = self._run(backend, x, threshold)
        return glue(y, residual)

    def __call__(self, x: torch.Tensor, threshold: Optional[torch.Tensor] = None) -> torch.Tensor:
        _check_x(x, self.in_channels)
        if threshold is not None and threshold is not self._checked_threshold:
            threshold = _check_vec('threshold', threshold, self.in_channels)
            self._checked_threshold = threshold
        backend = self._fixed if self._fixed != 'auto' else self.resolve(x, threshold)
        self.backend = backend
        if backend == 'popcount':  # the fast path: one native call (no autograd graph: the op has none)
            return self._popcount(x, threshold)
        with torch.no_grad():
            return self._run(backend, x, threshold)


# ---------------------------------------------------------------------------- helpers
def autotune_layer(in_channels: int,
                   out_channels: int,
                   kernel: int,
                   groups: int = 1,
                   stride: int = 1,
                   height: int = 56,
                   width: Optional[int] = None,
                   batch: int = 1,
                   threads: Optional[int] = None,
                   *,
                   in_layout: str = 'nhwc',
                   out_layout: str = 'nhwc',
                   repeats: int = 5,
                   backends: Optional[Iterable[str]] = None,
                   cache: bool = True,
                   seed: int = 0) -> dict:
    """Time every applicable exact backend for one layer shape on random data and cache the fastest
    (the choice a ``backend='auto'`` :class:`BinaryConvKernel` of that shape then uses).

    Args:
        in_channels, out_channels, kernel, groups, stride: the conv (padding k // 2).
        height, width (int): the input spatial size (width defaults to height).
        batch (int): N. Defaults to 1.
        threads (int, optional): intra-op threads during the timing (restored after); default: current.
        in_layout, out_layout (str): 'nhwc' or 'nchw'. Default 'nhwc' both.
        repeats (int): timed calls per backend (median). Defaults to 5.
        backends (Iterable[str], optional): candidates (default: all applicable).
        cache (bool): store the choice in the JSON cache. Defaults to True.
        seed (int): of the random weights and input.

    Returns:
        dict: ``{'key', 'backend', 'times_ms'}`` as :meth:`BinaryConvKernel.tune`.
    """
    if in_layout not in LAYOUTS:
        raise ValueError(f'in_layout: {in_layout!r} not allowed (allowed: {", ".join(LAYOUTS)})')
    _check_int('in_channels', in_channels, 'a positive multiple of groups', lambda c: c >= 1 and c % groups == 0)
    gen = torch.Generator().manual_seed(seed)
    w = torch.randint(0, 2, (out_channels, in_channels // groups, kernel, kernel), generator=gen).bool()
    alpha = torch.rand(out_channels, generator=gen) + 0.5
    kern = BinaryConvKernel(w, alpha, groups, stride, 'auto', out_layout=out_layout)
    x = torch.randn(batch, in_channels, height, width or height, generator=gen)
    if in_layout == 'nhwc':
        x = x.contiguous(memory_format=torch.channels_last)
    b = torch.randn(in_channels, generator=gen) * 0.1
    old = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        return kern.tune(x, b, repeats=repeats, backends=backends, cache=cache)
    finally:
        torch.set_num_threads(old)


def popcount_peak(isa: Optional[str] = None, seconds: float = 0.2) -> float:
    """This CPU's peak XNOR-popcount rate of the kernel's inner loop on L1-resident data, in binary ops
    per second (1 op = 1 bit XORed and popcounted), with all intra-op threads running it.

    Args:
        isa (str, optional): the path (default: :func:`dispatch_path`).
        seconds (float): about how long to measure.
    """
    ops = bitconv_ops()
    if ops is None:
        raise RuntimeError('popcount_peak: the native kernels are not available')
    code = ISAS.index(dispatch_path(isa))
    iters = 1000
    while True:
        dt, nops = ops.popcount_peak(code, iters)
        if dt >= seconds * 0.5 or iters > 1 << 30:
            return nops / dt
        iters = int(iters * max(2.0, seconds / max(dt, 1e-6)))
