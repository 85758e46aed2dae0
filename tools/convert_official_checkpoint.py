#!/usr/bin/env python
"""Convert the authors' NAS-BNN supernet checkpoint (VDIGPKU/NAS-BNN ``checkpoint.pth.tar``)
into a SandwichClassifier checkpoint of this project.

Examples::

    python tools/convert_official_checkpoint.py checkpoint.pth.tar work_dirs/nasbnn_official.pth
    python tools/convert_official_checkpoint.py checkpoint.pth.tar out.pth \
        --space configs/_base_/search_spaces/table1.py
    python tools/convert_official_checkpoint.py checkpoint.pth.tar out.pth --trust-checkpoint

The source is a ``torch.save`` dict whose ``state_dict`` keys carry DDP's ``module.`` prefix (a
bare state dict, or keys without the prefix, are accepted too). It is loaded with safe
unpickling (``weights_only``); ``--trust-checkpoint`` allows full unpickling of a file you trust
(its optimizer / scheduler entries may need it).

Every tensor of our model is filled from exactly one source tensor (the stem's
``step_initialized`` flag is set to True instead); a source tensor without a counterpart is
either one of the known leftovers (``biggest_cand``, ``smallest_cand``, ``*.scaling_factor``,
``*.w_init_state``, the ``*_s`` copies that ``to_static`` adds), which are listed and skipped,
or an error. Any missing, unexpected or wrongly shaped key is a one-line error naming it.

The authors normalize binary-conv weights with ``(W - mean) / W.std()`` (unbiased std, no eps);
the converted weights reproduce their logits only with the same normalization, so build the
backbone with ``wn_eps=0.0, wn_unbiased=True`` (recorded in ``meta['backbone_settings']``),
e.g. ``--cfg-options model.backbone.wn_eps=0.0 model.backbone.wn_unbiased=True``. Those logits
equal theirs to float rounding (float64: to ~1e-13); for *bit-identical* float32 logits also
compute in their order of operations with ``model.backbone.exact_parity=True``
(``tools/test.py --exact-parity``), since rounding differences of the faster default layout
can flip a binary activation and spread (see README, "The authors' released supernet").
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from nasbnn_mm.space import ArchitectureError, SearchSpace  # noqa: E402
from nasbnn_mm.utils.checkpoint import (UntrustedCheckpointError, load_checkpoint_file,  # noqa: E402
                                        publish_checkpoint)

__all__ = ['ConversionError', 'OFFICIAL_BACKBONE_SETTINGS', 'build_template', 'convert_state_dict',
           'convert_checkpoint', 'main']

# the backbone settings under which converted weights give the authors' logits
OFFICIAL_BACKBONE_SETTINGS = dict(wn_eps=0.0, wn_unbiased=True)

# their source tensors that have no counterpart in our model
_SKIP_RES = (
    re.compile(r'^(biggest_cand|smallest_cand)$'),          # subnet encodings (buffers)
    re.compile(r'\.scaling_factor$'),                        # alpha, recomputed every forward
    re.compile(r'\.w_init_state$'),                          # LSQ init flag (ours: step_initialized)
    re.compile(r'\.(weight_s|bias_s|scaling_factor_s|w_scale_s)$'),  # to_static copies
    re.compile(r'\.(bn_s|prelu_s)\.'),
)

# SeparableBinaryLayer (ours) <- BasicBlock (theirs); kernel / Bi-Transformation matrices are
# handled separately because their names depend on the kernel sizes
_BLOCK_MAP = {
    'sign1.bias': 'move11.bias',
    'conv_kxk.weight': 'binary_conv.weight',
    'act1.bias_in': 'move12.bias',
    'act1.slope': 'prelu1.prelu.weight',
    'act1.bias_out': 'move13.bias',
    'sign2.bias': 'move21.bias',
    'conv_1x1.weight': 'binary_conv1x1.weight',
    'act2.bias_in': 'move22.bias',
    'act2.slope': 'prelu2.prelu.weight',
    'act2.bias_out': 'move23.bias',
}
_STEM_MAP = {
    'conv.weight': 'conv.weight',
    'conv.step': 'conv.w_scale',
    'act.bias_in': 'move1.bias',
    'act.slope': 'relu.prelu.weight',
    'act.bias_out': 'move2.bias',
}
_BN_FIELDS = ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked')
# their LearnableBias holds (1, C, 1, 1); ours (C,)
_FLAT_BIAS = re.compile(r'\.move\d+\.bias$')


class ConversionError(ValueError):
    """A source checkpoint that does not map onto our model. The message is one line."""


def build_template(space: Optional[SearchSpace] = None, num_classes: int = 1000, device='meta'):
    """Our SandwichClassifier for ``space`` with the official backbone settings; on the meta
    device by default (shapes only, no memory)."""
    import nasbnn_mm  # noqa: F401  (registers the nasbnn scope)
    from mmengine.registry import DefaultScope

    from nasbnn_mm.registry import MODELS
    space = SearchSpace.build(space)
    cfg = dict(
        type='nasbnn.SandwichClassifier',
        backbone=dict(type='nasbnn.NASBNNSupernet', search_space=space.to_dict(), **OFFICIAL_BACKBONE_SETTINGS),
        neck=dict(type='mmpretrain.GlobalAveragePooling'),
        head=dict(type='nasbnn.SlicedLinearClsHead', num_classes=num_classes,
                  in_channels=max(space.stages[-1].widths)),
        data_preprocessor=dict(type='mmpretrain.ClsDataPreprocessor', num_classes=num_classes))
    # the classifier builds its unprefixed defaults (losses) in the current default scope
    with DefaultScope.overwrite_default_scope('mmpretrain'), torch.device(device):
        return MODELS.build(cfg)


def _kernel_sizes(space: SearchSpace, si: int) -> Tuple[int, ...]:
    return tuple(sorted(set(space.stages[si].kernels)))


def _source_key(key: str, space: SearchSpace) -> Optional[str]:
    """Their (unprefixed) key for our ``key``; None for keys that are set, not copied."""
    if key.startswith('head.fc.'):
        return key[len('head.'):]
    if key == 'backbone.stem.conv.step_initialized':
        return None
    m = re.match(r'^backbone\.stem\.(.+)$', key)
    if m:
        rest = m.group(1)
        if rest in _STEM_MAP:
            return 'features.0.0.' + _STEM_MAP[rest]
        bn = re.match(r'^bn\.(\w+)$', rest)
        if bn and bn.group(1) in _BN_FIELDS:
            return f'features.0.0.bn.bn.{bn.group(1)}'
        raise ConversionError(f'no source mapping for our key {key!r}')
    m = re.match(r'^backbone\.stages\.(\d+)\.(\d+)\.(.+)$', key)
    if not m:
        raise ConversionError(f'no source mapping for our key {key!r}')
    si, li, rest = int(m.group(1)), int(m.group(2)), m.group(3)
    prefix = f'features.{si + 1}.{li}.'
    if rest in _BLOCK_MAP:
        return prefix + _BLOCK_MAP[rest]
    bn = re.match(r'^(bn[12])\.(\w+)$', rest)
    if bn and bn.group(2) in _BN_FIELDS:
        return f'{prefix}{bn.group(1)}.bn.{bn.group(2)}'
    ks = _kernel_sizes(space, si)
    if rest == 'conv_kxk.bi_transform':
        return f'{prefix}binary_conv.fp2bin_{ks[-1]}'
    kt = re.match(r'^conv_kxk\.kernel_transforms\.k(\d+)$', rest)
    if kt:
        k = int(kt.group(1))
        if len(ks) > 2:
            # theirs chains matrix_7to5 then matrix_5to3; ours maps the largest kernel to each
            # smaller one directly, which is a different function for 3+ kernel sizes
            raise ConversionError(
                f'{key}: stage {si + 1} has kernel sizes {ks}; only spaces with at most 2 kernel sizes per '
                'stage convert exactly (their kernel transforms are chained)')
        return f'{prefix}binary_conv.matrix_{ks[-1]}to{k}'
    raise ConversionError(f'no source mapping for our key {key!r}')


def _strip_prefix(sd: Mapping[str, torch.Tensor]) -> Dict[str, Tuple[str, torch.Tensor]]:
    """unprefixed key -> (key as in the file, tensor)."""
    out: Dict[str, Tuple[str, torch.Tensor]] = {}
    for k, v in sd.items():
        if not isinstance(k, str):
            raise ConversionError(f'source state_dict: non-string key {k!r}')
        bare = k[len('module.'):] if k.startswith('module.') else k
        if bare in out:
            raise ConversionError(f'source state_dict: key {k!r} appears both with and without the module. prefix')
        if not isinstance(v, torch.Tensor):
            raise ConversionError(f'source state_dict: {k!r} is a {type(v).__name__}, not a tensor')
        out[bare] = (k, v)
    return out


def is_skipped(bare_key: str) -> bool:
    return any(r.search(bare_key) for r in _SKIP_RES)


def convert_state_dict(official: Mapping[str, torch.Tensor], space=None, num_classes: Optional[int] = None
                       ) -> Tuple['OrderedDict[str, torch.Tensor]', List[str]]:
    """Map the authors' state dict onto ours.

    Returns ``(state_dict, skipped)``: our SandwichClassifier state dict (every key filled) and
    the source keys (as spelled in the source) that were skipped for having no counterpart.
    Raises :class:`ConversionError` (one line, naming the key) on a missing, unexpected or
    wrongly shaped key.
    """
    space = SearchSpace.build(space)
    src = _strip_prefix(official)
    pfx = 'module.' if any(name.startswith('module.') for name, _ in src.values()) or not src else ''
    if num_classes is None:
        num_classes = int(src['fc.weight'][1].shape[0]) if 'fc.weight' in src else 1000
    template = build_template(space, num_classes).state_dict()
    out: 'OrderedDict[str, torch.Tensor]' = OrderedDict()
    used: Dict[str, str] = {}
    for key, ref in template.items():
        bare = _source_key(key, space)
        if bare is None:  # stem LSQ: the release's step sizes are trained, never re-initialise them
            out[key] = torch.ones(ref.shape, dtype=ref.dtype)
            continue
        if bare not in src:
            raise ConversionError(f'missing key {pfx + bare!r} in the source (needed for {key})')
        name, t = src[bare]
        if bare in used:  # cannot happen with the tables above; guards future edits
            raise ConversionError(f'source key {name!r} would fill both {used[bare]} and {key}')
        want = tuple(ref.shape)
        if _FLAT_BIAS.search(bare):
            ok = tuple(t.shape) == (1, *want, 1, 1)
        else:
            ok = tuple(t.shape) == want
        if not ok:
            expect = (1, *want, 1, 1) if _FLAT_BIAS.search(bare) else want
            raise ConversionError(
                f'shape mismatch for {name!r}: {tuple(t.shape)} in the source, expected {expect} (for {key})')
        if t.is_floating_point() != ref.is_floating_point():
            raise ConversionError(f'dtype mismatch for {name!r}: {t.dtype} in the source, expected {ref.dtype} '
                                  f'(for {key})')
        used[bare] = key
        out[key] = t.detach().reshape(want).to(device='cpu', dtype=ref.dtype)
    skipped = []
    for bare, (name, _) in src.items():
        if bare in used:
            continue
        if is_skipped(bare):
            skipped.append(name)
        else:
            raise ConversionError(f'unexpected key {name!r} in the source (no counterpart in our model)')
    return out, skipped


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def _plain_value(v):
    return v if v is None or isinstance(v, (str, int, float, bool)) else str(v)


def convert_checkpoint(src: str, dst: str, space=None, trusted: bool = False, log=print) -> dict:
    """Read the authors' checkpoint ``src``, write ours to ``dst``; returns the meta written."""
    space = SearchSpace.build(space)
    ckpt = load_checkpoint_file(src, map_location='cpu', trusted=trusted)
    if isinstance(ckpt, Mapping) and 'state_dict' in ckpt:
        official = ckpt['state_dict']
    elif isinstance(ckpt, Mapping) and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        official = ckpt
    else:
        raise ConversionError(f"{src}: expected a dict with 'state_dict' (or a bare state dict)")
    if not isinstance(official, Mapping):
        raise ConversionError(f"{src}: 'state_dict' is a {type(official).__name__}, not a dict")
    sd, skipped = convert_state_dict(official, space)
    meta = dict(
        source=os.path.abspath(src),
        source_sha256=_sha256(src),
        source_format='VDIGPKU/NAS-BNN SuperBNN state_dict',
        converted_by='tools/convert_official_checkpoint.py',
        space=space.to_dict(),
        num_classes=int(sd['head.fc.weight'].shape[0]),
        backbone_settings=dict(OFFICIAL_BACKBONE_SETTINGS),
        skipped=list(skipped),
    )
    if isinstance(ckpt, Mapping):
        for k in ('epoch', 'arch'):
            if k in ckpt:
                meta[f'source_{k}'] = _plain_value(ckpt[k])
    publish_checkpoint(sd, dst, meta)
    if log:
        n_el = sum(v.numel() for v in sd.values())
        log(f'converted {len(sd)} tensors ({n_el:,} elements) from {src} -> {dst}')
        static = [k for k in skipped if re.search(r'_s(\.|$)', k)]
        log(f'skipped {len(skipped)} source tensors without a counterpart:')
        for k in skipped:
            log(f'  {k}')
        if static:
            log(f'warning: {len(static)} of them are to_static (*_s) copies: a fine-tuned subnet '
                "checkpoint's tuned weights live there and were NOT converted")
        log('build the backbone with ' + ', '.join(f'{k}={v}' for k, v in OFFICIAL_BACKBONE_SETTINGS.items())
            + " (meta['backbone_settings']) to reproduce the authors' logits, e.g. --cfg-options "
            + ' '.join(f'model.backbone.{k}={v}' for k, v in OFFICIAL_BACKBONE_SETTINGS.items())
            + '; add model.backbone.exact_parity=True (tools/test.py --exact-parity) for bit-identical float32 logits')
    return meta


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('src', help="the authors' checkpoint (checkpoint.pth.tar)")
    p.add_argument('dst', help='output checkpoint (SandwichClassifier state dict)')
    p.add_argument('--space', help='config file whose `search_space` defines the space (default: Table 1)')
    p.add_argument('--trust-checkpoint', action='store_true',
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
