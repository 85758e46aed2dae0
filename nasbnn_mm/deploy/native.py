"""Lazy build of the native 1-bit convolution kernels of ``csrc/bitconv.cpp`` (``torch.ops.nasbnn_bitconv``).

Built on first use with torch's JIT extension builder (a C++20 compiler and ninja; ~30 s once, then
cached under ``TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``), like
:mod:`nasbnn_mm.ops.native`. One build runs everywhere: the AVX-512 / AVX2 code is compiled with
function-level target attributes and chosen at run time. Where the build fails, or with
``NASBNN_BITCONV_NATIVE=0`` (or ``NASBNN_NATIVE_OPS=0``), :func:`bitconv_ops` returns None and
:mod:`nasbnn_mm.deploy.bitconv` uses its PyTorch backends only.

This module imports torch only (no mmengine / mmpretrain / mmdet).
"""
from __future__ import annotations
import hashlib
import os
import threading
import warnings

__all__ = ['bitconv_ops', 'bitconv_enabled', 'SOURCE', 'SOURCES', 'EXTENSION_NAME']

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'csrc', 'bitconv.cpp')
# the element-wise glue of a deployed layer (folded BN, shortcut, RPReLU), also fused into bitconv's conv
SOURCES = [SOURCE, os.path.join(os.path.dirname(SOURCE), 'glue.cpp')]
EXTENSION_NAME = 'nasbnn_bitconv'
# -ffp-contract=off: the epilogue's acc * alpha * scale + shift must not become an FMA (one rounding
# per operation, as PyTorch's separate ops); the SIMD code is enabled per function, not here
_CFLAGS = ['-O3', '-std=c++20', '-fopenmp', '-ffp-contract=off']
_HEADERS = [os.path.join(os.path.dirname(SOURCE), 'glue.h')]
_lock = threading.Lock()
_state = {'loaded': None}  # None: not tried yet; False: unavailable; else the op namespace


def _off(name: str) -> bool:
    return os.environ.get(name, '1').strip().lower() in ('0', 'false', 'no', 'off')


def bitconv_enabled() -> bool:
    """Whether the native kernels may be used (``NASBNN_BITCONV_NATIVE=0`` or ``NASBNN_NATIVE_OPS=0``
    turn them off)."""
    return not (_off('NASBNN_BITCONV_NATIVE') or _off('NASBNN_NATIVE_OPS'))


def _headers_hash() -> str:
    """A hash of the headers: torch's extension cache keys on the sources and flags only, so a header
    change reaches the build through this define."""
    h = hashlib.sha1()
    for path in _HEADERS:
        with open(path, 'rb') as f:
            h.update(f.read())
    return h.hexdigest()[:12]


def _build():
    from ..utils.native_build import jit_load
    return jit_load(EXTENSION_NAME, SOURCES, _CFLAGS + [f'-DNASBNN_HEADERS_HASH={_headers_hash()}'])


def bitconv_ops():
    """The op namespace ``torch.ops.nasbnn_bitconv``, or None where unavailable (no compiler, or
    turned off)."""
    if not bitconv_enabled():
        return None
    if _state['loaded'] is None:
        with _lock:
            if _state['loaded'] is None:
                try:
                    _state['loaded'] = _build()
                except Exception as e:  # no compiler / ninja / headers: the PyTorch backends work
                    warnings.warn(f'nasbnn_mm: native 1-bit conv kernels unavailable ({type(e).__name__}: '
                                  f'{str(e).splitlines()[0] if str(e) else ""}); popcount backend disabled')
                    _state['loaded'] = False
    return _state['loaded'] or None
