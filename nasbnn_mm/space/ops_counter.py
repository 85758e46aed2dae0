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

__all__ = ['LayerCost', 'OpsReport', 'count_ops', 'profile_arch']

Size = Union[int, Sequence[int]]


def _hw(img_size: Size) -> Tuple[int, int]:
    if isinstance(img_size, int):
        return img_size, img_size
    h, w = img_size
    return int(h), int(w)


def _down(x: int, s: int) -> int:
    return -(-x // s)  # ceil


def _strides(space) -> Tuple[int, Tuple[int, ...]]:
    if space is None:
        return 2, (1, 2, 2, 2, 2)
    return space.stem.stride, tuple(s.stride for s in space.stages)


def count_ops(arch: Architecture, img_size: Size = 224, num_classes: int = 1000, space=None) -> float:
    """OPs of ``arch`` (fast path used by the search; >10^4 architectures per second)."""
    h, w = _hw(img_size)
    stem_stride, strides = _strides(space)
    h, w = _down(h, stem_stride), _down(w, stem_stride)
    c = arch.stem.width
    int8 = h * w * 27 * c
    bops = 0
    for si, stage in enumerate(arch.stages):
        first = True
        for l in stage:
            if first and strides[si] == 2:
                h, w = _down(h, 2), _down(w, 2)
            first = False
            hw = h * w
            bops += hw * c * ((c // l.groups) * l.kernel * l.kernel + l.width)
            c = l.width
    flops = c * num_classes + num_classes
    return flops + int8 / 8 + bops / 64


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


@dataclass
class OpsReport:
    arch: Architecture
    img_size: Tuple[int, int]
    num_classes: int
    layers: List[LayerCost] = field(default_factory=list)

    def _sum(self, kind: str, attr: str) -> int:
        return sum(getattr(l, attr) for l in self.layers if l.kind == kind)

    @property
    def flops(self) -> int:
        return self._sum('fp', 'macs')

    @property
    def int8ops(self) -> int:
        return self._sum('int8', 'macs')

    @property
    def bops(self) -> int:
        return self._sum('binary', 'macs')

    @property
    def ops(self) -> float:
        return self.flops + self.int8ops / 8 + self.bops / 64

    @property
    def binary_params(self) -> int:
        return self._sum('binary', 'weight_params')

    @property
    def int8_params(self) -> int:
        return self._sum('int8', 'weight_params')

    @property
    def fp_params(self) -> int:
        return self._sum('fp', 'weight_params') + sum(l.fp_params for l in self.layers)

    @property
    def total_params(self) -> int:
        return self.binary_params + self.int8_params + self.fp_params

    @property
    def size_bytes(self) -> float:
        """Deployed size: 1 bit per binary weight, 1 byte per 8-bit weight, 4 per float."""
        return self.binary_params / 8 + self.int8_params + 4 * self.fp_params

    def summary(self) -> dict:
        return dict(arch=self.arch.to_text(), img_size=list(self.img_size), num_classes=self.num_classes,
                    flops=self.flops, int8ops=self.int8ops, bops=self.bops, ops=self.ops,
                    binary_params=self.binary_params, int8_params=self.int8_params,
                    fp_params=self.fp_params, size_mb=self.size_bytes / 2 ** 20)


def profile_arch(arch: Architecture, img_size: Size = 224, num_classes: int = 1000,
                 space=None) -> OpsReport:
    """Per-layer costs of ``arch``; the totals equal :func:`count_ops`."""
    h, w = _hw(img_size)
    rep = OpsReport(arch, (h, w), num_classes)
    stem_stride, strides = _strides(space)
    h, w = _down(h, stem_stride), _down(w, stem_stride)
    c = arch.stem.width
    # stem: LSQ step + BN (2) + RPReLU (3) per output channel
    rep.layers.append(LayerCost('stem', 'int8', 3, c, 3, 1, stem_stride, (h, w), h * w * 27 * c, 27 * c, 6 * c))
    for si, stage in enumerate(arch.stages):
        for li, l in enumerate(stage):
            s = strides[si] if li == 0 else 1
            if s == 2:
                h, w = _down(h, 2), _down(w, 2)
            name = f'stage{si + 1}.{li}'
            kw = c * (c // l.groups) * l.kernel * l.kernel
            # RSign threshold (1) + alpha (1) + BN (2) + RPReLU (3) per channel
            rep.layers.append(LayerCost(f'{name}.conv{l.kernel}x{l.kernel}', 'binary', c, c, l.kernel, l.groups,
                                        s, (h, w), h * w * kw, kw, 7 * c))
            rep.layers.append(LayerCost(f'{name}.conv1x1', 'binary', c, l.width, 1, 1, 1, (h, w),
                                        h * w * c * l.width, c * l.width, c + 6 * l.width))
            c = l.width
    rep.layers.append(LayerCost('fc', 'fp', c, num_classes, 1, 1, 1, (1, 1),
                                c * num_classes + num_classes, c * num_classes + num_classes, 0))
    return rep
