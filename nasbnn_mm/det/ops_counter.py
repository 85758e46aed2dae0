"""OPs of a NAS-BNN detector (Faster R-CNN + FPN), computed from its config (no model is built).

Two conventions (README, *Detection OPs*):

``full`` (default): every layer at the real input size --
  * input: the detector's padded input, H x W rounded up to ``pad_size_divisor`` (mmdet pads the
    batch to a multiple of 32), by default the test pipeline's ``Resize`` scale;
  * backbone: the NAS-BNN OPs of :mod:`nasbnn_mm.space.ops_counter` at that size
    (BOPs / 64 + Int8OPs / 8; no classifier);
  * neck and heads: multiply-accumulates of their convolutions and linear layers, counted as
    mmengine's ``FlopAnalyzer`` counts them (1 MAC = 1 FLOP, biases not counted); binary convolutions
    (``nasbnn.BinaryFPN``, ``nasbnn.BinaryRPNHead``) count BOPs / 64; upsampling, pooling, RoIAlign,
    NMS and the anchor/box arithmetic are not counted;
  * FPN (lateral 1x1 + output 3x3 convs, extra levels by max pooling or by stride-2 convs) and
    RPN (3x3 conv + 1x1 objectness and box convs) on every level, per image;
  * RoI head: the shared fcs, classifier and box regressor, times the number of proposals kept
    at test time (``test_cfg.rpn.max_per_img``, 1000 in mmdet's Faster R-CNN).
  Detection OPs = backbone OPs + neck + RPN + RoI head.

``paper``: the convention of the paper's Table 3, established by reproducing its six NAS-BNN numbers
(to within 1.2 %, tested) and the 376 M OPs it lists for the ResNet-18 binary detectors -- a
320 x 320 input, the stem's multiply-accumulates counted in full (not / 8), the binary backbone and the
FPN (binary: BOPs / 64) counted, the RPN and the RoI head not counted.
"""
from __future__ import annotations
from typing import List, Sequence, Tuple

from ..space import ArchitectureError, image_size, profile_arch, stage_output_sizes
from .backbone import DEFAULT_OUT_INDICES, det_out_indices, resolve_backbone_arch

__all__ = ['detector_ops', 'detector_input_size', 'CONVENTIONS', 'PAPER_INPUT']

CONVENTIONS = ('full', 'paper')
PAPER_INPUT = (320, 320)
_BINARY_NECKS, _BINARY_RPNS = ('BinaryFPN', ), ('BinaryRPNHead', )


