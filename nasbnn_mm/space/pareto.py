"""Reading the Pareto front written by the search (``pareto.json``).

Format (``nasbnn_mm.engine.search_loop``)::

    {"front": [{"bin": <OPs bin, M>, "arch": <text>, "ops": <M>, "acc": <score>}, ...],
     "search_space": <space dict>, "ops_unit": "M", ...}

An entry is selected by its OPs bin (an integer number of M, as printed by the search).
Pure Python, like the rest of :mod:`nasbnn_mm.space`.
"""
from __future__ import annotations
import json
import math
import os
from typing import Optional

from .errors import ArchitectureError, short_repr

__all__ = ['load_pareto', 'pareto_entry', 'non_dominated']


def non_dominated(records, ops_key: str = 'ops', acc_key: str = 'acc') -> list:
    """The records no other record dominates (at most as many OPs and a higher accuracy, or the same
    accuracy with fewer OPs), sorted by OPs: along it the accuracy strictly increases, so no point with
    fewer OPs and a higher accuracy is left out."""
    front, best = [], -math.inf
    for r in sorted(records, key=lambda r: (r[ops_key], -r[acc_key])):
        if r[acc_key] > best:
            front.append(r)
            best = r[acc_key]
    return front


def load_pareto(path: str) -> dict:
    """The parsed ``pareto.json``; one-line errors for a missing or malformed file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'pareto: no such file {path!r}')
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ArchitectureError(f'pareto: {path} is not JSON ({e.msg} at char {e.pos})') from None
    except (RecursionError, ValueError, UnicodeDecodeError) as e:
        raise ArchitectureError(f'pareto: {path} is not readable JSON ({type(e).__name__})') from None
    front = data.get('front') if isinstance(data, dict) else None
    if not isinstance(front, list) or not all(isinstance(r, dict) and 'bin' in r and 'arch' in r for r in front):
        raise ArchitectureError(f"pareto: {path} has no 'front' list of {{'bin', 'arch', ...}} entries")
    for i, r in enumerate(front):
        b = r['bin']
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not math.isfinite(b):
            raise ArchitectureError(
                f'pareto: {path} front[{i}].bin {short_repr(b)} not allowed (allowed: a finite number)')
        if not isinstance(r['arch'], str) or not r['arch'].strip():
            raise ArchitectureError(f'pareto: {path} front[{i}].arch {short_repr(r["arch"])} not allowed '
                                    '(allowed: an architecture text)')
    return data


def pareto_entry(path: str, ops: Optional[float]) -> dict:
    """The front entry of ``path`` whose OPs bin is ``ops`` (M; bins are multiples of the search's
    ``ops_step``, e.g. 40 at ImageNet scale or 0.12 at CIFAR scale)."""
    data = load_pareto(path)
    bins = {float(r['bin']): r for r in data['front']}
    allowed = ', '.join(f'{b:g}' for b in sorted(bins)) or 'none'
    if ops is None:
        raise ArchitectureError(f'ops: required with pareto={path!r} (allowed bins: {allowed})')
    try:
        want = float(ops)
    except (TypeError, ValueError):
        raise ArchitectureError(f'ops: {short_repr(ops)} is not a number (allowed bins: {allowed})') from None
    if isinstance(ops, bool) or not math.isfinite(want):
        raise ArchitectureError(f'ops: {short_repr(ops)} not allowed (allowed bins: {allowed})')
    key = min(bins, key=lambda b: abs(b - want)) if bins else None
    if key is None or abs(key - want) > 1e-6 * max(1.0, abs(want)):  # bins are printed rounded
        raise ArchitectureError(f'ops: bin {short_repr(ops)} not in {path} (allowed bins: {allowed})')
    return bins[key]
