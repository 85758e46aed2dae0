"""The paper's binary detection neck and RPN (Faster R-CNN + FPN on a NAS-BNN backbone).

As in the 1-bit detectors NAS-BNN compares with (BiDet, IDa-Det, LWS-Det; research notes in the
README, *Binary Faster R-CNN*): the FPN's lateral and output convolutions and the RPN's 3x3 conv are
binary, the RPN's 1x1 objectness / box convs and the RoI head stay full precision. Every binary conv
is a :class:`~nasbnn_mm.models.BinaryConvUnit` (RSign -> binary conv with weight normalization and
alpha -> BN -> + weight-free shortcut -> RPReLU), the backbone's binary layer, so there is one
binary conv implementation in the project.
"""
from __future__ import annotations
from typing import List, Tuple

import torch.nn as nn
from mmdet.models.dense_heads import RPNHead
from mmdet.models.necks import FPN
from mmdet.registry import MODELS as MMDET_MODELS
from torch import Tensor

from ..models.blocks import BinaryConvUnit
from ..ops.lowp import check_grad_precision, check_precision, set_binary_conv_precision
from ..registry import MODELS

__all__ = ['BinaryFPN', 'BinaryRPNHead']


@MODELS.register_module()
class BinaryFPN(FPN):
    """mmdet's FPN with binary lateral (1x1) and output (3x3) convolutions; extra levels by max
    pooling (``add_extra_convs=False``, Faster R-CNN's) or binary stride-2 3x3 convs. Its forward is
    mmdet's: laterals, top-down nearest upsampling and addition in real values, outputs.

    Args:
        in_channels, out_channels, num_outs, start_level, end_level, add_extra_convs,
            relu_before_extra_convs, upsample_cfg: as mmdet's FPN.
        shortcut: the weight-free shortcut around every binary conv (see
            :class:`~nasbnn_mm.models.BinaryConvUnit`).
        wn_eps, wn_unbiased: the binary convs' weight normalization.
        binary_conv_precision, binary_conv_grad: the binary convs' path, as the backbone's
            (:class:`~nasbnn_mm.models.NASBNNSupernet`).
        init_cfg: mmengine initialisation (the binary units need none).
    """

    def __init__(self,
                 in_channels: List[int],
                 out_channels: int,
                 num_outs: int,
                 start_level: int = 0,
                 end_level: int = -1,
                 add_extra_convs=False,
                 relu_before_extra_convs: bool = False,
                 upsample_cfg: dict = dict(mode='nearest'),
                 shortcut: bool = True,
                 wn_eps: float = 1e-5,
                 wn_unbiased: bool = False,
                 init_cfg=None,
                 binary_conv_precision: str = 'auto',
                 binary_conv_grad: str = 'auto',
                 **kwargs):
        precision = (check_precision(binary_conv_precision), check_grad_precision(binary_conv_grad))
        if kwargs.get('norm_cfg') or kwargs.get('act_cfg') or kwargs.get('conv_cfg'):
            raise ValueError('BinaryFPN: conv_cfg / norm_cfg / act_cfg not allowed (its units bring BN and RPReLU)')
        super().__init__(
            list(in_channels),
            out_channels,
            num_outs,
            start_level,
            end_level,
            add_extra_convs,
            relu_before_extra_convs,
            upsample_cfg=upsample_cfg,
            init_cfg=init_cfg)
        opts = dict(shortcut=shortcut, wn_eps=wn_eps, wn_unbiased=wn_unbiased)
        self.lateral_convs = nn.ModuleList(
            BinaryConvUnit(self.in_channels[i], out_channels, 1, **opts)
            for i in range(self.start_level, self.backbone_end_level))
        fpn_convs = [BinaryConvUnit(out_channels, out_channels, 3, **opts) for _ in self.lateral_convs]
        for conv in list(self.fpn_convs)[len(fpn_convs):]:  # extra stride-2 convs (add_extra_convs)
            fpn_convs.append(BinaryConvUnit(conv.conv.in_channels, out_channels, 3, stride=2, **opts))
        self.fpn_convs = nn.ModuleList(fpn_convs)
        set_binary_conv_precision(self, *precision)

    def forward(self, inputs: Tuple[Tensor, ...]) -> Tuple[Tensor, ...]:
        # NCHW-contiguous outputs whatever the inputs' layout: mmcv's CPU RoIAlign reads NCHW memory
        return tuple(o.contiguous() for o in super().forward(inputs))

    def to_deployed(self) -> 'BinaryFPN':
        """The same neck with every unit in its deployed form (inference only)."""
        import copy
        neck = copy.deepcopy(self)
        neck.lateral_convs = nn.ModuleList(u.to_deployed() for u in self.lateral_convs)
        neck.fpn_convs = nn.ModuleList(u.to_deployed() for u in self.fpn_convs)
        return neck.eval()


@MODELS.register_module()
class BinaryRPNHead(RPNHead):
    """mmdet's RPNHead whose 3x3 conv(s) are binary units (then no ReLU: the unit ends with RPReLU);
    the 1x1 objectness and box convs stay full precision.

    Args:
        in_channels, num_classes, num_convs, ...: as mmdet's RPNHead.
        shortcut, wn_eps, wn_unbiased, binary_conv_precision, binary_conv_grad: as :class:`BinaryFPN`.
    """

    def __init__(self,
                 *args,
                 shortcut: bool = True,
                 wn_eps: float = 1e-5,
                 wn_unbiased: bool = False,
                 binary_conv_precision: str = 'auto',
                 binary_conv_grad: str = 'auto',
                 **kwargs):
        self._unit_opts = dict(shortcut=shortcut, wn_eps=wn_eps, wn_unbiased=wn_unbiased)
        precision = (check_precision(binary_conv_precision), check_grad_precision(binary_conv_grad))
        super().__init__(*args, **kwargs)
        set_binary_conv_precision(self, *precision)

    def _init_layers(self) -> None:
        super()._init_layers()
        units = [
            BinaryConvUnit(self.in_channels if i == 0 else self.feat_channels, self.feat_channels, 3, **self._unit_opts)
            for i in range(self.num_convs)
        ]
        self.rpn_conv = units[0] if len(units) == 1 else nn.Sequential(*units)

    def forward_single(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        x = self.rpn_conv(x)
        return self.rpn_cls(x), self.rpn_reg(x)


MMDET_MODELS.register_module(module=BinaryFPN)
MMDET_MODELS.register_module(module=BinaryRPNHead)
