"""Weight inheritance: initialise a static NAS-BNN backbone from a supernet (or subnet) checkpoint.

Used by the mmdet backbone (``nasbnn_mm.det``) and by any static subnet config.

``init_cfg=dict(type='nasbnn.InheritFromSupernet', checkpoint=PATH)`` on a
:class:`~nasbnn_mm.models.NASBNNSubnet` / :class:`~nasbnn_mm.det.NASBNNDetBackbone` runs in
mmengine's ``init_weights`` flow (the runner calls it before ``load_from``/``resume``). ``PATH`` is

* a supernet checkpoint (``published.pth`` of a supernet run: ``meta.search_space`` and the
  shared weights, recognisable by their kernel / Bi-Transformation matrices): the supernet is
  rebuilt from its space and the subnet is taken with
  :meth:`~nasbnn_mm.models.NASBNNSupernet.get_active_subnet` (the one slicing implementation), in
  the backbone's weight mode;
* or a static subnet checkpoint (``tools/export_subnet.py``, or a detector trained with this
  backbone): its ``backbone.*`` tensors are loaded as they are.

Either way every tensor must fit the backbone and the checkpoint's recorded weight normalization
(``meta['backbone_settings']``, or ``wn_eps`` / ``wn_unbiased``) must be the backbone's; the first
problem raises :class:`~nasbnn_mm.utils.CheckpointMismatchError` naming it (one line). Non-finite
values are refused. Loading is safe (``weights_only=True``) unless ``trusted=True``.
"""
from __future__ import annotations
from collections import OrderedDict
from typing import Dict, Mapping, Tuple

import torch
from mmengine.logging import print_log
from mmengine.model.weight_init import update_init_info

from ..registry import WEIGHT_INITIALIZERS
from ..space import ArchitectureError, SearchSpace
from ..utils.checkpoint import CheckpointMismatchError, check_finite, load_checkpoint_file
from .supernet import NASBNNSubnet, NASBNNSupernet, check_backbone_settings

__all__ = ['InheritFromSupernet', 'inherited_backbone_state']

_PREFIX = 'backbone.'


def _split(ckpt, path: str) -> Tuple[dict, Dict[str, torch.Tensor], str]:
    """(meta, backbone tensors without prefix, prefix used in the file)."""
    if not isinstance(ckpt, Mapping):
        raise CheckpointMismatchError(f'checkpoint {path}: expected a dict of tensors, got {type(ckpt).__name__}')
    meta = ckpt.get('meta') or {}
    sd = ckpt.get('state_dict', ckpt)
    if not isinstance(meta, Mapping) or not isinstance(sd, Mapping):
        raise CheckpointMismatchError(f"checkpoint {path}: expected {{'meta': dict, 'state_dict': dict of tensors}}")
    sd = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if any(k.startswith(_PREFIX) for k in sd):
        return meta, {k[len(_PREFIX):]: v for k, v in sd.items() if k.startswith(_PREFIX)}, _PREFIX
    return meta, sd, ''


def _is_supernet_state(sd: Mapping[str, torch.Tensor], meta: Mapping) -> bool:
    """A supernet's shared weights: kernel / Bi-Transformation matrices, or the supernet classifier's
    published meta (an ablation may have neither matrix)."""
    return (any(k.endswith('.bi_transform') or '.kernel_transforms.' in k for k in sd)
            or meta.get('model_type') == 'SandwichClassifier')


def _check_fits(expected: Mapping[str, torch.Tensor], got: Mapping[str, torch.Tensor], path: str, prefix: str,
                what: str) -> None:
    """Raise naming the first tensor of ``got`` that does not fit ``expected`` (keys and shapes)."""
    for k, ref in expected.items():
        if k not in got:
            raise CheckpointMismatchError(
                f'checkpoint {path}: tensor {prefix}{k} missing ({what} needs shape {tuple(ref.shape)})')
        if tuple(got[k].shape) != tuple(ref.shape):
            raise CheckpointMismatchError(f'checkpoint {path}: tensor {prefix}{k} has shape {tuple(got[k].shape)}, '
                                          f'{what} needs {tuple(ref.shape)}')
    for k in got:
        if k not in expected:
            raise CheckpointMismatchError(f'checkpoint {path}: tensor {prefix}{k} is not part of {what}')


@torch.no_grad()
def inherited_backbone_state(
    module: NASBNNSubnet,
    path: str,
    trusted: bool = False,
) -> 'OrderedDict[str, torch.Tensor]':
    """The state dict of ``module`` (a static NAS-BNN backbone) taken from checkpoint ``path``."""
    if not isinstance(module, NASBNNSubnet):
        raise TypeError(f'InheritFromSupernet: initialises NASBNNSubnet / NASBNNDetBackbone, '
                        f'not {type(module).__name__}')
    meta, sd, prefix = _split(load_checkpoint_file(path, trusted=trusted), path)
    check_backbone_settings(module, meta, path)
    check_finite(sd, path)
    if _is_supernet_state(sd, meta):
        space = SearchSpace.build(meta['search_space']) if meta.get('search_space') else module.space
        with torch.device('meta'):  # shapes only: the tensors come from the file
            supernet = NASBNNSupernet(
                space,
                wn_eps=module.wn_eps,
                wn_unbiased=module.wn_unbiased,
                weight_norm=module.weight_norm,
                bi_transform=any(k.endswith('.bi_transform') for k in sd),
                kernel_transform=any('.kernel_transforms.' in k for k in sd))
        _check_fits(supernet.state_dict(), sd, path, prefix, "the supernet of the checkpoint's search space")
        supernet.load_state_dict(sd, strict=True, assign=True)
        try:
            arch = space.validate(module.arch)
        except ArchitectureError as e:
            raise CheckpointMismatchError(
                f"checkpoint {path}: the architecture is not in the supernet's search space: {e}") from None
        state = supernet.get_active_subnet(arch, module.mode).state_dict()
        source = f'supernet {path}'
    else:
        state = OrderedDict(sd)
        source = f'subnet {path}'
    _check_fits(module.state_dict(), state, path, prefix, f'architecture {module.arch.to_text()}')
    print_log(f'InheritFromSupernet: {module.arch.to_text()} from {source}', logger='current')
    return state


@WEIGHT_INITIALIZERS.register_module()
class InheritFromSupernet:
    """mmengine weight initializer: ``dict(type='nasbnn.InheritFromSupernet', checkpoint=PATH)``.

    Args:
        checkpoint: published supernet checkpoint or static subnet / detector checkpoint.
        trusted: allow full unpickling (only for files you trust); default: safe loading.
    """

    def __init__(self, checkpoint: str, trusted: bool = False):
        self.checkpoint = checkpoint
        self.trusted = trusted
        self.wholemodule = False

    def __call__(self, module) -> None:
        state = inherited_backbone_state(module, self.checkpoint, self.trusted)
        module.load_state_dict(state, strict=True)
        if hasattr(module, '_params_init_info'):
            update_init_info(module, init_info=self._get_init_info())

    def _get_init_info(self) -> str:
        return f'{self.__class__.__name__}: checkpoint={self.checkpoint}'
