"""The optional one-pass CPU kernels of ``csrc/binary_act.cpp`` (RSign / RPReLU).

Built on first use with torch's JIT extension builder (a C++20 compiler and ninja; ~10 s once,
then cached under ``TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``). Where they
cannot be built, or with ``NASBNN_NATIVE_OPS=0``, the operators use their ATen reference path
(same results; slower on CPU). Only float32 CPU tensors in contiguous or channels_last layout
take the native path; everything else (CUDA, float64 in tests, odd strides) uses the reference.
"""
from __future__ import annotations
import os
import threading
import warnings

import torch

__all__ = ['native_ops', 'native_enabled', 'supports']

_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'csrc', 'binary_act.cpp')
_NAME = 'nasbnn_binary_act'
# -fno-trapping-math: lets the compiler vectorize the branch-free selects (a * x is computed on
# both sides of x > 0); no contraction into FMAs, so each element rounds as the ATen path does
_CFLAGS = ['-O3', '-std=c++20', '-fopenmp', '-fno-trapping-math', '-ffp-contract=off']
_lock = threading.Lock()
_state = {'loaded': None}  # None: not tried yet; False: unavailable; else the op namespace


def native_enabled() -> bool:
    """Whether the native kernels may be used (``NASBNN_NATIVE_OPS=0`` turns them off)."""
    return os.environ.get('NASBNN_NATIVE_OPS', '1').strip().lower() not in ('0', 'false', 'no', 'off')


def _build():
    from ..utils.native_build import jit_load
    return jit_load(_NAME, [_SOURCE], _CFLAGS)


def native_ops():
    """The op namespace (``torch.ops.nasbnn_binary_act``), or None where unavailable."""
    loaded = _state['loaded']
    if loaded is None:
        with _lock:
            if _state['loaded'] is None:
                if not native_enabled():
                    return None  # decided per call: the variable may be set later (tests, benchmarks)
                try:
                    _state['loaded'] = _build()
                except Exception as e:  # no compiler / ninja / headers: the reference path works
                    warnings.warn(f'nasbnn_mm: native CPU activation kernels unavailable ({type(e).__name__}: '
                                  f'{str(e).splitlines()[0] if str(e) else ""}); using the ATen path (slower)')
                    _state['loaded'] = False
            loaded = _state['loaded']
    if loaded is False or not native_enabled():
        return None
    return loaded


def _layout_ok(t: torch.Tensor) -> bool:
    return t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last))


def supports(x: torch.Tensor) -> bool:
    """Whether an activation tensor can take the native path (then call :func:`native_ops`)."""
    return (x.device.type == 'cpu' and x.dtype == torch.float32 and x.dim() >= 2 and x.numel() > 0 and _layout_ok(x))
