"""The NAS-BNN detection backbone (MMDetection) and the channels its FPN needs.

:class:`NASBNNDetBackbone` is a :class:`~nasbnn_mm.models.NASBNNSubnet` (same blocks, same
forward, binary student weights) with what an mmdet backbone needs on top: the architecture
may come from a ``pareto.json`` of the search, ``out_indices`` default to the four stages at
strides 4/8/16/32, and ``frozen_stages`` / ``norm_eval`` behave like mmdet's ResNet.

Stage indices are those of the supernet: stage 0 is the paper's stage 1 (stride 2 in Table 1),
stages 1..4 are the paper's stages 2..5 (strides 4, 8, 16, 32) -- the counterparts of ResNet's
``layer1..layer4``.
"""
from __future__ import annotations
from typing import List, Optional, Sequence, Tuple

import torch
from mmdet.registry import MODELS as MMDET_MODELS
from torch.nn.modules.batchnorm import _BatchNorm

from ..models.supernet import NASBNNSubnet, check_out_indices
from ..ops import BINARY
from ..registry import MODELS
from ..space import Architecture, ArchitectureError, SearchSpace
from ..space.pareto import load_pareto, pareto_entry

__all__ = [
    'NASBNNDetBackbone', 'resolve_backbone_arch', 'fpn_in_channels', 'det_out_indices', 'sync_neck_in_channels',
    'DEFAULT_OUT_INDICES'
]

DEFAULT_OUT_INDICES = (1, 2, 3, 4)


def _with_strides(space: SearchSpace, strides: Sequence[int]) -> SearchSpace:
    """``space`` with the stem's and stages' strides replaced (weights do not depend on them)."""
    n = 1 + space.num_stages
    if not isinstance(strides, (list, tuple)) or len(strides) != n:
        raise ArchitectureError(f'strides: expected {n} values (the stem, then {space.num_stages} stages), '
                                f'got {strides!r}')
    for s in strides:
        if s not in (1, 2):
            raise ArchitectureError(f'strides: {s!r} not allowed (allowed: 1, 2)')
    d = space.to_dict()
    d['stem']['stride'] = int(strides[0])
    for stage, s in zip(d['stages'], strides[1:]):
        stage['stride'] = int(s)
    return SearchSpace(**d)


def resolve_backbone_arch(arch=None,
                          search_space=None,
                          pareto: Optional[str] = None,
                          ops=None,
                          strides: Optional[Sequence[int]] = None) -> Tuple[Architecture, SearchSpace]:
    """The architecture and space of a detection backbone.

    ``arch``: preset name (A..F), architecture text or dict, ``'largest'`` / ``'smallest'``;
    or ``pareto``: a ``pareto.json`` of the search with ``ops``: the OPs bin (M) of the entry.
    ``search_space``: the space (default: the one recorded in the pareto file, else Table 1).
    ``strides``: optional (stem, stage 1, ..., stage N) strides replacing the space's.
    """
    if (arch is None) == (pareto is None):
        raise ArchitectureError('arch: give either arch (preset A..F, text or dict) '
                                'or pareto=<pareto.json> with ops=<OPs bin>')
    if pareto is not None:
        arch = pareto_entry(pareto, ops)['arch']
        if search_space is None:
            search_space = load_pareto(pareto).get('search_space')
    elif ops is not None:
        raise ArchitectureError(f'ops: {ops!r} given without pareto=<pareto.json> (ops selects a Pareto entry)')
    space = SearchSpace.build(search_space)
    if strides is not None:
        space = _with_strides(space, strides)
    return space.resolve(arch), space


def det_out_indices(out_indices, num_stages: int) -> Tuple[int, ...]:
    """Increasing stage indices for the neck (one-line error otherwise)."""
    out = check_out_indices(out_indices, num_stages)
    if any(b <= a for a, b in zip(out, out[1:])):
        raise ArchitectureError(f'out_indices: {tuple(out_indices)} must be increasing stage indices '
                                f'(allowed: 0..{num_stages - 1})')
    return out


def fpn_in_channels(backbone: Optional[dict] = None, **kwargs) -> List[int]:
    """Channels of the feature maps a :class:`NASBNNDetBackbone` config gives its neck.

    Takes the backbone's config dict (or its fields as keywords); only ``arch``, ``pareto``,
    ``ops``, ``search_space`` and ``out_indices`` matter. Meant for configs::

        from nasbnn_mm.det import fpn_in_channels
        backbone = dict(type='nasbnn.NASBNNDetBackbone', arch='D')
        model = dict(backbone=backbone, neck=dict(type='FPN', in_channels=fpn_in_channels(backbone), ...))
    """
    cfg = dict(backbone or {}, **kwargs)
    arch, space = resolve_backbone_arch(cfg.get('arch'), cfg.get('search_space'), cfg.get('pareto'), cfg.get('ops'))
    out = det_out_indices(cfg.get('out_indices', DEFAULT_OUT_INDICES), space.num_stages)
    return [arch.stage_out_channels[i] for i in out]


