"""NAS-BNN backbones for mmpretrain: the weight-sharing supernet, a static subnet and its
deployed (1-bit) form.

All are mmpretrain-style backbones returning a tuple of stage outputs (``out_indices``). The
supernet runs whichever subnet :meth:`NASBNNSupernet.set_subnet` selected, in binary (student)
or teacher (Bi-Teacher: full-precision weights, binary activations) mode;
:meth:`NASBNNSupernet.get_active_subnet` gives that subnet as a static :class:`NASBNNSubnet`
(OFA style), whose :meth:`NASBNNSubnet.to_deployed` gives the :class:`NASBNNDeployedSubnet`.

The settings that change a backbone's arithmetic (:data:`BACKBONE_SETTINGS`: the binary convs'
weight normalization and ``exact_parity``) live on the backbone (:meth:`settings`), travel
into every checkpoint this project publishes (``meta['backbone_settings']``) and are checked
against the model when a checkpoint is loaded (:func:`check_backbone_settings`).

``binary_conv_precision`` / ``binary_conv_grad`` (the binary convolutions' hardware path,
``nasbnn_mm.ops.lowp``) are not among them: they choose how the same values are computed (the
bfloat16 path's forward is the exact value the float32 path rounds; its gradients agree to 1e-4),
so a checkpoint trained with one runs with the other; they are set per run, like the device.
"""
from __future__ import annotations
import math
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.model import BaseModule

from ..ops import BINARY, check_mode
from ..ops.lowp import check_grad_precision, check_precision, set_binary_conv_precision
from ..registry import MODELS
from ..space import Architecture, ArchitectureError, SearchSpace, layer_shapes
from .blocks import SeparableBinaryLayer, Stem, _named, _shell

__all__ = [
    'NASBNNSupernet', 'NASBNNSubnet', 'NASBNNDeployedSubnet', 'check_out_indices', 'BACKBONE_SETTINGS',
    'check_backbone_settings'
]

# what a checkpoint's weights were trained with (and must be evaluated with)
BACKBONE_SETTINGS = ('wn_eps', 'wn_unbiased', 'weight_norm')


def check_out_indices(out_indices, num_stages: int) -> Tuple[int, ...]:
    """``out_indices`` as a tuple of stage indices (-1: the last stage); one-line error otherwise."""
    out = tuple(out_indices) if isinstance(out_indices, (list, tuple)) else (out_indices, )
    for i in out:
        if isinstance(i, bool) or not isinstance(i, int) or not -1 <= i < num_stages:
            raise ArchitectureError(f'out_indices: {i!r} not allowed (allowed: 0..{num_stages - 1} or -1)')
    return tuple(num_stages - 1 if i == -1 else i for i in out)


def _check_bool(value, field: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f'{field}: {value!r} not allowed (allowed: True, False)')
    return value


