"""The authors' release (VDIGPKU/NAS-BNN): their supernet checkpoint layout and its conversion into a
SandwichClassifier checkpoint of this project (``tools/convert_official_checkpoint.py``).

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
import hashlib
import os
import re
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional, Tuple

import torch

from ..ops import LSQConv2d, RPReLU, RSign, SharedBinaryConv2d, SlicedBatchNorm2d
from ..space import SearchSpace
from ..utils.checkpoint import load_checkpoint_file, publish_checkpoint

__all__ = [
    'ConversionError', 'OFFICIAL_BACKBONE_SETTINGS', 'STEM_OFFICIAL', 'LAYER_OFFICIAL', 'build_template',
    'official_keys', 'convert_state_dict', 'convert_checkpoint', 'is_skipped'
]

# the backbone settings under which converted weights give the authors' logits
OFFICIAL_BACKBONE_SETTINGS = dict(wn_eps=0.0, wn_unbiased=True)

# their source tensors that have no counterpart in our model
_SKIP_RES = (
    re.compile(r'^(biggest_cand|smallest_cand)$'),  # subnet encodings (buffers)
    re.compile(r'\.scaling_factor$'),  # alpha, recomputed every forward
    re.compile(r'\.w_init_state$'),  # LSQ init flag (ours: step_initialized)
    re.compile(r'\.(weight_s|bias_s|scaling_factor_s|w_scale_s)$'),  # to_static copies
    re.compile(r'\.(bn_s|prelu_s)\.'),
)


class ConversionError(ValueError):
    """A source checkpoint that does not map onto our model. The message is one line."""


def build_template(space: Optional[SearchSpace] = None, num_classes: int = 1000, device='meta'):
    """Our SandwichClassifier for ``space`` with the official backbone settings; on the meta
    device by default (shapes only, no memory)."""
    from mmengine.registry import DefaultScope

    from ..registry import MODELS
    space = SearchSpace.build(space)
    cfg = dict(
        type='nasbnn.SandwichClassifier',
        backbone=dict(type='nasbnn.NASBNNSupernet', search_space=space.to_dict(), **OFFICIAL_BACKBONE_SETTINGS),
        neck=dict(type='mmpretrain.GlobalAveragePooling'),
        head=dict(type='nasbnn.SlicedLinearClsHead', num_classes=num_classes, in_channels=max(space.stages[-1].widths)),
        data_preprocessor=dict(type='mmpretrain.ClsDataPreprocessor', num_classes=num_classes))
    # the classifier builds its unprefixed defaults (losses) in the current default scope
    with DefaultScope.overwrite_default_scope('mmpretrain'), torch.device(device):
        return MODELS.build(cfg)


# our module -> the authors' module path(s) in their StemBlock / BasicBlock; an RPReLU is three
# modules there (LearnableBias, PReLU, LearnableBias)
STEM_OFFICIAL = dict(conv='conv', bn='bn.bn', act=('move1', 'relu.prelu', 'move2'))
LAYER_OFFICIAL = dict(
    sign1='move11',
    conv_kxk='binary_conv',
    bn1='bn1.bn',
    act1=('move12', 'prelu1.prelu', 'move13'),
    sign2='move21',
    conv_1x1='binary_conv1x1',
    bn2='bn2.bn',
    act2=('move22', 'prelu2.prelu', 'move23'))
_BN_FIELDS = ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked')
# their LearnableBias holds (1, C, 1, 1); ours (C,)
_FLAT_BIAS = re.compile(r'\.move\d+\.bias$')


def _leaf_keys(module, their, where: str) -> List[Tuple[str, Optional[str]]]:
    """(our parameter / buffer name, their key or None = set, not copied) of one of our modules."""
    if isinstance(module, RSign):
        return [('bias', f'{their}.bias')]
    if isinstance(module, RPReLU):
        a, b, c = their
        return [('bias_in', f'{a}.bias'), ('slope', f'{b}.weight'), ('bias_out', f'{c}.bias')]
    if isinstance(module, SlicedBatchNorm2d):
        return [(f, f'{their}.{f}') for f in _BN_FIELDS]
    if isinstance(module, LSQConv2d):
        return [('weight', f'{their}.weight'), ('step', f'{their}.w_scale'), ('step_initialized', None)]
    if isinstance(module, SharedBinaryConv2d):
        ks = module.kernel_sizes
        if len(ks) > 2:
            # theirs chains matrix_7to5 then matrix_5to3; ours maps the largest kernel to each
            # smaller one directly, which is a different function for 3+ kernel sizes
            raise ConversionError(f'{where} has kernel sizes {ks}; only spaces with at most 2 kernel sizes per '
                                  'stage convert exactly (their kernel transforms are chained)')
        keys = [('weight', f'{their}.weight')]
        keys += [(f'kernel_transforms.{name}', f'{their}.matrix_{ks[-1]}to{name[1:]}')
                 for name in module.kernel_transforms]
        if module.bi_transform is not None:
            keys.append(('bi_transform', f'{their}.fp2bin_{ks[-1]}'))
        return keys
    raise ConversionError(f'{where}: no source mapping for a {type(module).__name__}')


def official_keys(model) -> 'OrderedDict[str, Optional[str]]':
    """Our SandwichClassifier's state-dict keys -> the authors' (unprefixed) keys, from a walk of the
    model's blocks (None: a value that is set, not copied)."""
    bb = model.backbone
    blocks = [('backbone.stem.', 'features.0.0.', bb.stem, STEM_OFFICIAL)]
    blocks += [(f'backbone.stages.{si}.{li}.', f'features.{si + 1}.{li}.', layer, LAYER_OFFICIAL)
               for si, layers in enumerate(bb.stages) for li, layer in enumerate(layers)]
    out: 'OrderedDict[str, Optional[str]]' = OrderedDict()
    for ours, theirs, block, table in blocks:
        for name, child in block.named_children():
            for param, key in _leaf_keys(child, table[name], f'{ours}{name}'):
                out[f'{ours}{name}.{param}'] = None if key is None else theirs + key
    out['head.fc.weight'], out['head.fc.bias'] = 'fc.weight', 'fc.bias'
    return out


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


def convert_state_dict(official: Mapping[str, torch.Tensor],
                       space=None,
                       num_classes: Optional[int] = None) -> Tuple['OrderedDict[str, torch.Tensor]', List[str]]:
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
    model = build_template(space, num_classes)
    template = model.state_dict()
    keys = official_keys(model)
    out: 'OrderedDict[str, torch.Tensor]' = OrderedDict()
    used: Dict[str, str] = {}
    for key, ref in template.items():
        if key not in keys:
            raise ConversionError(f'no source mapping for our key {key!r}')
        bare = keys[key]
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
        log('build the backbone with ' + ', '.join(f'{k}={v}' for k, v in OFFICIAL_BACKBONE_SETTINGS.items()) +
            " (meta['backbone_settings']) to reproduce the authors' logits, e.g. --cfg-options " +
            ' '.join(f'model.backbone.{k}={v}' for k, v in OFFICIAL_BACKBONE_SETTINGS.items()) +
            '; add model.backbone.exact_parity=True (tools/test.py --exact-parity) for bit-identical float32 logits')
    return meta
