"""NAS-BNN backbones for mmpretrain: the weight-sharing supernet and a static subnet.

Both are mmpretrain-style backbones returning a tuple of stage outputs (``out_indices``).
The supernet runs whichever subnet :meth:`NASBNNSupernet.set_subnet` selected, in binary
(student) or teacher (Bi-Teacher: full-precision weights, binary activations) mode.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.model import BaseModule

from ..ops import BINARY, WEIGHT_MODES
from ..registry import MODELS
from ..space import Architecture, ArchitectureError, SearchSpace
from .blocks import SeparableBinaryLayer, Stem

__all__ = ['NASBNNSupernet', 'NASBNNSubnet']


def _check_out_indices(out_indices, num_stages):
    out = tuple(out_indices) if isinstance(out_indices, (list, tuple)) else (out_indices,)
    for i in out:
        if not (-1 <= i < num_stages):
            raise ArchitectureError(f'out_indices: {i} not allowed (allowed: 0..{num_stages - 1} or -1)')
    return tuple(num_stages - 1 if i == -1 else i for i in out)


def _check_bool(value, field: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f'{field}: {value!r} not allowed (allowed: True, False)')
    return value


class _NASBNNNet(BaseModule):
    """Shared forward of the supernet and the static subnet."""

    stem: Stem
    stages: nn.ModuleList
    exact_parity: bool = False

    def _forward(self, x: torch.Tensor, arch: Architecture, mode: str,
                 out_indices: Tuple[int, ...]) -> Tuple[torch.Tensor, ...]:
        if x.dim() == 4 and not self.exact_parity:
            # NHWC from here on: oneDNN's convolutions run 10-15% faster on CPU without layout
            # reorders, and every other op keeps the layout. Their float32 results differ from
            # NCHW's by rounding, so exact_parity (the authors' arithmetic) stays in NCHW.
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.stem(x, arch.stem.width)
        outs = []
        for si, (layers, choices) in enumerate(zip(self.stages, arch.stages)):
            for layer, ch in zip(layers, choices):
                x = layer(x, ch.width, ch.kernel, ch.groups, mode)
            if si in out_indices:
                outs.append(x)
        return tuple(outs)


@MODELS.register_module()
class NASBNNSupernet(_NASBNNNet):
    """Weight-sharing binary supernet over a search space (Table 1 by default).

    Args:
        search_space: dict / config path of the space (see ``configs/_base_/search_spaces``).
        out_indices: stages whose outputs are returned (default: last).
        wn_eps: epsilon of the channel-wise weight normalization.
        wn_unbiased: normalize with the unbiased (Bessel-corrected) std; with ``wn_eps=0`` this is
            the authors' normalization, which checkpoints converted from their release need.
        exact_parity: compute in the authors' float32 order of operations (NCHW activations)
            instead of the faster channels_last layout; with ``wn_eps=0, wn_unbiased=True`` the
            logits of a converted official checkpoint are then bit-identical to theirs.
    """

    def __init__(self, search_space=None, out_indices: Sequence[int] = (-1,), wn_eps: float = 1e-5,
                 init_cfg=None, wn_unbiased: bool = False, exact_parity: bool = False):
        super().__init__(init_cfg)
        self.exact_parity = _check_bool(exact_parity, 'exact_parity')
        self.space = SearchSpace.build(search_space)
        self.out_indices = _check_out_indices(out_indices, self.space.num_stages)
        sp = self.space
        self.stem = Stem(max(sp.stem.widths), sp.stem.stride, sp.stem.kernel)
        stages = []
        for si, s in enumerate(sp.stages):
            layers = nn.ModuleList()
            for li in range(s.max_depth):
                layers.append(SeparableBinaryLayer(
                    sp.max_in_channels(si, li), max(s.widths), s.kernels, s.groups,
                    s.stride if li == 0 else 1, True, wn_eps, wn_unbiased))
            stages.append(layers)
        self.stages = nn.ModuleList(stages)
        self.arch = sp.largest()
        self.mode = BINARY

    @property
    def out_channels(self) -> Tuple[int, ...]:
        return tuple(self.arch.stage_out_channels[i] for i in self.out_indices)

    def set_subnet(self, arch=None, mode: Optional[str] = None) -> Architecture:
        """Select the active subnet (validated against the space) and/or the weight mode."""
        if arch is not None:
            self.arch = self.space.validate(arch)
        if mode is not None:
            if mode not in WEIGHT_MODES:
                raise ValueError(f'mode: {mode!r} not allowed (allowed: {", ".join(WEIGHT_MODES)})')
            self.mode = mode
        return self.arch

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return self._forward(x, self.arch, self.mode, self.out_indices)


@MODELS.register_module()
class NASBNNSubnet(_NASBNNNet):
    """A static NAS-BNN backbone for one architecture: no weight sharing, no kernel or
    Bi-Transformation matrices (an export folds them into the weights).

    Args:
        arch: preset name (A..F), architecture text or dict, or 'largest' / 'smallest' of the space.
        search_space: space the architecture is validated against (Table 1 by default).
        out_indices: stages whose outputs are returned (default: last).
        mode: 'binary' (deployment) or 'teacher'.
        wn_eps, wn_unbiased, exact_parity: as in :class:`NASBNNSupernet`.
    """

    def __init__(self, arch, search_space=None, out_indices: Sequence[int] = (-1,), mode: str = BINARY,
                 wn_eps: float = 1e-5, init_cfg=None, wn_unbiased: bool = False, exact_parity: bool = False):
        super().__init__(init_cfg)
        self.exact_parity = _check_bool(exact_parity, 'exact_parity')
        self.space = SearchSpace.build(search_space)
        if isinstance(arch, str) and arch.strip().lower() in ('largest', 'smallest'):
            arch = getattr(self.space, arch.strip().lower())()
        self.arch = self.space.validate(arch)
        if mode not in WEIGHT_MODES:
            raise ValueError(f'mode: {mode!r} not allowed (allowed: {", ".join(WEIGHT_MODES)})')
        self.mode = mode
        self.out_indices = _check_out_indices(out_indices, self.space.num_stages)
        self.stem = Stem(self.arch.stem.width, self.space.stem.stride, self.space.stem.kernel)
        stages, c = [], self.arch.stem.width
        for si, choices in enumerate(self.arch.stages):
            layers = nn.ModuleList()
            for li, ch in enumerate(choices):
                layers.append(SeparableBinaryLayer(c, ch.width, (ch.kernel,), (ch.groups,),
                                                   self.space.stages[si].stride if li == 0 else 1,
                                                   bi_transform=False, wn_eps=wn_eps,
                                                   wn_unbiased=wn_unbiased))
                c = ch.width
            stages.append(layers)
        self.stages = nn.ModuleList(stages)

    @property
    def out_channels(self) -> Tuple[int, ...]:
        return tuple(self.arch.stage_out_channels[i] for i in self.out_indices)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return self._forward(x, self.arch, self.mode, self.out_indices)
