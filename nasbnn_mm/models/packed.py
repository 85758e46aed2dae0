"""The deployable binary form of an exported subnet: ±1 bits, per-channel scales, 8-bit stem.

:func:`pack_subnet` turns the state dict of a static subnet classifier (``backbone.<NASBNNSubnet
keys>`` and ``head.fc.weight/bias``, as :func:`nasbnn_mm.models.export.subnet_classifier_state`
produces) into what a binary deployment stores. The static backbone is turned into its deployed
form (:meth:`NASBNNSubnet.to_deployed`: each module's ``to_deployed``), and every module of that
form describes what it stores (:mod:`nasbnn_mm.ops.packing`):

* every binary conv: its effective weight ``alpha * sign(normalize(W))`` as sign bits (1 = +1,
  0 = -1; ``numpy.packbits``, big bit order, each conv's bits padded to a whole byte) plus the
  per-output-channel ``alpha`` (float32);
* the stem conv: the 8-bit LSQ integers (int8) plus the per-channel step (float32);
* BN folded into a per-channel scale and shift (float32) -- the same function of the running
  statistics that PyTorch's inference batch norm evaluates;
* RSign thresholds, RPReLU vectors and the classifier, float32.

The result is a checkpoint-shaped dict of three tensors and plain metadata::

    {'meta': {'format': 'nasbnn-packed-v1', 'arch': <text>, 'search_space': {...}, 'num_classes': N,
              'img_channels': 3, 'bit_order': 'big', 'binary_shapes': [[out, in/groups, k, k, groups], ...],
              ... the caller's meta ...},
     'state_dict': {'binary_bits': uint8 (B,), 'stem_int8': int8 (C, 3, k, k), 'fp32': float32 (F,)}}

which :func:`save_packed` writes with :func:`nasbnn_mm.utils.checkpoint.publish_checkpoint`
(loads with ``weights_only=True``). The segments follow the deployed model's module order
(:func:`packed_layout`), so the file holds no per-tensor names and its size is the deployed size
that :func:`nasbnn_mm.space.profile_arch` reports (1 bit per binary weight, 1 byte per stem
weight, 4 per float) plus the padding of each conv's bits to a byte and a few KB of container
and metadata.

:func:`unpack_subnet` gives back the state dict of a :class:`NASBNNDeployedSubnet` classifier
(:func:`build_deployed_classifier`); :func:`load_packed` rebuilds the model. Its logits equal the
static model's up to the rounding of the folded BN.
"""
from __future__ import annotations
import math
from collections import OrderedDict
from typing import Dict, Iterator, List, NamedTuple, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
from mmpretrain.models.classifiers import ImageClassifier
from mmpretrain.models.heads import LinearClsHead
from mmpretrain.models.necks import GlobalAveragePooling

from ..ops import BINARY, BITS, FP32, INT8, DeployedBinaryConv2d, Field, PackedFormatError
from ..space import Architecture, Geometry, SearchSpace, layer_shapes
from ..utils.checkpoint import load_checkpoint_file, publish_checkpoint
from .blocks import SeparableBinaryLayer, Stem
from .supernet import NASBNNDeployedSubnet, NASBNNSubnet

__all__ = [
    'PACKED_FORMAT', 'PackedFormatError', 'Segment', 'packed_layout', 'pack_subnet', 'pack_classifier', 'unpack_subnet',
    'save_packed', 'load_packed', 'build_deployed_classifier', 'NASBNNDeployedSubnet', 'DeployedBinaryConv2d'
]

PACKED_FORMAT = 'nasbnn-packed-v1'
_DTYPES = {BITS: torch.uint8, INT8: torch.int8, FP32: torch.float32}
_TENSORS = {BITS: 'binary_bits', INT8: 'stem_int8', FP32: 'fp32'}


class Segment(NamedTuple):
    kind: str  # 'int8', 'bits' or 'fp32'
    name: str  # key in the deployed classifier's state dict
    shape: Tuple[int, ...]
    groups: int = 1  # of a binary conv

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


