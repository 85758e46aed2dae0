"""OPs of an architecture, computed from the architecture alone (no model is built).

Convention (paper): OPs = FLOPs + Int8OPs / 8 + BOPs / 64, where each term counts
multiply-accumulates of convolutions and linear layers:
  * BOPs: the binary k x k group convs and binary 1 x 1 convs of every separable layer;
  * Int8OPs: the 8-bit LSQ stem conv (3 input channels);
  * FLOPs: the full-precision classifier, bias included (one add per output).
Batch norm, activations, RSign, shortcuts and pooling are not counted.

Parameters are split the same way; "full precision" also counts the per-channel parameters
a deployed model keeps in float32: BN scale and shift, the RSign threshold, the RPReLU's
three vectors, the per-output-channel binary scale alpha and the stem's LSQ step sizes.
The deployed size stores binary weights as 1 bit, the stem as 8 bits and the rest as 32 bits.

Spatial sizes: padding k // 2, so a stride-2 layer maps H to ceil(H / 2) for any H (odd
sizes included), like the model.
"""
from __future__ import annotations
from dataclasses import dataclass, field
from typing import List, Sequence, Tuple, Union

from .arch import Architecture
from .errors import ArchitectureError, short_repr
from .shapes import BINARY, FP, INT8, LayerShape, image_size, layer_shapes

__all__ = ['LayerCost', 'OpsReport', 'count_ops', 'profile_arch', 'DIVISORS']

Size = Union[int, Sequence[int]]

# OPs = FLOPs + Int8OPs / 8 + BOPs / 64: what one multiply-accumulate of each kind counts for
DIVISORS = {FP: 1, INT8: 8, BINARY: 64}

# per-channel float32 vectors a deployed model keeps next to a layer's weights
_FP_VECTORS = {
    'stem': lambda s: 6 * s.out_channels,  # LSQ step + BN (2) + RPReLU (3)
    'kxk': lambda s: 7 * s.in_channels,  # RSign threshold + alpha + BN (2) + RPReLU (3)
    '1x1': lambda s: s.in_channels + 6 * s.out_channels,  # RSign threshold; alpha + BN + RPReLU
    'fc': lambda s: 0,
}


def _check_classes(num_classes) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ArchitectureError(f'num_classes: {short_repr(num_classes)} not allowed (allowed: a positive int)')
    return num_classes


def count_ops(arch: Architecture, img_size: Size = 224, num_classes: int = 1000, space=None) -> float:
    """OPs of ``arch`` at ``img_size`` with a ``num_classes`` classifier (used by the search for
    every candidate: > 10^4 architectures per second)."""
    return sum(s.macs / DIVISORS[s.kind] for s in layer_shapes(arch, img_size, space, _check_classes(num_classes)))


@dataclass
class LayerCost:
    name: str
    kind: str  # 'int8', 'binary' or 'fp'
    in_channels: int
    out_channels: int
    kernel: int
    groups: int
    stride: int
    out_hw: Tuple[int, int]
    macs: int
    weight_params: int
    fp_params: int  # per-channel float32 parameters that go with this layer

    @classmethod
    def from_shape(cls, s: LayerShape) -> 'LayerCost':
        return cls(s.name, s.kind, s.in_channels, s.out_channels, s.kernel, s.groups, s.stride, s.out_hw, s.macs,
                   s.weight_params, _FP_VECTORS[s.role](s))


@dataclass
class OpsReport:
    arch: Architecture
    img_size: Tuple[int, int]
    num_classes: int
    layers: List[LayerCost] = field(default_factory=list)

    def _sum(self, kind: str, attr: str) -> int:
        return sum(getattr(l_, attr) for l_ in self.layers if l_.kind == kind)

    @property
    def flops(self) -> int:
        return self._sum(FP, 'macs')

    @property
    def int8ops(self) -> int:
        return self._sum(INT8, 'macs')

    @property
    def bops(self) -> int:
        return self._sum(BINARY, 'macs')

    @property
    def ops(self) -> float:
        return self.flops + self.int8ops / 8 + self.bops / 64

    @property
    def binary_params(self) -> int:
        return self._sum(BINARY, 'weight_params')

    @property
    def int8_params(self) -> int:
        return self._sum(INT8, 'weight_params')

    @property
    def fp_params(self) -> int:
        return self._sum(FP, 'weight_params') + sum(l_.fp_params for l_ in self.layers)

    @property
    def total_params(self) -> int:
        return self.binary_params + self.int8_params + self.fp_params

    @property
    def size_bytes(self) -> float:
        """Deployed size: 1 bit per binary weight, 1 byte per 8-bit weight, 4 per float."""
        return self.binary_params / 8 + self.int8_params + 4 * self.fp_params

    def summary(self) -> dict:
        return dict(
            arch=self.arch.to_text(),
            img_size=list(self.img_size),
            num_classes=self.num_classes,
            flops=self.flops,
            int8ops=self.int8ops,
            bops=self.bops,
            ops=self.ops,
            binary_params=self.binary_params,
            int8_params=self.int8_params,
            fp_params=self.fp_params,
            size_mb=self.size_bytes / 2**20)


def profile_arch(arch: Architecture, img_size: Size = 224, num_classes: int = 1000, space=None) -> OpsReport:
    """Per-layer costs of ``arch`` (``num_classes=0``: no classifier); the totals equal :func:`count_ops`."""
    if num_classes != 0:
        _check_classes(num_classes)
    shapes = layer_shapes(arch, img_size, space, num_classes or None)
    return OpsReport(arch, image_size(img_size), num_classes, [LayerCost.from_shape(s) for s in shapes])
