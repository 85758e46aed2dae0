"""Checkpoint files: safe loading by default, atomic writing.

Policy (torch >= 2.6 loads with ``weights_only=True``):
  * checkpoints this project writes for others (supernet, exported subnet, detector weights)
    hold only tensors and plain Python values, so they load with ``weights_only=True``;
  * mmengine's own training checkpoints pickle arbitrary objects (e.g. the message hub's
    HistoryBuffer pickles ``getattr``). They are unpickled fully only when resuming from the
    run's own work dir (see :class:`nasbnn_mm.engine.NASBNNRunner`) or when the user passes
    an explicit trust flag (``--trust-checkpoint`` / ``trust_checkpoint=True``);
  * any other file that safe loading refuses raises :class:`UntrustedCheckpointError`.
Safe loading is never switched off globally.
"""
from __future__ import annotations
import os
import pickle
import re
import secrets
from collections import OrderedDict
from typing import Any, Optional

import torch

__all__ = [
    'UntrustedCheckpointError', 'CheckpointMismatchError', 'load_checkpoint_file', 'save_checkpoint_file',
    'publish_checkpoint', 'TRUST_HINT', 'atomic_write_text', 'check_finite'
]

TRUST_HINT = ('pass --trust-checkpoint (or set trust_checkpoint=True in the config) only if you trust '
              'the file, since full unpickling can run arbitrary code')


class UntrustedCheckpointError(pickle.UnpicklingError):
    """A checkpoint that safe loading refuses."""


class CheckpointMismatchError(ValueError):
    """A checkpoint whose tensors do not fit the model; the one-line message names the first
    mismatching tensor."""


def check_finite(state_dict, source: str, limit: int = 3) -> None:
    """Raise (one line, naming the first tensors) when floating-point tensors hold NaN or Inf."""
    bad = [
        k for k, v in state_dict.items()
        if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]
    if bad:
        more = f' and {len(bad) - limit} more' if len(bad) > limit else ''
        raise CheckpointMismatchError(f'checkpoint {source}: non-finite values (NaN or Inf) in {bad[:limit]}{more}')


def _offending_global(msg: str) -> str:
    """The pickled global that safe loading refused, from torch's message (its wording varies)."""
    for pattern in (r'Unsupported global: GLOBAL ([\w\.]+)', r'unsupported GLOBAL ([\w\.]+)',
                    r'GLOBAL ([\w\.]+) was not an allowed global'):
        m = re.search(pattern, msg, re.IGNORECASE)
        if m:
            return m.group(1)
    m = re.search(r'Unsupported operand (\d+)', msg)
    return f'pickle opcode {m.group(1)}' if m else 'an object outside the safe set'


def load_checkpoint_file(path: str, map_location: Any = 'cpu', trusted: bool = False) -> Any:
    """Load a checkpoint file; safe (``weights_only=True``) unless ``trusted``.

    One-line errors: :class:`FileNotFoundError` (no such file), :class:`UntrustedCheckpointError`
    (safe loading refuses a pickled object; names it), :class:`CheckpointMismatchError` (a folder,
    an empty, truncated or garbage file)."""
    if os.path.isdir(path):
        raise CheckpointMismatchError(f'checkpoint {path!r}: a folder, not a checkpoint file')
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint: no such file {path!r}')
    if os.path.getsize(path) == 0:
        raise CheckpointMismatchError(f'checkpoint {path!r}: an empty file')
    with open(path, 'rb') as f:
        magic = f.read(4)
    if magic != b'PK\x03\x04' and magic[:1] != b'\x80':  # torch's zip format, or a legacy pickle
        raise CheckpointMismatchError(f'checkpoint {path!r}: not a readable checkpoint (neither a torch.save zip '
                                      'archive nor a pickle)')
    try:
        return torch.load(path, map_location=map_location, weights_only=not trusted)
    except pickle.UnpicklingError as e:
        if not trusted and 'weights only load failed' in str(e).lower():
            raise UntrustedCheckpointError(
                f'checkpoint {path!r} refused by safe loading: it pickles {_offending_global(str(e))}; '
                f'{TRUST_HINT}') from None
        raise CheckpointMismatchError(f'checkpoint {path!r}: not a readable checkpoint ({_first_line(e)})') from None
    except (RuntimeError, EOFError, ValueError, OSError, AttributeError, ImportError, IndexError, KeyError,
            TypeError) as e:
        raise CheckpointMismatchError(f'checkpoint {path!r}: not a readable checkpoint ({_first_line(e)})') from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ''
    return f'{type(e).__name__}: {text[:160]}' if text else type(e).__name__


def _atomic_write(path: str, write, binary: bool = True) -> str:
    """Call ``write(file)`` on a temp file next to ``path``, fsync, then rename over ``path``:
    a crash never leaves a half-written file, and an existing ``path`` stays intact."""
    path = os.path.abspath(path)
    d = os.path.dirname(path)
    os.makedirs(d, exist_ok=True)
    # not tempfile.mkstemp: it creates mode 0600, and published files must be readable like torch.save's
    tmp = os.path.join(d, f'.{os.path.basename(path)}.{secrets.token_hex(8)}.tmp')
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_BINARY', 0), 0o666)
    try:
        with os.fdopen(fd, 'wb' if binary else 'w') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def save_checkpoint_file(obj: Any, path: str) -> str:
    """Write ``obj`` with torch.save atomically."""
    return _atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path: str, text: str) -> str:
    """Write a text file atomically."""
    return _atomic_write(path, lambda f: f.write(text), binary=False)


def _plain(x: Any) -> Any:
    """Reduce to values that ``weights_only=True`` loads (tensors, str, numbers, containers)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().clone()
    if x is None or type(x) in (str, int, float, bool):
        return x
    if hasattr(x, 'dtype') and hasattr(x, 'tolist'):  # numpy scalar (np.float64 subclasses float!) or array
        return _plain(x.tolist())
    for t in (bool, int, float, str):  # other subclasses (enums, ...) would pickle their class
        if isinstance(x, t):
            return t(x)
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if hasattr(x, 'item') and getattr(x, 'ndim', 1) == 0:  # numpy scalar
        return x.item()
    return str(x)


def publish_checkpoint(state_dict: 'OrderedDict[str, torch.Tensor]', path: str, meta: Optional[dict] = None) -> str:
    """Write a checkpoint for others to use: ``{'meta': ..., 'state_dict': ...}`` that loads
    with ``weights_only=True`` (and with mmengine's stock ``load_checkpoint``)."""
    sd = OrderedDict((k, v.detach().cpu().clone()) for k, v in state_dict.items())
    return save_checkpoint_file({'meta': _plain(meta or {}), 'state_dict': sd}, path)