# ---------------------------------------------------------------------------- layout
class _Linear(nn.Linear):
    """The classifier's fields (its weight rows are the classes, then the bias)."""

    def packed_fields(self) -> List[Field]:
        return [Field(FP32, 'weight', tuple(self.weight.shape)), Field(FP32, 'bias', tuple(self.bias.shape))]

    def packed_values(self) -> List[torch.Tensor]:
        return [self.weight.detach().float().reshape(-1), self.bias.detach().float()]

    def unpacked_state(self, values) -> Dict[str, torch.Tensor]:
        return dict(weight=values[0].reshape(self.weight.shape), bias=values[1])


def _stored_modules(root: nn.Module, prefix: str) -> Iterator[Tuple[str, nn.Module]]:
    """(state-dict prefix, module) of every module that stores packed fields, in module order."""
    for name, m in root.named_modules():
        if hasattr(m, 'packed_fields'):
            yield f'{prefix}{name}.' if name else prefix, m


def _deployed_shell(arch: Architecture, num_classes: int, stem_kernel: int, in_channels: int):
    """The deployed backbone's modules and the classifier, on the meta device (shapes only)."""
    shapes = layer_shapes(arch, 1, Geometry.flat(len(arch.stages), stem_kernel), num_classes, in_channels)
    with torch.device('meta'):
        backbone = nn.Module()
        backbone.stem = Stem(shapes[0].out_channels, 1, stem_kernel, in_channels, deployed=True)
        backbone.stages = nn.ModuleList(nn.ModuleList() for _ in arch.stages)
        for kxk, pw in zip(shapes[1:-1:2], shapes[2:-1:2]):
            backbone.stages[kxk.stage].append(
                SeparableBinaryLayer(
                    kxk.in_channels, pw.out_channels, (kxk.kernel, ), (kxk.groups, ), 1, False, deployed=True))
        fc = _Linear(shapes[-1].in_channels, num_classes)
    return backbone, fc


def packed_layout(arch: Architecture, num_classes: int, stem_kernel: int = 3, in_channels: int = 3) -> List[Segment]:
    """Ordered :class:`Segment` (kind, name, shape, groups) of everything the packed form stores.

    ``kind``: 'int8' (stem weight, tensor ``stem_int8``), 'bits' (a binary conv's signs, appended
    to ``binary_bits``, each padded to a byte) or 'fp32' (appended flat to ``fp32``). Names are
    the keys of the deployed classifier's state dict (BN ``weight`` / ``bias`` = folded scale /
    shift). Order: the deployed model's modules -- stem (int8 weight, step, BN, RPReLU), then per
    layer RSign1, k x k conv (bits, alpha), BN1, RPReLU1, RSign2, 1x1 conv (bits, alpha), BN2,
    RPReLU2, then the fc weight (rows = classes) and bias.
    """
    backbone, fc = _deployed_shell(arch, num_classes, stem_kernel, in_channels)
    mods = list(_stored_modules(backbone, 'backbone.')) + [('head.fc.', fc)]
    return [Segment(f.kind, p + f.attr, f.shape, f.groups) for p, m in mods for f in m.packed_fields()]


def build_deployed_classifier(arch, search_space, num_classes: int, data_preprocessor=None) -> ImageClassifier:
    """ImageClassifier(NASBNNDeployedSubnet, GAP, LinearClsHead) with default weights."""
    backbone = NASBNNDeployedSubnet(arch, search_space)
    head = LinearClsHead(num_classes, backbone.arch.stage_out_channels[-1])
    return ImageClassifier(
        backbone=backbone, neck=GlobalAveragePooling(), head=head, data_preprocessor=data_preprocessor)


