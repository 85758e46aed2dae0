"""The one shape walk of an architecture: every weighted layer with its channels, kernel,
groups, stride and spatial sizes.

The OPs counters (classification and detection), the per-layer summaries, the static subnet
builder (and through it the packed layout) all read layer shapes from :func:`layer_shapes`, so
the structure of a NAS-BNN network is written down once:

  * ``stem``: 3 -> C_stem, the space's stem kernel and stride, 8-bit weights;
  * per active layer of stage s, layer j: ``kxk`` (C -> C, kernel k, groups g, the stage's
    stride on its first layer, binary) then ``1x1`` (C -> width, binary);
  * ``fc``: the classifier (full precision), when ``num_classes`` is given.

Spatial sizes use padding k // 2, so a stride-2 layer maps H to ceil(H / 2) for any H (odd
sizes included), like the model. Pure Python.
"""
from __future__ import annotations
from dataclasses import dataclass
from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

from .arch import Architecture
from .errors import ArchitectureError, short_repr

__all__ = ['LayerShape', 'Geometry', 'layer_shapes', 'stage_output_sizes', 'image_size', 'IMG_SIZE_MAX']

Size = Union[int, Sequence[int]]
IMG_SIZE_MAX = 1 << 16

# kinds of layers and how their multiply-accumulates count in OPs
INT8, BINARY, FP = 'int8', 'binary', 'fp'


class LayerShape(NamedTuple):
    """One weighted layer. ``role``: 'stem', 'kxk', '1x1' or 'fc'; ``stage``: -1 for the stem,
    the stage index (0-based) for the separable layers, ``len(stages)`` for the classifier."""
    role: str
    kind: str  # INT8, BINARY or FP
    stage: int
    index: int  # layer index in the stage
    in_channels: int
    out_channels: int
    kernel: int
    groups: int
    stride: int
    in_hw: Tuple[int, int]
    out_hw: Tuple[int, int]

    @property
    def weight_params(self) -> int:
        w = self.out_channels * (self.in_channels // self.groups) * self.kernel * self.kernel
        return w + (self.out_channels if self.role == 'fc' else 0)  # the classifier's bias

    @property
    def macs(self) -> int:
        """Multiply-accumulates (the classifier counts one add per output for its bias)."""
        return self.out_hw[0] * self.out_hw[1] * self.weight_params

    @property
    def name(self) -> str:
        """Human name used in per-layer summaries: 'stem', 'stage<s+1>.<j>.conv<k>x<k>' / '.conv1x1', 'fc'."""
        if self.role in ('stem', 'fc'):
            return self.role
        return f'stage{self.stage + 1}.{self.index}.conv{self.kernel}x{self.kernel}'


def image_size(img_size: Size, field: str = 'img_size') -> Tuple[int, int]:
    """(H, W) from an int or a pair; positive ints only (one-line error otherwise)."""
    hw = (img_size, img_size) if isinstance(img_size, int) and not isinstance(img_size, bool) else img_size
    ok = isinstance(hw, (list, tuple)) and len(hw) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= IMG_SIZE_MAX for v in hw)
    if not ok:
        raise ArchitectureError(f'{field}: {short_repr(img_size)} not allowed (allowed: a positive int or '
                                f'(H, W), each 1..{IMG_SIZE_MAX})')
    return int(hw[0]), int(hw[1])


def _down(x: int, s: int) -> int:
    return -(-x // s)  # ceil


@dataclass(frozen=True)
class Geometry:
    """All that the shape walk needs from a search space: the stem's kernel and stride and the
    stages' strides (Table 1's by default). ``Geometry.flat(n)``: stride 1 everywhere, for
    channel-only uses (e.g. the packed layout)."""
    stem_kernel: int = 3
    stem_stride: int = 2
    strides: Tuple[int, ...] = (1, 2, 2, 2, 2)

    @classmethod
    def flat(cls, num_stages: int, stem_kernel: int = 3) -> 'Geometry':
        return cls(stem_kernel, 1, (1, ) * num_stages)


def _strides(space) -> Tuple[int, int, Tuple[int, ...]]:
    """(stem kernel, stem stride, stage strides) of a SearchSpace or Geometry; Table 1's for None."""
    if space is None:
        space = Geometry()
    if isinstance(space, Geometry):
        return space.stem_kernel, space.stem_stride, tuple(space.strides)
    return space.stem.kernel, space.stem.stride, tuple(s.stride for s in space.stages)


def layer_shapes(arch: Architecture,
                 img_size: Size = 224,
                 space=None,
                 num_classes: Optional[int] = None,
                 in_channels: int = 3) -> List[LayerShape]:
    """Every weighted layer of ``arch`` at input ``img_size`` (int or (H, W)), in forward order.

    Args:
        arch: the architecture (its stage count must match the space's).
        img_size: input size.
        space: the :class:`~nasbnn_mm.space.SearchSpace` (or a :class:`Geometry`) giving the stem
            kernel and the strides (default: Table 1's).
        num_classes: append the classifier (``fc``) when given.
        in_channels: image channels.
    """
    h, w = image_size(img_size)
    stem_k, stem_stride, strides = _strides(space)
    if len(strides) != len(arch.stages):
        raise ArchitectureError(f'architecture: has {len(arch.stages)} stages, the search space has {len(strides)}')
    out: List[LayerShape] = []
    ho, wo = _down(h, stem_stride), _down(w, stem_stride)
    c = arch.stem.width
    out.append(LayerShape('stem', INT8, -1, 0, in_channels, c, stem_k, 1, stem_stride, (h, w), (ho, wo)))
    h, w = ho, wo
    for si, stage in enumerate(arch.stages):
        for li, layer in enumerate(stage):
            s = strides[si] if li == 0 else 1
            ho, wo = _down(h, s), _down(w, s)
            out.append(LayerShape('kxk', BINARY, si, li, c, c, layer.kernel, layer.groups, s, (h, w), (ho, wo)))
            out.append(LayerShape('1x1', BINARY, si, li, c, layer.width, 1, 1, 1, (ho, wo), (ho, wo)))
            h, w, c = ho, wo, layer.width
    if num_classes is not None:
        out.append(LayerShape('fc', FP, len(arch.stages), 0, c, num_classes, 1, 1, 1, (1, 1), (1, 1)))
    return out


def stage_output_sizes(img_size: Size, space=None, num_stages: Optional[int] = None) -> List[Tuple[int, int]]:
    """(H, W) of every stage's output at input ``img_size`` (they depend on the strides only)."""
    h, w = image_size(img_size)
    _, stem_stride, strides = _strides(space)
    h, w = _down(h, stem_stride), _down(w, stem_stride)
    sizes = []
    for s in strides[:num_stages]:
        h, w = _down(h, s), _down(w, s)
        sizes.append((h, w))
    return sizes
