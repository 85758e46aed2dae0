"""Exact low-precision binary convolutions.

A student-mode binary convolution multiplies sign activations (±1, 0 at zero padding) with
``alpha * sign(w_n)`` (±alpha per output channel). Factored as ``alpha * conv(x, sign(w_n))``,
the convolution sums ±1 products: an integer below 2^24, exact in bfloat16 inputs with float32
accumulation, and the one multiply by alpha rounds it once. The float32 path ``conv(x, alpha *
sign)`` instead rounds every partial sum of ±alpha terms, so the factored result is the exact
value (rounded once to float32) and the float32 one is not.

Precision (the backbones' ``binary_conv_precision``), resolved per device at the first call:

* ``'fp32'``: ``F.conv2d(x, alpha * sign)`` -- the path the project always had (``exact_parity``
  forces it);
* ``'bf16'``: ``alpha * conv(x, sign)`` with the hardware's bfloat16 mode around the ±1
  convolutions only (CPU: oneDNN's fpmath mode, ``torch.backends.mkldnn.conv.fp32_precision =
  'bf16'``: float32 tensors are read as bfloat16 -- lossless for ±1 -- and accumulated and written
  in float32; CUDA: cuDNN's TF32, ``torch.backends.cudnn.conv.fp32_precision = 'tf32'``: ±1 is
  exact in TF32's 10-bit mantissa and the tensor cores accumulate in float32). The global setting
  is restored after each call. Where the hardware has no such mode the same convolutions run in
  float32: the result is the same exact value, only not faster;
* ``'auto'``: ``'bf16'`` where it runs fast -- a CPU with AMX-BF16 (Sapphire Rapids and later), a
  CUDA device of compute capability >= 8.0 (TF32 tensor cores) -- else ``'fp32'``. A CPU with
  AVX512_BF16 but no AMX (e.g. AMD Zen 4) gets ``'fp32'``: oneDNN 3.12 runs fpmath-bf16
  convolutions there with its float32 kernels (``ONEDNN_VERBOSE`` shows ``brg_conv_fwd:avx512_core``
  with ``attr-fpmath:bf16``), so there is nothing to gain (measured in the README).

Gradients (``binary_conv_grad``; only on the ``'bf16'`` path): the incoming gradient ``g`` is not
exact in bfloat16, the ±1 side (the weight signs for the input gradient, the sign activations for
the weight gradient) is.

* ``'fp32'``: the float32 convolution backward of ``conv(x, alpha * sign)`` -- what the
  ``'fp32'`` path computes;
* ``'bf16x2'`` / ``'bf16x3'``: ``alpha * g`` split into 2 (3) parts ``hi + lo`` (+ ``lo2``), each
  exact in bfloat16 except the last, which the hardware rounds; one bfloat16 convolution backward
  per part with float32 accumulation: ~16 (~24) mantissa bits of ``g``. The weight gradient is
  divided by alpha again (one rounding);
* ``'auto'``: ``'bf16x2'`` where the forward runs fast in bfloat16 (see above), else ``'fp32'``.

Teacher mode (full-precision normalized weights) stays float32 (see the README's measurement).

``EMULATE_BF16_ROUNDING = True`` rounds every part to bfloat16 in Python, so that a machine whose
hardware ignores the bfloat16 mode computes what a bfloat16 machine computes (up to the order of
float32 accumulation): the tests and ``benchmarks/lowp_accuracy.py`` use it.
"""
from __future__ import annotations
import contextlib
import threading
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

__all__ = [
    'PRECISIONS', 'GRAD_PRECISIONS', 'check_precision', 'check_grad_precision', 'resolve_precision', 'binary_conv2d',
    'set_binary_conv_precision', 'bf16_split', 'hardware_bf16', 'EMULATE_BF16_ROUNDING'
]

PRECISIONS = ('auto', 'bf16', 'fp32')
GRAD_PRECISIONS = ('auto', 'fp32', 'bf16x2', 'bf16x3')
_GRAD_PARTS = {'fp32': 0, 'bf16x2': 2, 'bf16x3': 3}

EMULATE_BF16_ROUNDING = False

_lock = threading.Lock()
_resolved: Dict[Tuple[str, str, str], Tuple[str, str]] = {}
_logged = set()


def check_precision(value, field: str = 'binary_conv_precision') -> str:
    if not isinstance(value, str) or value not in PRECISIONS:
        raise ValueError(f'{field}: {value!r} not allowed (allowed: {", ".join(map(repr, PRECISIONS))})')
    return value