# ---------------------------------------------------------------------------- pack
def _check_meta_settings(meta: dict) -> Tuple[float, bool]:
    wn_eps, wn_unbiased = meta.get('wn_eps', 1e-5), meta.get('wn_unbiased', False)
    if not isinstance(wn_eps, (int, float)) or isinstance(wn_eps, bool) or not wn_eps >= 0:
        raise PackedFormatError(f'meta.wn_eps: {wn_eps!r} not allowed (allowed: a number >= 0)')
    if not isinstance(wn_unbiased, bool):
        raise PackedFormatError(f'meta.wn_unbiased: {wn_unbiased!r} not allowed (allowed: True, False)')
    return float(wn_eps), wn_unbiased


def _static_backbone(state_dict: Dict[str, torch.Tensor], arch: Architecture, space: SearchSpace, wn_eps: float,
                     wn_unbiased: bool) -> NASBNNSubnet:
    net = NASBNNSubnet(arch, space.to_dict(), mode=BINARY, wn_eps=wn_eps, wn_unbiased=wn_unbiased)
    bsd = OrderedDict((k[len('backbone.'):], v) for k, v in state_dict.items() if k.startswith('backbone.'))
    want = net.state_dict()
    missing = [k for k in want if k not in bsd]
    unexpected = [k for k in bsd if k not in want]
    wrong = [
        f'{k} {tuple(bsd[k].shape)} vs {tuple(want[k].shape)}' for k in want
        if k in bsd and bsd[k].shape != want[k].shape
    ]
    if missing or unexpected or wrong:
        what = (f'missing {missing[:3]}'
                if missing else f'unexpected {unexpected[:3]}' if unexpected else f'shapes {wrong[:2]}')
        raise PackedFormatError(f'state_dict: backbone keys do not match architecture {arch.to_text()!r} ({what})')
    net.load_state_dict(bsd, strict=True)
    return net.float().eval()


@torch.no_grad()
def pack_subnet(state_dict: Dict[str, torch.Tensor], arch, meta: Optional[dict] = None) -> dict:
    """Pack a static subnet classifier's state dict (see the module doc for the format).

    Args:
        state_dict: ``backbone.<NASBNNSubnet keys>`` and ``head.fc.weight`` / ``head.fc.bias``
            (binary weight mode, kernel transforms folded), e.g. from ``subnet_classifier_state``.
        arch: the subnet (text, preset name, dict or :class:`Architecture`).
        meta: carried into the packed meta; these keys are read: ``search_space`` (dict or
            config path; default Table 1), ``wn_eps`` (default 1e-5) and ``wn_unbiased``
            (default False) -- the static model's weight normalization, which must match the
            supernet's (:func:`pack_classifier` takes all three from a model).

    Returns:
        ``{'meta': {...}, 'state_dict': {'binary_bits', 'stem_int8', 'fp32'}}``.
    """
    meta = dict(meta or {})
    space = SearchSpace.build(meta.get('search_space'))
    arch = space.validate(arch)
    wn_eps, wn_unbiased = _check_meta_settings(meta)
    for k in ('head.fc.weight', 'head.fc.bias'):
        if k not in state_dict:
            raise PackedFormatError(f'state_dict: missing {k!r} (allowed: a subnet classifier state dict with '
                                    "'backbone.*' and 'head.fc.*' keys)")
    static = _static_backbone(state_dict, arch, space, wn_eps, wn_unbiased)
    deployed = static.to_deployed()
    fc = _Linear(*state_dict['head.fc.weight'].T.shape)
    fc.load_state_dict(dict(weight=state_dict['head.fc.weight'].float(), bias=state_dict['head.fc.bias'].float()))
    parts: Dict[str, list] = {BITS: [], INT8: [], FP32: []}
    shapes = []
    for prefix, m in list(_stored_modules(deployed, 'backbone.')) + [('head.fc.', fc)]:
        try:
            values = m.packed_values()
        except PackedFormatError as e:
            raise e.within(prefix[len('backbone.'):-1]) from None
        for f, v in zip(m.packed_fields(), values):
            if f.kind == BITS:
                parts[BITS].append(np.packbits(v.cpu().numpy(), bitorder='big'))
                shapes.append([*f.shape, f.groups])
            else:
                parts[f.kind].append(v.reshape(-1))
    num_classes = fc.out_features
    meta.update({
        'format': PACKED_FORMAT,
        'arch': arch.to_text(),
        'search_space': space.to_dict(),
        'num_classes': num_classes,
        'img_channels': static.stem.conv.in_channels,
        'bit_order': 'big',
        'binary_shapes': shapes
    })
    for k in ('wn_eps', 'wn_unbiased', 'backbone_settings'):  # the deployed model has no weight normalization
        meta.pop(k, None)
    packed_sd = OrderedDict([
        ('binary_bits', torch.from_numpy(np.concatenate(parts[BITS]))),
        ('stem_int8', torch.cat(parts[INT8]).reshape(static.stem.conv.weight.shape).contiguous()),
        ('fp32', torch.cat(parts[FP32]).contiguous()),
    ])
    return {'meta': meta, 'state_dict': packed_sd}