def sync_neck_in_channels(cfg, log=None) -> None:
    """A NAS-BNN detector's neck ``in_channels`` follow from its backbone's architecture; after
    ``--cfg-options model.backbone.arch=...`` (or ``pareto`` / ``ops`` / ``out_indices``) a config's
    values are stale and the first forward would fail on a shape mismatch, so they are recomputed
    (and ``log`` is told)."""
    model = cfg.get('model') or {}
    backbone, neck = model.get('backbone') or {}, model.get('neck')
    if str(backbone.get('type', '')).split('.')[-1] != 'NASBNNDetBackbone' or not isinstance(neck, dict) \
            or 'in_channels' not in neck:
        return
    want = fpn_in_channels(backbone)
    if list(neck['in_channels']) != want:
        if log:
            log(f"model.neck.in_channels {list(neck['in_channels'])} -> {want} (the backbone's stage widths)")
        neck['in_channels'] = want


@MODELS.register_module()
class NASBNNDetBackbone(NASBNNSubnet):
    """A static NAS-BNN subnet as an MMDetection backbone (binary student weights, 8-bit LSQ stem).

    Args:
        arch: preset name (A..F), architecture text or dict, or 'largest' / 'smallest' of the space.
        search_space: dict / config path of the space the architecture belongs to (default: Table 1,
            or the one recorded in ``pareto``).
        out_indices: stages whose outputs go to the neck (default (1, 2, 3, 4): strides 4..32).
        frozen_stages: -1 freezes nothing; k >= 0 freezes the stem and stages 0..k-1 (their
            parameters stop training, their BN statistics stay fixed). mmdet ResNet's
            ``frozen_stages=1`` (stem + the stride-4 stage) is ``frozen_stages=2`` here.
        norm_eval: keep every BN layer in eval mode during training (mmdet ResNet semantics).
            Default False: the BN layers of a binary net carry the scale that a real-valued net
            keeps in its weights and need to adapt to detection images.
        pareto, ops: take the architecture from the search's ``pareto.json``, entry in OPs bin ``ops``.
        strides: optional (stem, stage 0, ..., stage N-1) strides replacing the space's, e.g.
            (2, 1, 2, 2, 2, 2) to run a CIFAR-space architecture (stem stride 1) at the usual
            detection strides; weights do not depend on strides, so inheritance still works.
        wn_eps, wn_unbiased, exact_parity, weight_norm, binary_conv_precision, binary_conv_grad: as in
            :class:`~nasbnn_mm.models.NASBNNSupernet`.
        mode: 'binary' (default, the paper's detector), 'teacher' (real-valued weights, binary
            activations) or 'full' (real-valued weights and activations: the same architecture as a
            full-precision reference).
        init_cfg: e.g. ``dict(type='nasbnn.InheritFromSupernet', checkpoint=...)``.
    """

    def __init__(self,
                 arch=None,
                 search_space=None,
                 out_indices: Sequence[int] = DEFAULT_OUT_INDICES,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 pareto: Optional[str] = None,
                 ops=None,
                 strides: Optional[Sequence[int]] = None,
                 wn_eps: float = 1e-5,
                 wn_unbiased: bool = False,
                 init_cfg=None,
                 exact_parity: bool = False,
                 weight_norm: bool = True,
                 mode: str = BINARY,
                 binary_conv_precision: str = 'auto',
                 binary_conv_grad: str = 'auto'):
        arch, space = resolve_backbone_arch(arch, search_space, pareto, ops, strides)
        out_indices = det_out_indices(out_indices, space.num_stages)
        super().__init__(arch, space, out_indices, mode, wn_eps, init_cfg, wn_unbiased, exact_parity, weight_norm,
                         binary_conv_precision, binary_conv_grad)
        if not isinstance(frozen_stages, int) or not -1 <= frozen_stages <= space.num_stages:
            raise ArchitectureError(f'frozen_stages: {frozen_stages!r} not allowed '
                                    f'(allowed: -1..{space.num_stages})')
        self.frozen_stages = frozen_stages
        self.norm_eval = bool(norm_eval)
        self._freeze_stages()

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        # NCHW-contiguous outputs: the backbone computes in channels_last, but mmcv's CPU RoIAlign reads its
        # input's memory as NCHW whatever its strides, so channels_last features reach the RoI head scrambled
        # (the RPN's convolutions do not care): the float-head detector then could not overfit 8 images
        return tuple(o.contiguous() for o in super().forward(x))

    def _frozen_modules(self):
        if self.frozen_stages >= 0:
            yield self.stem
            yield from self.stages[:self.frozen_stages]

    def _freeze_stages(self) -> None:
        for m in self._frozen_modules():
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self


MMDET_MODELS.register_module(module=NASBNNDetBackbone)