def check_grad_precision(value, field: str = 'binary_conv_grad') -> str:
    if not isinstance(value, str) or value not in GRAD_PRECISIONS:
        raise ValueError(f'{field}: {value!r} not allowed (allowed: {", ".join(map(repr, GRAD_PRECISIONS))})')
    return value


# ----------------------------------------------------------------------------- hardware
def _cpu_flags() -> Dict[str, bool]:
    try:
        caps = torch.cpu.get_capabilities()
        return dict(amx_bf16=bool(caps.get('amx_bf16')), avx512_bf16=bool(caps.get('avx512_bf16')))
    except Exception:  # older torch: /proc/cpuinfo (Linux)
        try:
            with open('/proc/cpuinfo') as f:
                flags = set(next((ln for ln in f if ln.startswith('flags')), '').split())
        except OSError:
            flags = set()
        return dict(amx_bf16='amx_bf16' in flags, avx512_bf16='avx512_bf16' in flags)


def hardware_bf16(device: torch.device) -> Tuple[bool, str]:
    """(whether the bfloat16 path runs faster than float32 on ``device``, the reason in words)."""
    if device.type == 'cuda':
        major, minor = torch.cuda.get_device_capability(device)
        name = torch.cuda.get_device_name(device)
        if major >= 8:
            return True, f'{name}, compute capability {major}.{minor}: TF32 tensor cores'
        return False, f'{name}, compute capability {major}.{minor} < 8.0: no TF32 tensor cores'
    if device.type == 'cpu':
        if not (torch.backends.mkldnn.is_available() and hasattr(torch.backends.mkldnn, 'conv')):
            return False, 'CPU: no oneDNN bfloat16 math mode in this torch build'
        flags = _cpu_flags()
        if flags['amx_bf16']:
            return True, 'CPU with AMX-BF16: oneDNN bfloat16 math mode'
        if flags['avx512_bf16']:
            return False, ('CPU with AVX512_BF16 but no AMX: oneDNN runs bfloat16-math convolutions with its '
                           'float32 kernels here (no speed-up)')
        return False, 'CPU without AMX-BF16 / AVX512_BF16'
    return False, f'{device.type}: no bfloat16 math mode used'


def resolve_precision(precision: str, grad: str, device: torch.device) -> Tuple[str, str]:
    """The (forward, gradient) path for ``device``: ('fp32' | 'bf16', 'fp32' | 'bf16x2' | 'bf16x3');
    logs the choice once per device and setting (mmengine's current logger)."""
    key = (precision, grad, f'{device.type}:{device.index}')
    got = _resolved.get(key)
    if got is not None:
        return got
    fast, why = hardware_bf16(device)
    if precision == 'auto':
        fwd = 'bf16' if fast else 'fp32'
        fwd_why = f'auto -> {fwd} ({why})'
    else:
        fwd, fwd_why = precision, f'{precision} as configured ({why})'
    if fwd == 'fp32':
        bwd = 'fp32'
    elif grad == 'auto':
        bwd = 'bf16x2' if fast else 'fp32'
    else:
        bwd = grad
    got = (fwd, bwd)
    with _lock:
        _resolved[key] = got
        first = key not in _logged
        _logged.add(key)
    if first:
        from mmengine.logging import print_log
        what = ('conv(x, alpha * sign) in float32' if fwd == 'fp32' else
                f'alpha * conv(x, sign) with bfloat16 inputs and float32 accumulation (exact), gradients {bwd}')
        print_log(f'nasbnn binary convolutions on {device}: {what}; binary_conv_precision={fwd_why}', logger='current')
    return got


def set_binary_conv_precision(module: torch.nn.Module, precision: str = 'auto', grad: str = 'auto') -> None:
    """Set the precision of every binary conv (:class:`SharedBinaryConv2d`) inside ``module``."""
    from .dynamic_conv import SharedBinaryConv2d
    check_precision(precision)
    check_grad_precision(grad)
    for m in module.modules():
        if isinstance(m, SharedBinaryConv2d):
            m.conv_precision, m.conv_grad = precision, grad


# ----------------------------------------------------------------------------- math mode
@contextlib.contextmanager
def _bf16_math(device: torch.device):
    """The hardware's bfloat16 mode for float32 convolutions, restored afterwards."""
    if device.type == 'cpu':
        knobs = [(torch.backends.mkldnn.conv, 'bf16'), (torch.backends.mkldnn.matmul, 'bf16')]
    elif device.type == 'cuda':
        knobs = [(torch.backends.cudnn.conv, 'tf32')]
    else:
        knobs = []
    saved = []
    try:
        for obj, value in knobs:
            old = obj.fp32_precision
            if old != value:
                obj.fp32_precision = value
                saved.append((obj, old))
        yield
    finally:
        for obj, old in reversed(saved):
            obj.fp32_precision = old