def pack_classifier(classifier, meta: Optional[dict] = None) -> dict:
    """:func:`pack_subnet` of an ImageClassifier whose backbone is a :class:`NASBNNSubnet` (binary
    mode) and whose head has ``fc``: architecture, space and weight normalization come from it."""
    bb = classifier.backbone
    if not isinstance(bb, NASBNNSubnet) or isinstance(bb, NASBNNDeployedSubnet) or bb.mode != BINARY:
        raise PackedFormatError(f'classifier.backbone: {type(bb).__name__} not allowed '
                                '(allowed: a NASBNNSubnet in binary mode)')
    meta = dict(meta or {})
    meta.update(search_space=bb.space.to_dict(), **bb.settings())
    sd = OrderedDict(('backbone.' + k, v) for k, v in bb.state_dict().items())
    sd['head.fc.weight'], sd['head.fc.bias'] = classifier.head.fc.weight, classifier.head.fc.bias
    return pack_subnet(sd, bb.arch, meta)


# ---------------------------------------------------------------------------- unpack
def _meta_field(meta: dict, key: str, allowed: str):
    if key not in meta:
        raise PackedFormatError(f'packed meta.{key}: missing (allowed: {allowed})')
    return meta[key]


def _checked_payload(meta: dict, psd, arch: Architecture, layout: List[Segment]) -> None:
    if not isinstance(psd, dict):
        raise PackedFormatError(f'packed state_dict: {type(psd).__name__} not allowed (allowed: a dict of tensors)')
    for kind, key in _TENSORS.items():
        n = sum(math.ceil(s.numel / 8) if kind == BITS else s.numel for s in layout if s.kind == kind)
        t = psd.get(key)
        if not isinstance(t, torch.Tensor) or t.dtype != _DTYPES[kind] or t.numel() != n:
            got = f'{t.dtype} with {t.numel()} values' if isinstance(t, torch.Tensor) else repr(type(t).__name__)
            raise PackedFormatError(f'packed state_dict.{key}: {got} not allowed for {arch.to_text()!r} '
                                    f'(allowed: {_DTYPES[kind]} with {n} values)')
    shapes = [[*s.shape, s.groups] for s in layout if s.kind == BITS]
    if 'binary_shapes' in meta and [list(x) for x in meta['binary_shapes']] != shapes:
        raise PackedFormatError(f'packed meta.binary_shapes: do not match architecture {arch.to_text()!r} '
                                f'(allowed: {shapes[:2]}...)')


