"""Building the optional C++ kernels on first use (torch's JIT extension builder), shared by
``nasbnn_mm.ops.native`` (RSign / RPReLU) and ``nasbnn_mm.deploy.native`` (1-bit convs).

torch guards a build with a ``lock`` file in the extension's build folder and waits, without a
time limit, while it exists. A build that was killed (Ctrl-C, OOM, a machine restart) leaves that file
behind and every later process would wait forever. :func:`jit_load` removes a lock older than
``NASBNN_BUILD_LOCK_STALE_S`` seconds (default 600; a build takes 10-60 s) with a warning, then builds.
"""
from __future__ import annotations
import logging
import os
import sys
import time
import warnings
from typing import Sequence

__all__ = ['jit_load', 'clear_stale_lock']


def clear_stale_lock(build_dir: str, max_age_s: float = None) -> bool:
    """Remove ``build_dir/lock`` if it is older than ``max_age_s`` (default ``$NASBNN_BUILD_LOCK_STALE_S``
    or 600); returns whether it did."""
    if max_age_s is None:
        max_age_s = float(os.environ.get('NASBNN_BUILD_LOCK_STALE_S', '600'))
    lock = os.path.join(build_dir, 'lock')
    try:
        age = time.time() - os.path.getmtime(lock)
    except OSError:
        return False
    if age <= max_age_s:
        return False
    try:
        os.remove(lock)
    except FileNotFoundError:
        return False
    warnings.warn(f'nasbnn_mm: removed a stale build lock {lock} ({age:.0f} s old, left by a build that was '
                  'killed); building again')
    return True


def jit_load(name: str, sources: Sequence[str], cflags: Sequence[str], ldflags: Sequence[str] = ('-fopenmp', )):
    """``torch.utils.cpp_extension.load`` of an op library (``is_python_module=False``) with the venv's
    ninja on PATH, torch's CUDA notice silenced and a stale build lock cleared; returns
    ``torch.ops.<name>``."""
    import torch
    from torch.utils import cpp_extension
    bindir = os.path.dirname(sys.executable)  # a venv's ninja lives next to its python, maybe not on PATH
    if bindir not in os.environ.get('PATH', '').split(os.pathsep):
        os.environ['PATH'] = bindir + os.pathsep + os.environ.get('PATH', '')
    log = logging.getLogger('torch.utils.cpp_extension')
    level = log.level
    log.setLevel(logging.ERROR)  # "No CUDA runtime is found" on CPU-only machines: not our concern
    try:
        clear_stale_lock(cpp_extension._get_build_directory(name, verbose=False))
        cpp_extension.load(
            name,
            list(sources),
            extra_cflags=list(cflags),
            extra_ldflags=list(ldflags),
            is_python_module=False,
            verbose=False)
    finally:
        log.setLevel(level)
    return getattr(torch.ops, name)
