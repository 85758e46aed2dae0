"""The deployable binary form of an exported subnet: ±1 bits, per-channel scales, 8-bit stem.

:func:`pack_subnet` turns the state dict of a static subnet classifier (``backbone.<NASBNNSubnet
keys>`` and ``head.fc.weight/bias``, as :func:`nasbnn_mm.models.export.subnet_classifier_state`
produces) into what a binary deployment stores, computed with the model's own operators:

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
(loads with ``weights_only=True``). The order of the segments inside ``binary_bits`` and ``fp32``
is fixed by the architecture (see :func:`packed_layout`), so the file holds no per-tensor
names and its size is the deployed size that :func:`nasbnn_mm.space.profile_arch` reports
(1 bit per binary weight, 1 byte per stem weight, 4 per float) plus the padding of each conv's
bits to a byte and a few KB of container and metadata.

:func:`unpack_subnet` gives back the state dict of a :class:`NASBNNDeployedSubnet` classifier:
a :class:`NASBNNSubnet` whose binary convs hold the deployed ``sign`` (±1) and ``alpha`` and use
``sign * alpha`` directly (no weight normalization), whose stem is the ordinary LSQ conv holding
``int8 * step`` (re-quantizing it with the same step is exact, so the stem uses the stored
integers), and whose BNs hold the folded scale / shift (mean 0, variance 1, eps 0). Its logits
equal the static model's (bit for bit on CPU in our tests). :func:`load_packed` rebuilds it.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmpretrain.models.classifiers import ImageClassifier
from mmpretrain.models.heads import LinearClsHead
from mmpretrain.models.necks import GlobalAveragePooling

from ..ops import BINARY, SharedBinaryConv2d, SlicedBatchNorm2d, lsq_quantize
from ..registry import MODELS
from ..space import Architecture, SearchSpace
from ..utils.checkpoint import load_checkpoint_file, publish_checkpoint
from .supernet import NASBNNSubnet

__all__ = ['PACKED_FORMAT', 'PackedFormatError', 'Segment', 'packed_layout', 'pack_subnet', 'pack_classifier',
           'unpack_subnet', 'save_packed', 'load_packed', 'build_deployed_classifier', 'NASBNNDeployedSubnet',
           'DeployedBinaryConv2d']

PACKED_FORMAT = 'nasbnn-packed-v1'


class PackedFormatError(ValueError):
    """Bad input to packing / unpacking (one-line message naming the field)."""


# ---------------------------------------------------------------------------- layout
class Segment(NamedTuple):
    kind: str  # 'int8', 'bits' or 'fp32'
    name: str  # key in the deployed classifier's state dict
    shape: Tuple[int, ...]
    groups: int = 1  # of a binary conv

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def packed_layout(arch: Architecture, num_classes: int, stem_kernel: int = 3,
                  in_channels: int = 3) -> List[Segment]:
    """Ordered :class:`Segment` (kind, name, shape, groups) of everything the packed form stores.

    ``kind``: 'int8' (stem weight, tensor ``stem_int8``), 'bits' (a binary conv's signs, appended
    to ``binary_bits``, each padded to a byte) or 'fp32' (appended flat to ``fp32``). Names are
    the keys of the deployed classifier's state dict (BN ``weight`` / ``bias`` = folded scale /
    shift). Order: stem (int8 weight, step, BN, RPReLU), then per layer RSign1, k x k conv (bits,
    alpha), BN1, RPReLU1, RSign2, 1x1 conv (bits, alpha), BN2, RPReLU2, then the fc weight
    (rows = classes) and bias.
    """
    out: List[Segment] = []

    def vec(prefix, names, c):
        out.extend(Segment('fp32', prefix + n, (c,)) for n in names)

    c = arch.stem.width
    out.append(Segment('int8', 'backbone.stem.conv.weight', (c, in_channels, stem_kernel, stem_kernel)))
    vec('backbone.stem.', ('conv.step', 'bn.weight', 'bn.bias', 'act.bias_in', 'act.slope', 'act.bias_out'), c)
    for si, li, ch in arch.layers():
        p = f'backbone.stages.{si}.{li}.'
        vec(p, ('sign1.bias',), c)
        out.append(Segment('bits', p + 'conv_kxk.sign', (c, c // ch.groups, ch.kernel, ch.kernel), ch.groups))
        vec(p, ('conv_kxk.alpha', 'bn1.weight', 'bn1.bias', 'act1.bias_in', 'act1.slope', 'act1.bias_out',
                'sign2.bias'), c)
        out.append(Segment('bits', p + 'conv_1x1.sign', (ch.width, c, 1, 1), 1))
        vec(p, ('conv_1x1.alpha', 'bn2.weight', 'bn2.bias', 'act2.bias_in', 'act2.slope', 'act2.bias_out'), ch.width)
        c = ch.width
    out.append(Segment('fp32', 'head.fc.weight', (num_classes, c)))
    out.append(Segment('fp32', 'head.fc.bias', (num_classes,)))
    return out


# ---------------------------------------------------------------------------- deployed model
class DeployedBinaryConv2d(SharedBinaryConv2d):
    """A static binary conv that stores its deployed weight: ``sign`` (±1) and per-output-channel
    ``alpha``; the effective weight is ``sign * alpha`` (no latent weight, no normalization).
    Forward is :meth:`SharedBinaryConv2d.forward`."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, groups: int):
        super().__init__(in_channels, out_channels, (kernel,), (groups,), bi_transform=False)
        del self.weight
        self.groups = groups
        self.register_buffer('sign', torch.ones(out_channels, in_channels // groups, kernel, kernel))
        self.register_buffer('alpha', torch.ones(out_channels))

    def latent_weight(self, *args, **kwargs):
        raise RuntimeError('DeployedBinaryConv2d: a deployed binary conv has no latent weight')

    def effective_weight(self, c_in: int, c_out: int, kernel: int, groups: int, mode: str = BINARY,
                         memory_format=torch.contiguous_format):
        # ``memory_format`` is a layout hint; the stored kernel is returned as it is (a deployed
        # model converts nothing per call)
        if mode != BINARY:
            raise ValueError(f'mode: {mode!r} not allowed for a deployed binary conv (allowed: {BINARY})')
        if (c_out, c_in // groups, kernel, groups) != (*self.sign.shape[:2], self.sign.shape[-1], self.groups):
            raise ValueError(f'DeployedBinaryConv2d: asked for (out {c_out}, in {c_in}, k {kernel}, g {groups}), '
                             f'holds sign {tuple(self.sign.shape)} with groups {self.groups}')
        return self.sign * self.alpha.view(-1, 1, 1, 1)


@MODELS.register_module()
class NASBNNDeployedSubnet(NASBNNSubnet):
    """Inference-only :class:`NASBNNSubnet` in the deployed binary form (see the module doc):
    binary convs are :class:`DeployedBinaryConv2d`, BNs hold folded scale / shift (eps 0).

    Args:
        arch, search_space, out_indices: as :class:`NASBNNSubnet`.
    """

    def __init__(self, arch, search_space=None, out_indices: Sequence[int] = (-1,), init_cfg=None):
        super().__init__(arch, search_space, out_indices, BINARY, init_cfg=init_cfg)
        c = self.arch.stem.width
        for layers, choices in zip(self.stages, self.arch.stages):
            for layer, ch in zip(layers, choices):
                layer.conv_kxk = DeployedBinaryConv2d(c, c, ch.kernel, ch.groups)
                layer.conv_1x1 = DeployedBinaryConv2d(c, ch.width, 1, 1)
                c = ch.width
        for m in self.modules():
            if isinstance(m, SlicedBatchNorm2d):
                m.eps = 0.0  # folded: y = x * weight + bias with running mean 0, variance 1

    def forward(self, x: torch.Tensor):
        if self.training:
            raise RuntimeError('NASBNNDeployedSubnet: inference only (BN is folded); call .eval() first')
        return super().forward(x)


def build_deployed_classifier(arch, search_space, num_classes: int, data_preprocessor=None) -> ImageClassifier:
    """ImageClassifier(NASBNNDeployedSubnet, GAP, LinearClsHead) with default weights."""
    backbone = NASBNNDeployedSubnet(arch, search_space)
    head = LinearClsHead(num_classes, backbone.arch.stage_out_channels[-1])
    return ImageClassifier(backbone=backbone, neck=GlobalAveragePooling(), head=head,
                           data_preprocessor=data_preprocessor)


# ---------------------------------------------------------------------------- pack
def _fold_bn(sd: Dict[str, torch.Tensor], prefix: str, eps: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """BN (eval) as y = x * scale + shift, with PyTorch's inference arithmetic:
    scale = weight * rsqrt(var + eps), shift = bias - mean * scale (fused)."""
    scale = torch.rsqrt(sd[prefix + 'running_var'] + eps) * sd[prefix + 'weight']
    shift = torch.addcmul(sd[prefix + 'bias'], sd[prefix + 'running_mean'], scale, value=-1)
    return scale, shift


def _split_binary(w: torch.Tensor, name: str) -> Tuple[np.ndarray, torch.Tensor]:
    """Sign bits and per-output-channel alpha of an effective binary weight alpha * sign."""
    alpha = w.abs().flatten(1).amax(1)
    bits = w > 0
    rebuilt = torch.where(bits, alpha.view(-1, 1, 1, 1), -alpha.view(-1, 1, 1, 1))
    if not torch.equal(rebuilt, w):
        raise PackedFormatError(f'{name}: the effective binary weight is not ±alpha per output channel '
                                '(a zero entry: the normalized weight is exactly 0 there), which ±1 bits cannot store')
    return bits.flatten().numpy(), alpha


def _stem_int8(conv, c: int, name: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """int8 integers q and step s with lsq_quantize(q * s, s) == the stem's quantized weight."""
    if conv.bits > 8:
        raise PackedFormatError(f'{name}: {conv.bits}-bit stem not allowed (allowed: at most 8 bits)')
    wq = conv.quantized_weight(c)
    step = conv.step[:c].clamp(min=torch.finfo(conv.step.dtype).eps)
    q = torch.round(wq / step.view(-1, 1, 1, 1))
    if q.min() < -128 or q.max() > 127 or not torch.equal(lsq_quantize(q * step.view(-1, 1, 1, 1), step,
                                                                       conv.bits), wq):
        raise PackedFormatError(f'{name}: the quantized stem weight is not an int8 multiple of its step')
    return q.to(torch.int8), step


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
    wn_eps, wn_unbiased = meta.get('wn_eps', 1e-5), meta.get('wn_unbiased', False)
    if not isinstance(wn_eps, (int, float)) or isinstance(wn_eps, bool) or wn_eps < 0:
        raise PackedFormatError(f'meta.wn_eps: {wn_eps!r} not allowed (allowed: a number >= 0)')
    if not isinstance(wn_unbiased, bool):
        raise PackedFormatError(f'meta.wn_unbiased: {wn_unbiased!r} not allowed (allowed: True, False)')
    for k in ('head.fc.weight', 'head.fc.bias'):
        if k not in state_dict:
            raise PackedFormatError(f'state_dict: missing {k!r} (allowed: a subnet classifier state dict with '
                                    "'backbone.*' and 'head.fc.*' keys)")
    fc_w = state_dict['head.fc.weight'].float()
    num_classes = fc_w.shape[0]
    net = NASBNNSubnet(arch, space.to_dict(), mode=BINARY, wn_eps=float(wn_eps), wn_unbiased=wn_unbiased)
    bsd = OrderedDict((k[len('backbone.'):], v) for k, v in state_dict.items() if k.startswith('backbone.'))
    want = net.state_dict()
    missing = [k for k in want if k not in bsd]
    unexpected = [k for k in bsd if k not in want]
    wrong = [f'{k} {tuple(bsd[k].shape)} vs {tuple(want[k].shape)}' for k in want
             if k in bsd and bsd[k].shape != want[k].shape]
    if missing or unexpected or wrong:
        what = (f'missing {missing[:3]}' if missing else f'unexpected {unexpected[:3]}' if unexpected
                else f'shapes {wrong[:2]}')
        raise PackedFormatError(f'state_dict: backbone keys do not match architecture {arch.to_text()!r} ({what})')
    net.load_state_dict(bsd, strict=True)
    net.float().eval()
    sd = net.state_dict()

    values: Dict[str, Union[torch.Tensor, np.ndarray]] = {}
    c = arch.stem.width
    values['backbone.stem.conv.weight'], values['backbone.stem.conv.step'] = _stem_int8(net.stem.conv, c, 'stem.conv')

    def bn(prefix, module):
        values['backbone.' + prefix + 'weight'], values['backbone.' + prefix + 'bias'] = \
            _fold_bn(sd, prefix, module.eps)

    bn('stem.bn.', net.stem.bn)
    for si, li, ch in arch.layers():
        layer = net.stages[si][li]
        p = f'stages.{si}.{li}.'
        bits, values['backbone.' + p + 'conv_kxk.alpha'] = _split_binary(
            layer.conv_kxk.effective_weight(c, c, ch.kernel, ch.groups, BINARY), p + 'conv_kxk')
        values['backbone.' + p + 'conv_kxk.sign'] = bits
        bits, values['backbone.' + p + 'conv_1x1.alpha'] = _split_binary(
            layer.conv_1x1.effective_weight(c, ch.width, 1, 1, BINARY), p + 'conv_1x1')
        values['backbone.' + p + 'conv_1x1.sign'] = bits
        bn(p + 'bn1.', layer.bn1)
        bn(p + 'bn2.', layer.bn2)
        c = ch.width
    values['head.fc.weight'], values['head.fc.bias'] = fc_w, state_dict['head.fc.bias'].float()

    layout = packed_layout(arch, num_classes, space.stem.kernel, net.stem.conv.in_channels)
    bits_parts, fp32_parts, shapes = [], [], []
    stem_int8 = None
    for seg in layout:
        # RSign / RPReLU vectors are stored as they are
        v = values[seg.name] if seg.name in values else sd[seg.name[len('backbone.'):]]
        if seg.kind == 'bits':
            bits_parts.append(np.packbits(v, bitorder='big'))
            shapes.append([*seg.shape, seg.groups])
            continue
        if tuple(v.shape) != seg.shape:
            raise PackedFormatError(f'state_dict: {seg.name} has shape {tuple(v.shape)}, '
                                    f'the architecture needs {seg.shape}')
        if seg.kind == 'int8':
            stem_int8 = v.contiguous()
        else:
            fp32_parts.append(v.detach().float().reshape(-1))
    meta.update({'format': PACKED_FORMAT, 'arch': arch.to_text(), 'search_space': space.to_dict(),
                 'num_classes': num_classes, 'img_channels': net.stem.conv.in_channels, 'bit_order': 'big',
                 'binary_shapes': shapes})
    for k in ('wn_eps', 'wn_unbiased'):  # the deployed model has no weight normalization
        meta.pop(k, None)
    packed_sd = OrderedDict([
        ('binary_bits', torch.from_numpy(np.concatenate(bits_parts))),
        ('stem_int8', stem_int8),
        ('fp32', torch.cat(fp32_parts).contiguous()),
    ])
    return {'meta': meta, 'state_dict': packed_sd}


def pack_classifier(classifier, meta: Optional[dict] = None) -> dict:
    """:func:`pack_subnet` of an ImageClassifier whose backbone is a :class:`NASBNNSubnet` (binary
    mode) and whose head has ``fc``: architecture, space and weight normalization come from it."""
    bb = classifier.backbone
    if not isinstance(bb, NASBNNSubnet) or isinstance(bb, NASBNNDeployedSubnet) or bb.mode != BINARY:
        raise PackedFormatError(f'classifier.backbone: {type(bb).__name__} not allowed '
                                '(allowed: a NASBNNSubnet in binary mode)')
    conv = next(m for m in bb.modules() if isinstance(m, SharedBinaryConv2d))
    meta = dict(meta or {})
    meta.update(search_space=bb.space.to_dict(), wn_eps=conv.wn_eps, wn_unbiased=conv.wn_unbiased)
    sd = OrderedDict(('backbone.' + k, v) for k, v in bb.state_dict().items())
    sd['head.fc.weight'], sd['head.fc.bias'] = classifier.head.fc.weight, classifier.head.fc.bias
    return pack_subnet(sd, bb.arch, meta)


# ---------------------------------------------------------------------------- unpack
def _meta_field(meta: dict, key: str, allowed: str):
    if key not in meta:
        raise PackedFormatError(f'packed meta.{key}: missing (allowed: {allowed})')
    return meta[key]


@torch.no_grad()
def unpack_subnet(packed: dict) -> Tuple['OrderedDict[str, torch.Tensor]', Architecture, dict]:
    """Inverse of :func:`pack_subnet`: the state dict of :func:`build_deployed_classifier`'s model
    (``strict`` loadable), the architecture and the packed meta. ``packed`` is the dict
    :func:`pack_subnet` returned or the loaded file."""
    if not isinstance(packed, dict) or 'meta' not in packed or 'state_dict' not in packed:
        raise PackedFormatError("packed: not allowed (allowed: a dict with 'meta' and 'state_dict', "
                                'as pack_subnet returns and save_packed writes)')
    meta, psd = packed['meta'], packed['state_dict']
    fmt = meta.get('format')
    if fmt != PACKED_FORMAT:
        raise PackedFormatError(f'packed meta.format: {fmt!r} not allowed (allowed: {PACKED_FORMAT!r})')
    space = SearchSpace.build(_meta_field(meta, 'search_space', 'a search space dict'))
    arch = space.validate(_meta_field(meta, 'arch', 'an architecture text'))
    num_classes = int(_meta_field(meta, 'num_classes', 'an integer'))
    if meta.get('bit_order', 'big') not in ('big', 'little'):
        raise PackedFormatError(f"packed meta.bit_order: {meta['bit_order']!r} not allowed (allowed: 'big', 'little')")
    layout = packed_layout(arch, num_classes, space.stem.kernel, int(meta.get('img_channels', 3)))
    expected = {
        'binary_bits': (torch.uint8, sum(math.ceil(s.numel / 8) for s in layout if s.kind == 'bits')),
        'stem_int8': (torch.int8, sum(s.numel for s in layout if s.kind == 'int8')),
        'fp32': (torch.float32, sum(s.numel for s in layout if s.kind == 'fp32')),
    }
    for key, (dtype, n) in expected.items():
        t = psd.get(key)
        if not isinstance(t, torch.Tensor) or t.dtype != dtype or t.numel() != n:
            got = f'{t.dtype} with {t.numel()} values' if isinstance(t, torch.Tensor) else repr(type(t).__name__)
            raise PackedFormatError(f'packed state_dict.{key}: {got} not allowed for {arch.to_text()!r} '
                                    f'(allowed: {dtype} with {n} values)')
    shapes = [[*s.shape, s.groups] for s in layout if s.kind == 'bits']
    if 'binary_shapes' in meta and [list(x) for x in meta['binary_shapes']] != shapes:
        raise PackedFormatError(f'packed meta.binary_shapes: do not match architecture {arch.to_text()!r} '
                                f'(allowed: {shapes[:2]}...)')
    bits = psd['binary_bits'].cpu().numpy()
    fp32 = psd['fp32'].cpu()
    values: Dict[str, torch.Tensor] = {}
    bpos = fpos = 0
    for seg in layout:
        if seg.kind == 'bits':
            nbytes = math.ceil(seg.numel / 8)
            b = np.unpackbits(bits[bpos:bpos + nbytes], count=seg.numel, bitorder=meta.get('bit_order', 'big'))
            values[seg.name] = torch.from_numpy(b.astype(np.float32) * 2 - 1).view(seg.shape)
            bpos += nbytes
        elif seg.kind == 'int8':
            values[seg.name] = psd['stem_int8'].cpu().reshape(seg.shape)
        else:
            values[seg.name] = fp32[fpos:fpos + seg.numel].view(seg.shape).clone()
            fpos += seg.numel

    sd: 'OrderedDict[str, torch.Tensor]' = OrderedDict()
    for seg in layout:
        v = values[seg.name]
        if seg.kind == 'int8':  # the LSQ stem holds int8 * step; re-quantizing it gives the integers back
            step = values['backbone.stem.conv.step']
            sd[seg.name] = v.float() * step.view(-1, 1, 1, 1)
            continue
        sd[seg.name] = v
        module, param = seg.name.rsplit('.', 2)[-2:]
        if module.startswith('bn') and param == 'bias':  # folded BN: mean 0, variance 1 (eps 0)
            p = seg.name[:-len('bias')]
            sd[p + 'running_mean'] = torch.zeros_like(v)
            sd[p + 'running_var'] = torch.ones_like(v)
            sd[p + 'num_batches_tracked'] = torch.zeros((), dtype=torch.long)
    sd['backbone.stem.conv.step_initialized'] = torch.ones((), dtype=torch.bool)
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
    model = build_deployed_classifier(arch, meta['search_space'], int(meta['num_classes']),
                                      data_preprocessor or meta.get('data_preprocessor'))
    model.load_state_dict(sd, strict=True)
    return model.eval()