def bf16_split(t: torch.Tensor, parts: int, inplace: bool = False) -> List[torch.Tensor]:
    """``t`` (float32) as ``parts`` float32 tensors summing to it exactly: every part but the last is
    bfloat16-exact (the leading bits, rounded to nearest), the last is the exact remainder, which
    the hardware rounds to bfloat16 (or this function does, with ``EMULATE_BF16_ROUNDING``).
    ``inplace``: ``t`` may be overwritten (it becomes the remainder)."""
    out = []
    rest = t
    for i in range(parts - 1):
        hi = rest.to(torch.bfloat16).to(torch.float32)
        rest = rest.sub_(hi) if (inplace or i > 0) else torch.sub(rest, hi)
        out.append(hi)
    if EMULATE_BF16_ROUNDING:
        rest = rest.to(torch.bfloat16).to(torch.float32)
    out.append(rest)
    return out


# ----------------------------------------------------------------------------- the convolution
def _channel(v: torch.Tensor) -> torch.Tensor:
    return v.view(1, -1, 1, 1)


class _BinaryConvFn(torch.autograd.Function):
    """``conv(x, w)`` for ``w = alpha * sign`` (±alpha per output channel, or 0), computed as
    ``alpha * conv(x, sign(w))`` in the bfloat16 math mode; the gradients are those of ``conv(x, w)``
    (for ``w``: the effective binary weight, as the float32 path's autograd sees it)."""

    @staticmethod
    def forward(ctx, x, w, stride, padding, groups, grad_parts):
        dims = tuple(range(1, w.dim()))
        alpha = torch.linalg.vector_norm(w, float('inf'), dim=dims)  # max |w|, exact: entries are +-alpha or 0
        sign = torch.sign(w)
        with _bf16_math(x.device):
            y = F.conv2d(x, sign, None, stride, padding, 1, groups)
        y.mul_(_channel(alpha))
        ctx.conf = (stride, padding, groups, grad_parts)
        if grad_parts:
            ctx.save_for_backward(x, sign, alpha)
        else:
            ctx.save_for_backward(x, w)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        stride, padding, groups, grad_parts = ctx.conf
        need_x, need_w = ctx.needs_input_grad[:2]
        args = ([stride] * 2, [padding] * 2, [1, 1], False, [0, 0], groups)
        if not grad_parts:  # float32: the convolution backward of conv(x, alpha * sign), as the fp32 path
            x, w = ctx.saved_tensors
            gx, gw, _ = torch.ops.aten.convolution_backward(g, x, w, None, *args, [need_x, need_w, False])
            return gx, gw, None, None, None, None
        x, sign, alpha = ctx.saved_tensors
        # d conv(x, alpha * sign) / dx = convT(alpha * g, sign); d / dw = conv_w(x, g) = conv_w(x, alpha * g) / alpha
        a = torch.where(alpha > 0, alpha, torch.ones_like(alpha))  # an all-zero filter has zero signs
        gx = gw = None
        with _bf16_math(g.device):
            for part in bf16_split(torch.mul(g, _channel(a)), grad_parts, inplace=True):
                px, pw, _ = torch.ops.aten.convolution_backward(part, x, sign, None, *args, [need_x, need_w, False])
                gx = px if gx is None else gx.add_(px)
                gw = pw if gw is None else gw.add_(pw)
        if gw is not None:
            gw.div_(a.view(-1, *([1] * (gw.dim() - 1))))
        return gx, gw, None, None, None, None


def binary_conv2d(x: torch.Tensor,
                  w: torch.Tensor,
                  stride: int,
                  padding: int,
                  groups: int,
                  precision: str = 'fp32',
                  grad: str = 'auto') -> torch.Tensor:
    """``F.conv2d(x, w, None, stride, padding, 1, groups)`` for a student-mode binary weight
    ``w = alpha * sign`` and sign activations ``x``, on the path ``precision`` / ``grad`` select for
    ``x``'s device (see the module docstring). Other dtypes than float32 run the factored form in
    their own precision (exact as well)."""
    fwd, bwd = resolve_precision(precision, grad, x.device)
    if fwd == 'fp32':
        return F.conv2d(x, w, None, stride, padding, 1, groups)
    parts = _GRAD_PARTS[bwd] if x.dtype == torch.float32 else 0
    return _BinaryConvFn.apply(x, w, stride, padding, groups, parts)


def _reset_cache() -> None:
    """Forget the resolved paths (tests that change the hardware answer)."""
    with _lock:
        _resolved.clear()
