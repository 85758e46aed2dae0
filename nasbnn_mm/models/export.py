"""Export a subnet of a supernet as the weights of a static :class:`NASBNNSubnet`.

Everything goes through :meth:`NASBNNSupernet.get_active_subnet` (each module's ``to_static``),
so the supernet, the export, the mmdet backbone's weight inheritance and the packed form share
one slicing implementation: the kernel transforms and the Bi-Transformation (binary mode) are
folded into the exported weights; weight normalization and binarization stay in the static
model's forward.
"""
from __future__ import annotations
from collections import OrderedDict
from typing import Sequence

import torch

from ..ops import BINARY
from .supernet import NASBNNSubnet, NASBNNSupernet

__all__ = ['subnet_backbone_state', 'subnet_classifier_state', 'build_static_backbone']


def build_static_backbone(supernet: NASBNNSupernet,
                          arch,
                          out_indices: Sequence[int] = (-1, ),
                          mode: str = BINARY) -> NASBNNSubnet:
    """A :class:`NASBNNSubnet` carrying ``arch``'s weights from ``supernet`` (copies)."""
    return supernet.get_active_subnet(arch, mode, out_indices)


def subnet_backbone_state(supernet: NASBNNSupernet, arch, mode: str = BINARY) -> 'OrderedDict[str, torch.Tensor]':
    """State dict of a :class:`NASBNNSubnet` (keys without prefix) equal to ``arch`` inside
    ``supernet`` in weight mode ``mode``."""
    return OrderedDict((k, v.detach()) for k, v in supernet.get_active_subnet(arch, mode).state_dict().items())


@torch.no_grad()
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