@torch.no_grad()
def unpack_subnet(packed: dict, signs: str = 'float') -> Tuple['OrderedDict[str, torch.Tensor]', Architecture, dict]:
    """Inverse of :func:`pack_subnet`: the state dict of :func:`build_deployed_classifier`'s model
    (``strict`` loadable), the architecture and the packed meta. ``packed`` is the dict
    :func:`pack_subnet` returned or the loaded file. ``signs='bool'`` gives each binary conv's signs
    as a bool tensor (True = +1; 1 byte per weight instead of 4, for the 1-bit runtime, which packs
    them again), not the float ±1 buffer of :class:`DeployedBinaryConv2d`."""
    if signs not in ('float', 'bool'):
        raise ValueError(f"signs: {signs!r} not allowed (allowed: 'float', 'bool')")
    if not isinstance(packed, dict) or 'meta' not in packed or 'state_dict' not in packed:
        raise PackedFormatError("packed: not allowed (allowed: a dict with 'meta' and 'state_dict', "
                                'as pack_subnet returns and save_packed writes)')
    meta, psd = packed['meta'], packed['state_dict']
    if not isinstance(meta, dict):
        raise PackedFormatError(f'packed meta: {type(meta).__name__} not allowed (allowed: a dict)')
    fmt = meta.get('format')
    if fmt != PACKED_FORMAT:
        raise PackedFormatError(f'packed meta.format: {fmt!r} not allowed (allowed: {PACKED_FORMAT!r})')
    space = SearchSpace.build(_meta_field(meta, 'search_space', 'a search space dict'))
    arch = space.validate(_meta_field(meta, 'arch', 'an architecture text'))
    num_classes = _meta_field(meta, 'num_classes', 'a positive integer')
    in_channels = meta.get('img_channels', 3)
    for key, v in (('num_classes', num_classes), ('img_channels', in_channels)):
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 1 << 20:
            raise PackedFormatError(f'packed meta.{key}: {v!r} not allowed (allowed: a positive integer)')
    bit_order = meta.get('bit_order', 'big')
    if bit_order not in ('big', 'little'):
        raise PackedFormatError(f"packed meta.bit_order: {bit_order!r} not allowed (allowed: 'big', 'little')")
    layout = packed_layout(arch, num_classes, space.stem.kernel, in_channels)
    _checked_payload(meta, psd, arch, layout)

    streams = {
        BITS: psd['binary_bits'].cpu().numpy(),
        INT8: psd['stem_int8'].cpu().reshape(-1),
        FP32: psd['fp32'].cpu()
    }
    pos = {BITS: 0, INT8: 0, FP32: 0}

    def take(f: Field) -> torch.Tensor:
        if f.kind == BITS:
            nbytes = math.ceil(f.numel / 8)
            raw = streams[BITS][pos[BITS]:pos[BITS] + nbytes]
            pos[BITS] += nbytes
            return torch.from_numpy(np.unpackbits(raw, count=f.numel, bitorder=bit_order).astype(bool))
        v = streams[f.kind][pos[f.kind]:pos[f.kind] + f.numel].clone()
        pos[f.kind] += f.numel
        return v

    backbone, fc = _deployed_shell(arch, num_classes, space.stem.kernel, in_channels)
    sd: 'OrderedDict[str, torch.Tensor]' = OrderedDict()
    for prefix, m in list(_stored_modules(backbone, 'backbone.')) + [('head.fc.', fc)]:
        values = [take(f) for f in m.packed_fields()]
        state = m.unpacked_state(values)
        if signs == 'bool':
            for f, v in zip(m.packed_fields(), values):
                if f.kind == BITS:
                    state[f.attr] = v.reshape(f.shape)
        for k, v in state.items():
            sd[prefix + k] = v
    return sd, arch, dict(meta)


def save_packed(packed: dict, path: str) -> str:
    """Write a packed subnet atomically (loads with ``weights_only=True``)."""
    return publish_checkpoint(packed['state_dict'], path, packed['meta'])


def load_packed(packed: Union[str, dict], data_preprocessor: Optional[dict] = None) -> ImageClassifier:
    """Rebuild the deployed classifier (eval mode) from a packed file (loaded safely) or dict.
    ``data_preprocessor``: default the packed meta's ``data_preprocessor`` if any, else mmpretrain's."""
    if isinstance(packed, str):
        packed = load_checkpoint_file(packed)
    sd, arch, meta = unpack_subnet(packed)
    model = build_deployed_classifier(arch, meta['search_space'], int(meta['num_classes']), data_preprocessor
                                      or meta.get('data_preprocessor'))
    model.load_state_dict(sd, strict=True)
    return model.eval()
