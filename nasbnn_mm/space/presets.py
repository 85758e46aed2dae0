"""NAS-BNN-A ... F of the paper (Table 6), in the Table-1 space.

The printed Table 6 is ambiguous for C and E; the architectures below for those two are the
closest valid (ND, Table-1) architectures to the printed text. Names are accepted as
``A``..``F``, ``a``..``f``, ``nasbnn-a`` or ``NAS-BNN-A``. Architectures are built from these
texts by :func:`nasbnn_mm.space.get_preset` (this module is data and names only).
"""
from __future__ import annotations
import re
from typing import Dict

from .errors import ArchitectureError, short_repr

__all__ = ['PRESET_TEXTS', 'PRESET_NAMES', 'preset_name']

PRESET_TEXTS: Dict[str, str] = {
    'A':
    'c24_k3_g1 | c48_k3_g1 c48_k3_g1 | c96_k3_g2 c96_k3_g2 | c192_k3_g4 c192_k3_g4 '
    '| c384_k3_g8 x8 | c768_k3_g16 c768_k3_g16',
    'B':
    'c24_k3_g1 | c48_k3_g1 c48_k3_g1 | c96_k3_g2 c192_k3_g2 | c192_k3_g2 c384_k3_g2 '
    '| c384_k5_g8 c768_k3_g8 c768_k3_g8 c768_k3_g8 c768_k3_g8 c768_k3_g8 c768_k3_g4 c768_k3_g4 '
    '| c1536_k5_g16 c1536_k5_g16 c1536_k3_g16',
    'C':
    'c24_k3_g1 | c48_k3_g1 c64_k3_g1 | c96_k5_g2 c192_k3_g1 | c384_k3_g2 c384_k3_g4 c384_k3_g4 '
    '| c768_k5_g4 c768_k3_g4 c768_k5_g4 c768_k3_g4 c768_k3_g4 c768_k3_g8 c768_k3_g8 c768_k3_g8 '
    '| c1536_k3_g8 c1536_k5_g16 c1536_k3_g8',
    'D':
    'c48_k3_g1 | c48_k3_g1 c96_k3_g1 | c192_k5_g2 c192_k3_g2 | c384_k3_g2 c384_k3_g4 c384_k3_g4 '
    '| c768_k3_g4 c768_k3_g4 c768_k3_g4 c768_k5_g8 c768_k5_g4 c768_k5_g4 c768_k5_g4 c768_k3_g4 '
    '| c1536_k5_g8 c1536_k5_g8 c1536_k3_g8',
    'E':
    'c48_k3_g1 | c48_k3_g1 c48_k3_g1 c96_k3_g1 | c192_k5_g2 c192_k5_g1 | c384_k3_g2 c384_k3_g4 c384_k3_g4 '
    '| c768_k3_g4 c768_k3_g4 c768_k5_g8 c768_k5_g4 c768_k3_g4 c768_k5_g4 c768_k5_g8 c768_k3_g4 '
    '| c1536_k5_g8 c1536_k5_g8 c1536_k3_g8',
    'F':
    'c48_k3_g1 | c48_k3_g1 c96_k3_g1 c96_k3_g1 | c192_k3_g1 c192_k3_g1 | c384_k5_g2 c384_k3_g2 c384_k3_g2 '
    '| c768_k5_g4 c768_k5_g4 c768_k3_g4 c768_k3_g4 c768_k3_g4 c768_k5_g4 c768_k5_g4 c768_k5_g4 c768_k5_g4 '
    '| c1536_k3_g16 c1536_k5_g8 c1536_k3_g8',
}
PRESET_NAMES = tuple(PRESET_TEXTS)

_NAME_RE = re.compile(r'^(?:nas-?bnn[-_]?)?([a-f])$', re.IGNORECASE)


def preset_name(name: str) -> str:
    """Canonical letter of a preset name, or a one-line error listing the allowed names."""
    m = _NAME_RE.match(name.strip())
    if m is None:
        raise ArchitectureError(f'architecture: unknown preset {short_repr(name)} (allowed: {", ".join(PRESET_NAMES)}, '
                                'also written nasbnn-a ... nasbnn-f), and not an architecture text')
    return m.group(1).upper()
