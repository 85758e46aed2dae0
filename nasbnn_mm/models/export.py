"""Export a subnet of a supernet as the weights of a static :class:`NASBNNSubnet`.

The slices come from :class:`nasbnn_mm.ops.SharedBinaryConv2d` itself (``latent_weight`` and
``transformed_weight``), so the supernet, the export and the mmdet backbone share one slicing
implementation. The kernel transforms and the Bi-Transformation (binary mode) are folded into
the exported weights; weight normalization and binarization stay in the static model's forward.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict, Optional

import torch

from ..ops import BINARY
from ..space import Architecture
from .supernet import NASBNNSubnet, NASBNNSupernet

__all__ = ['subnet_backbone_state', 'subnet_classifier_state', 'build_static_backbone']


def _vec(t: torch.Tensor, c: int) -> torch.Tensor:
    return t[:c].detach().clone()


def _bn(sd: Dict[str, torch.Tensor], prefix: str, bn, c: int) -> None:
    sd[prefix + 'weight'] = _vec(bn.weight, c)
    sd[prefix + 'bias'] = _vec(bn.bias, c)
    sd[prefix + 'running_mean'] = _vec(bn.running_mean, c)
    sd[prefix + 'running_var'] = _vec(bn.running_var, c)
    sd[prefix + 'num_batches_tracked'] = bn.num_batches_tracked.detach().clone()


def _rprelu(sd, prefix: str, act, c: int) -> None:
    sd[prefix + 'bias_in'] = _vec(act.bias_in, c)
    sd[prefix + 'slope'] = _vec(act.slope, c)
    sd[prefix + 'bias_out'] = _vec(act.bias_out, c)


@torch.no_grad()
def subnet_backbone_state(supernet: NASBNNSupernet, arch, mode: str = BINARY) -> 'OrderedDict[str, torch.Tensor]':
    """State dict of a :class:`NASBNNSubnet` (keys without prefix) equal to ``arch`` inside
    ``supernet`` in weight mode ``mode``."""
    arch = supernet.space.validate(arch)
    sd: 'OrderedDict[str, torch.Tensor]' = OrderedDict()
    c = arch.stem.width
    stem = supernet.stem
    sd['stem.conv.weight'] = stem.conv.weight[:c].detach().clone()
    sd['stem.conv.step'] = _vec(stem.conv.step, c)
    sd['stem.conv.step_initialized'] = stem.conv.step_initialized.detach().clone()
    _bn(sd, 'stem.bn.', stem.bn, c)
    _rprelu(sd, 'stem.act.', stem.act, c)
    for si, choices in enumerate(arch.stages):
        for li, ch in enumerate(choices):
            layer = supernet.stages[si][li]
            p = f'stages.{si}.{li}.'
            sd[p + 'sign1.bias'] = _vec(layer.sign1.bias, c)
            conv = layer.conv_kxk
            w = conv.transformed_weight(conv.latent_weight(c, c, ch.kernel, ch.groups), ch.kernel, mode)
            sd[p + 'conv_kxk.weight'] = w.detach().clone()
            _bn(sd, p + 'bn1.', layer.bn1, c)
            _rprelu(sd, p + 'act1.', layer.act1, c)
            sd[p + 'sign2.bias'] = _vec(layer.sign2.bias, c)
            conv = layer.conv_1x1
            w = conv.transformed_weight(conv.latent_weight(c, ch.width, 1, 1), 1, mode)
            sd[p + 'conv_1x1.weight'] = w.detach().clone()
            _bn(sd, p + 'bn2.', layer.bn2, ch.width)
            _rprelu(sd, p + 'act2.', layer.act2, ch.width)
            c = ch.width
    return sd


def subnet_classifier_state(classifier, arch, mode: str = BINARY) -> 'OrderedDict[str, torch.Tensor]':
    """State dict of an ImageClassifier(NASBNNSubnet, GAP, LinearClsHead) for ``arch`` taken
    from a :class:`SandwichClassifier` (or any classifier with a supernet backbone and a
    linear head named ``head.fc``)."""
    arch = classifier.backbone.space.validate(arch)
    sd = OrderedDict(('backbone.' + k, v) for k, v in subnet_backbone_state(classifier.backbone, arch, mode).items())
    c = arch.stage_out_channels[-1]
    sd['head.fc.weight'] = classifier.head.fc.weight[:, :c].detach().clone()
    sd['head.fc.bias'] = classifier.head.fc.bias.detach().clone()
    return sd


def build_static_backbone(supernet: NASBNNSupernet, arch, out_indices=(-1,), mode: str = BINARY) -> NASBNNSubnet:
    """A :class:`NASBNNSubnet` carrying ``arch``'s weights from ``supernet``."""
    conv = supernet.stages[0][0].conv_kxk
    net = NASBNNSubnet(arch, supernet.space.to_dict(), out_indices, mode, wn_eps=conv.wn_eps,
                       wn_unbiased=getattr(conv, 'wn_unbiased', False))
    net.to(dtype=next(supernet.parameters()).dtype)  # a float64 supernet exports without rounding
    net.load_state_dict(subnet_backbone_state(supernet, arch, mode), strict=True)
    return net