def _check_eps(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
        raise ValueError(f'wn_eps: {value!r} not allowed (allowed: a finite number >= 0)')
    return float(value)


def check_backbone_settings(backbone, meta: Optional[dict], source: str) -> None:
    """Raise (one line) when a checkpoint's recorded settings (``meta['backbone_settings']``, or the
    top-level ``wn_eps`` / ``wn_unbiased`` older exports wrote) differ from ``backbone``'s: its weights
    would be evaluated with another weight normalization than they were trained with."""
    meta = meta if isinstance(meta, dict) else {}
    saved = dict(meta.get('backbone_settings') or {})
    saved.update({k: meta[k] for k in BACKBONE_SETTINGS if k in meta})
    ours = backbone.settings()
    for key in BACKBONE_SETTINGS:
        if key in saved and saved[key] != ours[key]:
            from ..utils.checkpoint import CheckpointMismatchError
            raise CheckpointMismatchError(
                f'checkpoint {source}: was trained with {key}={saved[key]!r}, the backbone has {key}={ours[key]!r} '
                f'(set model.backbone.{key}={saved[key]!r} in the config)')


class _NASBNNNet(BaseModule):
    """Shared forward and settings of the supernet and the static and deployed subnets."""

    stem: Stem
    stages: nn.ModuleList
    exact_parity: bool = False

    def _init_settings(self,
                       wn_eps: float,
                       wn_unbiased: bool,
                       exact_parity: bool,
                       weight_norm: bool = True,
                       binary_conv_precision: str = 'auto',
                       binary_conv_grad: str = 'auto') -> None:
        self.wn_eps = _check_eps(wn_eps)
        self.wn_unbiased = _check_bool(wn_unbiased, 'wn_unbiased')
        self.exact_parity = _check_bool(exact_parity, 'exact_parity')
        self.weight_norm = _check_bool(weight_norm, 'weight_norm')
        self.binary_conv_precision = check_precision(binary_conv_precision)
        self.binary_conv_grad = check_grad_precision(binary_conv_grad)
        if self.exact_parity and self.binary_conv_precision == 'bf16':
            raise ValueError("binary_conv_precision: 'bf16' not allowed with exact_parity=True "
                             "(allowed: 'auto', 'fp32'; exact_parity computes in the authors' float32 order)")

    def _apply_conv_precision(self) -> None:
        """Give every binary conv the backbone's path (``exact_parity`` forces float32)."""
        precision = 'fp32' if self.exact_parity else self.binary_conv_precision
        set_binary_conv_precision(self, precision, self.binary_conv_grad)

    def settings(self) -> Dict[str, object]:
        """The arithmetic settings a checkpoint of this backbone records (``meta['backbone_settings']``)."""
        return dict(wn_eps=self.wn_eps, wn_unbiased=self.wn_unbiased, weight_norm=self.weight_norm)

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

    @property
    def out_channels(self) -> Tuple[int, ...]:
        return tuple(self.arch.stage_out_channels[i] for i in self.out_indices)


@MODELS.register_module()
class NASBNNSupernet(_NASBNNNet):
    """Weight-sharing binary supernet over a search space (Table 1 by default).

    Args:
        search_space: dict / config path of the space (see ``configs/_base_/search_spaces``).
        out_indices: stages whose outputs are returned (default: last).
        wn_eps: epsilon of the channel-wise weight normalization.
        init_cfg: mmengine weight initialisation config.
        wn_unbiased: normalize with the unbiased (Bessel-corrected) std; with ``wn_eps=0`` this is
            the authors' normalization, which checkpoints converted from their release need.
        exact_parity: compute in the authors' float32 order of operations (NCHW activations)
            instead of the faster channels_last layout; with ``wn_eps=0, wn_unbiased=True`` the
            logits of a converted official checkpoint are then bit-identical to theirs.
        weight_norm, bi_transform, kernel_transform: the paper's channel-wise weight normalization,
            Bi-Transformation and kernel transform (all on; the ablations switch one off, see
            :class:`~nasbnn_mm.ops.SharedBinaryConv2d`).
        binary_conv_precision: the student-mode binary convolutions' path: ``'fp32'`` (``conv(x,
            alpha * sign)`` in float32), ``'bf16'`` (``alpha * conv(x, sign)``, ±1 operands in the
            hardware's bfloat16 mode with float32 accumulation: the exact value) or ``'auto'``
            (``'bf16'`` on a CPU with AMX-BF16 or a CUDA device of compute capability >= 8.0, else
            ``'fp32'``; logged once). ``exact_parity=True`` forces ``'fp32'``. See
            :mod:`nasbnn_mm.ops.lowp`.
        binary_conv_grad: their backward on the ``'bf16'`` path: ``'fp32'``, ``'bf16x2'`` /
            ``'bf16x3'`` (the incoming gradient split into 2 / 3 bfloat16 parts) or ``'auto'``
            (``'bf16x2'`` where the bfloat16 mode is fast, else ``'fp32'``).
    """

    def __init__(self,
                 search_space=None,
                 out_indices: Sequence[int] = (-1, ),
                 wn_eps: float = 1e-5,
                 init_cfg=None,
                 wn_unbiased: bool = False,
                 exact_parity: bool = False,
                 weight_norm: bool = True,
                 bi_transform: bool = True,
                 kernel_transform: bool = True,
                 binary_conv_precision: str = 'auto',
                 binary_conv_grad: str = 'auto'):
        super().__init__(init_cfg)
        self._init_settings(wn_eps, wn_unbiased, exact_parity, weight_norm, binary_conv_precision, binary_conv_grad)
        bi_transform = _check_bool(bi_transform, 'bi_transform')
        kernel_transform = _check_bool(kernel_transform, 'kernel_transform')
        self.space = SearchSpace.build(search_space)
        self.out_indices = check_out_indices(out_indices, self.space.num_stages)
        sp = self.space
        self.stem = Stem(max(sp.stem.widths), sp.stem.stride, sp.stem.kernel)
        stages = []
        for si, s in enumerate(sp.stages):
            layers = nn.ModuleList()
            for li in range(s.max_depth):
                layers.append(
                    SeparableBinaryLayer(
                        sp.max_in_channels(si, li),
                        max(s.widths),
                        s.kernels,
                        s.groups,
                        s.stride if li == 0 else 1,
                        bi_transform,
                        self.wn_eps,
                        self.wn_unbiased,
                        weight_norm=self.weight_norm,
                        kernel_transform=kernel_transform))
            stages.append(layers)
        self.stages = nn.ModuleList(stages)
        self.arch = sp.largest()
        self.mode = BINARY
        self._apply_conv_precision()

    def set_subnet(self, arch=None, mode: Optional[str] = None) -> Architecture:
        """Select the active subnet (validated against the space) and/or the weight mode."""
        if arch is not None:
            self.arch = self.space.resolve(arch)
        if mode is not None:
            self.mode = check_mode(mode)
        return self.arch

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return self._forward(x, self.arch, self.mode, self.out_indices)

    @torch.no_grad()
    def get_active_subnet(self,
                          arch=None,
                          mode: Optional[str] = None,
                          out_indices: Optional[Sequence[int]] = None) -> 'NASBNNSubnet':
        """The static :class:`NASBNNSubnet` of ``arch`` (default: the active subnet) in weight mode
        ``mode`` (default: the active mode): every layer's ``to_static`` copy, so its outputs equal
        this supernet's for that subnet (kernel transforms and, in binary mode, the
        Bi-Transformation folded into its weights)."""
        arch = self.space.resolve(self.arch if arch is None else arch)
        mode = check_mode(self.mode if mode is None else mode)
        net = _shell(NASBNNSubnet, arch, self.space, self.out_indices if out_indices is None else out_indices, mode,
                     self.wn_eps, None, self.wn_unbiased, self.exact_parity, self.weight_norm,
                     self.binary_conv_precision, self.binary_conv_grad)
        net.stem = self.stem.to_static(arch.stem.width)
        c = arch.stem.width
        for si, choices in enumerate(arch.stages):
            for li, ch in enumerate(choices):
                net.stages[si][li] = self.stages[si][li].to_static(c, ch, mode)
                c = ch.width
        net._apply_conv_precision()
        return net


@MODELS.register_module()
class NASBNNSubnet(_NASBNNNet):
    """A static NAS-BNN backbone for one architecture: no weight sharing, no kernel or
    Bi-Transformation matrices (an export folds them into the weights).

    Args:
        arch: preset name (A..F), architecture text or dict, or 'largest' / 'smallest' of the space.
        search_space: space the architecture is validated against (Table 1 by default).
        out_indices: stages whose outputs are returned (default: last).
        mode: 'binary' (deployment) or 'teacher'.
        wn_eps, init_cfg, wn_unbiased, exact_parity, weight_norm, binary_conv_precision, binary_conv_grad: as
            in :class:`NASBNNSupernet`.
    """

    _deployed = False

    def __init__(self,
                 arch,
                 search_space=None,
                 out_indices: Sequence[int] = (-1, ),
                 mode: str = BINARY,
                 wn_eps: float = 1e-5,
                 init_cfg=None,
                 wn_unbiased: bool = False,
                 exact_parity: bool = False,
                 weight_norm: bool = True,
                 binary_conv_precision: str = 'auto',
                 binary_conv_grad: str = 'auto'):
        super().__init__(init_cfg)
        self._init_settings(wn_eps, wn_unbiased, exact_parity, weight_norm, binary_conv_precision, binary_conv_grad)
        self.space = SearchSpace.build(search_space)
        self.arch = self.space.resolve(arch)
        self.mode = check_mode(mode)
        self.out_indices = check_out_indices(out_indices, self.space.num_stages)
        # one module per weighted layer of the shape walk (nasbnn_mm.space.layer_shapes)
        shapes = layer_shapes(self.arch, space=self.space)
        stem = shapes[0]
        self.stem = Stem(stem.out_channels, stem.stride, stem.kernel, stem.in_channels, deployed=self._deployed)
        stages = [nn.ModuleList() for _ in self.arch.stages]
        for kxk, pw in zip(shapes[1::2], shapes[2::2]):
            stages[kxk.stage].append(
                SeparableBinaryLayer(
                    kxk.in_channels,
                    pw.out_channels, (kxk.kernel, ), (kxk.groups, ),
                    kxk.stride,
                    bi_transform=False,
                    wn_eps=self.wn_eps,
                    wn_unbiased=self.wn_unbiased,
                    deployed=self._deployed,
                    weight_norm=self.weight_norm))
        self.stages = nn.ModuleList(stages)
        self._apply_conv_precision()

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return self._forward(x, self.arch, self.mode, self.out_indices)

    @torch.no_grad()
    def to_deployed(self) -> 'NASBNNDeployedSubnet':
        """The deployed form (binary mode only): every layer's ``to_deployed``."""
        if self.mode != BINARY:
            raise ValueError(f'to_deployed: mode {self.mode!r} not allowed (allowed: {BINARY!r})')
        net = _shell(NASBNNDeployedSubnet, self.arch, self.space, self.out_indices)
        net.stem = _named('stem', self.stem.to_deployed)
        for si, layers in enumerate(self.stages):
            for li, layer in enumerate(layers):
                net.stages[si][li] = _named(f'stages.{si}.{li}', layer.to_deployed)
        net.exact_parity = self.exact_parity
        return net.eval()


@MODELS.register_module()
class NASBNNDeployedSubnet(NASBNNSubnet):
    """Inference-only :class:`NASBNNSubnet` in the deployed binary form: binary convs hold ±1 signs
    and alpha (:class:`~nasbnn_mm.ops.DeployedBinaryConv2d`), BNs a folded scale / shift (eps 0),
    the stem its int8 weights times the steps. See :mod:`nasbnn_mm.models.packed`.

    Args:
        arch, search_space, out_indices, init_cfg: as :class:`NASBNNSubnet`.
    """

    _deployed = True

    def __init__(self, arch, search_space=None, out_indices: Sequence[int] = (-1, ), init_cfg=None):
        super().__init__(arch, search_space, out_indices, BINARY, init_cfg=init_cfg)

    def forward(self, x: torch.Tensor):
        if self.training:
            raise RuntimeError('NASBNNDeployedSubnet: inference only (BN is folded); call .eval() first')
        return super().forward(x)
