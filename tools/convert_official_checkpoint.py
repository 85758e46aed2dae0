#!/usr/bin/env python
"""Convert the authors' NAS-BNN supernet checkpoint (VDIGPKU/NAS-BNN ``checkpoint.pth.tar``)
into a SandwichClassifier checkpoint of this project (logic: :mod:`nasbnn_mm.models.official`).

Examples::

    python tools/convert_official_checkpoint.py checkpoint.pth.tar work_dirs/nasbnn_official.pth
    python tools/convert_official_checkpoint.py checkpoint.pth.tar out.pth \
        --space configs/_base_/search_spaces/table1.py
    python tools/convert_official_checkpoint.py checkpoint.pth.tar out.pth --trust-checkpoint

Evaluate the result with ``--cfg-options model.backbone.wn_eps=0.0 model.backbone.wn_unbiased=True``
(their weight normalization), and ``--exact-parity`` on tools/test.py for bit-identical logits.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nasbnn_mm.models.official import (OFFICIAL_BACKBONE_SETTINGS, ConversionError, build_template, convert_checkpoint,
                                       convert_state_dict, official_keys)
from nasbnn_mm.space import ArchitectureError
from nasbnn_mm.utils.checkpoint import UntrustedCheckpointError

# the library's names, re-exported for scripts that import this tool
__all__ = [
    'OFFICIAL_BACKBONE_SETTINGS', 'ConversionError', 'build_template', 'convert_checkpoint', 'convert_state_dict',
    'official_keys', 'main'
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('src', help="the authors' checkpoint (checkpoint.pth.tar)")
    p.add_argument('dst', help='output checkpoint (SandwichClassifier state dict)')
    p.add_argument('--space', help='config file whose `search_space` defines the space (default: Table 1)')
    p.add_argument(
        '--trust-checkpoint',
        action='store_true',
        help='allow full unpickling of SRC (only for files you trust: it can run arbitrary code)')
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        convert_checkpoint(args.src, args.dst, args.space, trusted=args.trust_checkpoint)
    except (ConversionError, ArchitectureError, UntrustedCheckpointError, FileNotFoundError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