def _ceil_div(x: int, d: int) -> int:
    return -(-x // d)


def _type(cfg) -> str:
    return str(cfg.get('type', '')).split('.')[-1]


def detector_input_size(cfg) -> Tuple[int, int]:
    """(H, W) of the test pipeline's ``Resize`` scale ((w, h) in mmdet)."""
    pipeline = cfg.get('test_dataloader', {}).get('dataset', {}).get('pipeline') or cfg.get('test_pipeline') or []
    for t in pipeline:
        if _type(t) == 'Resize' and t.get('scale') is not None:
            scale = t['scale']
            if isinstance(scale, int):
                return scale, scale
            w, h = scale
            return int(h), int(w)
    raise ArchitectureError('--det-config: no Resize with a scale in the test pipeline; pass --img-size HxW')


def _fpn_macs(neck: dict, feats: List[Tuple[int, int, int]]):
    """(MACs, level sizes) of an mmdet FPN (or nasbnn.BinaryFPN) over backbone features (channels, h, w)."""
    if _type(neck) not in ('FPN', ) + _BINARY_NECKS:
        raise ArchitectureError(f'--det-config: neck type {neck.get("type")!r} not supported '
                                '(allowed: FPN, BinaryFPN)')
    oc, num_outs = int(neck['out_channels']), int(neck['num_outs'])
    start = int(neck.get('start_level', 0))
    end = int(neck.get('end_level', -1))  # inclusive, as in mmdet's FPN
    used = feats[start:(len(feats) if end in (-1, len(feats) - 1) else end + 1)]
    macs = 0
    levels = []
    for c, fh, fw in used:
        macs += fh * fw * c * oc + fh * fw * oc * oc * 9  # lateral 1x1, output 3x3
        levels.append((fh, fw))
    extra = neck.get('add_extra_convs', False)
    extra = 'on_input' if extra is True else extra
    src_c = used[-1][0] if extra == 'on_input' else oc
    for i in range(num_outs - len(used)):
        fh, fw = _ceil_div(levels[-1][0], 2), _ceil_div(levels[-1][1], 2)
        if extra:  # 3x3 stride-2 conv (the first on the input / lateral / output, then on outputs)
            macs += fh * fw * (src_c if i == 0 else oc) * oc * 9
        levels.append((fh, fw))
    return macs, levels


def _rpn_macs(rpn: dict, levels: List[Tuple[int, int]]) -> Tuple[int, int]:
    """(3x3 conv MACs, 1x1 objectness + box conv MACs) of an RPNHead or nasbnn.BinaryRPNHead."""
    if _type(rpn) not in ('RPNHead', ) + _BINARY_RPNS:
        raise ArchitectureError(f'--det-config: rpn_head type {rpn.get("type")!r} not supported '
                                '(allowed: RPNHead, BinaryRPNHead)')
    anchors = rpn.get('anchor_generator', {})
    num_anchors = len(anchors.get('scales', [8])) * len(anchors.get('ratios', [0.5, 1.0, 2.0]))
    use_sigmoid = rpn.get('loss_cls', {}).get('use_sigmoid', True)
    cls_out = num_anchors * (1 if use_sigmoid else 2)
    rin, feat = int(rpn['in_channels']), int(rpn.get('feat_channels', 256))
    num_convs = int(rpn.get('num_convs', 1))
    positions = sum(fh * fw for fh, fw in levels)
    conv = positions * (rin * feat * 9 + (num_convs - 1) * feat * feat * 9)
    return conv, positions * feat * (cls_out + num_anchors * 4)


def _roi_macs_per_proposal(head: dict) -> int:
    if _type(head) not in ('Shared2FCBBoxHead', 'ConvFCBBoxHead') or head.get('num_shared_convs', 0) \
            or head.get('num_cls_convs', 0) or head.get('num_reg_convs', 0) \
            or head.get('num_cls_fcs', 0) or head.get('num_reg_fcs', 0):
        raise ArchitectureError(f'--det-config: bbox_head type {head.get("type")!r} not supported '
                                '(allowed: Shared2FCBBoxHead or ConvFCBBoxHead with shared fcs only)')
    nfc = int(head.get('num_shared_fcs', 2))
    roi_size = int(head.get('roi_feat_size', 7))
    fc = int(head.get('fc_out_channels', 1024))
    ncls = int(head.get('num_classes', 80))
    in_flat = int(head.get('in_channels', 256)) * roi_size * roi_size
    per_roi = (in_flat * fc + (nfc - 1) * fc * fc) if nfc else 0
    last = fc if nfc else in_flat
    return per_roi + last * (ncls + 1) + last * (4 if head.get('reg_class_agnostic', False) else 4 * ncls)


def _backbone(model_cfg, arch):
    bb = dict(model_cfg['backbone'])
    if arch is not None:
        bb.update(arch=arch, pareto=None, ops=None)
    if _type(bb) != 'NASBNNDetBackbone':
        raise ArchitectureError(f'--det-config: backbone type {bb.get("type")!r} not supported '
                                '(allowed: NASBNNDetBackbone)')
    arch, space = resolve_backbone_arch(
        bb.get('arch'), bb.get('search_space'), bb.get('pareto'), bb.get('ops'), bb.get('strides'))
    return arch, space, det_out_indices(bb.get('out_indices', DEFAULT_OUT_INDICES), space.num_stages)


def detector_ops(model_cfg, img_size: Sequence[int] = None, arch=None, convention: str = 'full') -> dict:
    """OPs of the detector ``model_cfg`` (the config's ``model`` dict).

    Args:
        model_cfg: the config's ``model``.
        img_size: (H, W) of the input (``full``; ``paper`` always counts at 320 x 320).
        arch: replaces the backbone config's architecture.
        convention: 'full' or 'paper' (see the module doc).

    Returns:
        A dict of counts (plain numbers); ``ops`` is the total of the convention.
    """
    if convention not in CONVENTIONS:
        raise ArchitectureError(f'--convention: {convention!r} not allowed (allowed: {", ".join(CONVENTIONS)})')
    arch, space, out_indices = _backbone(model_cfg, arch)
    if convention == 'paper':
        img_size = PAPER_INPUT
    if img_size is None:
        raise ArchitectureError('--img-size: needed (or a config with a Resize in its test pipeline)')
    div = int(model_cfg.get('data_preprocessor', {}).get('pad_size_divisor', 1) or 1)
    h, w = image_size(tuple(img_size), '--img-size')
    h, w = _ceil_div(h, div) * div, _ceil_div(w, div) * div
    backbone = profile_arch(arch, (h, w), num_classes=0, space=space)
    sizes = stage_output_sizes((h, w), space)
    feats = [(arch.stage_out_channels[i], *sizes[i]) for i in out_indices]
    neck_cfg, rpn_cfg = model_cfg['neck'], model_cfg['rpn_head']
    neck_macs, levels = _fpn_macs(neck_cfg, feats)
    rpn_conv, rpn_1x1 = _rpn_macs(rpn_cfg, levels)
    per_roi = _roi_macs_per_proposal(model_cfg['roi_head']['bbox_head'])
    proposals = int(model_cfg.get('test_cfg', {}).get('rpn', {}).get('max_per_img', 1000))
    neck_binary, rpn_binary = _type(neck_cfg) in _BINARY_NECKS, _type(rpn_cfg) in _BINARY_RPNS
    rep = dict(
        arch=arch.to_text(),
        convention=convention,
        img_size=[int(img_size[0]), int(img_size[1])],
        padded_size=[h, w],
        backbone_ops=backbone.ops,
        backbone_bops=backbone.bops,
        backbone_int8ops=backbone.int8ops,
        neck_binary=neck_binary,
        neck_flops=0 if neck_binary else neck_macs,
        neck_bops=neck_macs if neck_binary else 0,
        rpn_binary=rpn_binary,
        rpn_flops=rpn_1x1 + (0 if rpn_binary else rpn_conv),
        rpn_bops=rpn_conv if rpn_binary else 0,
        roi_flops=per_roi * proposals,
        proposals=proposals,
        roi_flops_per_proposal=per_roi)
    rep['neck_ops'] = rep['neck_flops'] + rep['neck_bops'] / 64
    rep['rpn_ops'] = rep['rpn_flops'] + rep['rpn_bops'] / 64
    if convention == 'paper':  # the stem in full, binary parts / 64, the RPN and the RoI head not counted
        rep['ops'] = backbone.int8ops + backbone.bops / 64 + rep['neck_ops']
    else:
        rep['ops'] = backbone.ops + rep['neck_ops'] + rep['rpn_ops'] + rep['roi_flops']
    return rep
