"""The NAS-BNN search space (paper Table 1) as data, with validation, counting and sampling.

A space is a stem (choice of width; 3x3 conv, stride 2) followed by stages. Every layer of a
stage picks its own width, kernel and groups; a stage picks its depth and, when it uses
fewer than its maximum number of layers, its last layers are dropped.

Constraints of a valid architecture:
  * every choice is one of the stage's allowed values;
  * Non-Decreasing (ND): every active layer's width >= the previous active layer's width,
    the stem counting as the first;
  * the groups of a layer's k x k conv divide that conv's channels (its input channels,
    i.e. the previous active layer's width).
"""
from __future__ import annotations
import random
from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from .arch import Architecture, LayerChoice
from .errors import ArchitectureError, short_repr

__all__ = ['StemSpace', 'StageSpace', 'SearchSpace', 'TABLE1_SPACE']

# Paper Table 1. The same dict is written out in configs/_base_/search_spaces/table1.py
# (tests keep the two equal); every tool takes the space from its config.
TABLE1_SPACE = dict(
    stem=dict(widths=[24, 32, 48], kernel=3, stride=2),
    stages=[
        dict(depths=[2, 3], widths=[48, 64, 96], kernels=[3], groups=[1], stride=1),
        dict(depths=[2, 3], widths=[96, 128, 192], kernels=[3, 5], groups=[1, 2], stride=2),
        dict(depths=[2, 3], widths=[192, 256, 384], kernels=[3, 5], groups=[2, 4], stride=2),
        dict(depths=[8, 9], widths=[384, 512, 768], kernels=[3, 5], groups=[4, 8], stride=2),
        dict(depths=[2, 3], widths=[768, 1024, 1536], kernels=[3, 5], groups=[8, 16], stride=2),
    ])

_MAX = 1 << 16  # widths, kernels, groups, depths of a space: far above any real network


def _sorted_unique_ints(values, field: str) -> Tuple[int, ...]:
    if isinstance(values, int) and not isinstance(values, bool):
        values = [values]
    if not isinstance(values, (list, tuple)) or not values or len(values) > 64:
        raise ArchitectureError(f'search space: {field} {short_repr(values)} not allowed '
                                '(allowed: a non-empty list of up to 64 positive ints)')
    out = []
    for v in values:
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= _MAX:
            raise ArchitectureError(f'search space: {field} {short_repr(v)} not allowed (allowed: ints 1..{_MAX})')
        out.append(v)
    return tuple(sorted(set(out)))


def _one_int(value, field: str, allowed: Tuple[int, ...]) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value not in allowed:
        raise ArchitectureError(f'search space: {field} {short_repr(value)} not allowed '
                                f'(allowed: {", ".join(map(str, allowed))})')
    return value


def _fmt(values: Iterable[int]) -> str:
    return ', '.join(str(v) for v in values)


@dataclass(frozen=True)
class StemSpace:
    widths: Tuple[int, ...]
    kernel: int = 3
    stride: int = 2


@dataclass(frozen=True)
class StageSpace:
    depths: Tuple[int, ...]
    widths: Tuple[int, ...]
    kernels: Tuple[int, ...]
    groups: Tuple[int, ...]
    stride: int

    @property
    def max_depth(self) -> int:
        return self.depths[-1]


class SearchSpace:
    """Search space built from a config dict (``TABLE1_SPACE`` by default)."""

    def __init__(self, stem: Mapping, stages: Sequence[Mapping], type: Optional[str] = None, nd: bool = True):
        if not isinstance(nd, bool):
            raise ArchitectureError(f'search space: nd {short_repr(nd)} not allowed (allowed: True, False)')
        # the Non-Decreasing constraint (paper); nd=False is the ablation without it
        self.nd = nd
        if not isinstance(stem, Mapping):
            raise ArchitectureError("search space: 'stem' must be a dict with 'widths'")
        unknown = set(stem) - {'widths', 'kernel', 'stride'}
        if unknown:
            raise ArchitectureError(f'search space: unknown stem field(s) {sorted(map(str, unknown))} '
                                    "(allowed: widths, kernel, stride)")
        self.stem = StemSpace(
            _sorted_unique_ints(stem.get('widths'), 'stem.widths'),
            _one_int(stem.get('kernel', 3), 'stem.kernel', (1, 3, 5, 7)),
            _one_int(stem.get('stride', 2), 'stem.stride', (1, 2)))
        if not isinstance(stages, (list, tuple)) or not stages or len(stages) > 64:
            raise ArchitectureError("search space: 'stages' must be a non-empty list (at most 64 stages)")
        self.stages: Tuple[StageSpace, ...] = ()
        parsed = []
        for i, s in enumerate(stages, start=1):
            if not isinstance(s, Mapping):
                raise ArchitectureError(f'search space: stage {i} {short_repr(s)} not allowed (allowed: a dict '
                                        'with depths, widths, kernels, groups, stride)')
            unknown = set(s) - {'depths', 'widths', 'kernels', 'groups', 'stride'}
            if unknown:
                raise ArchitectureError(f'search space: unknown field(s) {sorted(map(str, unknown))} in stage {i} '
                                        '(allowed: depths, widths, kernels, groups, stride)')
            kernels = _sorted_unique_ints(s.get('kernels'), f'stage {i} kernels')
            if any(k % 2 == 0 for k in kernels):
                raise ArchitectureError(f'search space: stage {i} kernels must be odd, got {_fmt(kernels)}')
            stride = s.get('stride', 1)
            if isinstance(stride, bool) or stride not in (1, 2):
                raise ArchitectureError(f'search space: stage {i} stride must be 1 or 2, got {short_repr(stride)}')
            parsed.append(
                StageSpace(
                    _sorted_unique_ints(s.get('depths'), f'stage {i} depths'),
                    _sorted_unique_ints(s.get('widths'), f'stage {i} widths'), kernels,
                    _sorted_unique_ints(s.get('groups'), f'stage {i} groups'), int(stride)))
        self.stages = tuple(parsed)
        if self.cardinality(nd=True) == 0:
            raise ArchitectureError('search space: no architecture satisfies the ND and groups constraints')

    # ------------------------------------------------------------ construction
    @classmethod
    def table1(cls) -> 'SearchSpace':
        return cls(**TABLE1_SPACE)

    @classmethod
    def build(cls, cfg=None) -> 'SearchSpace':
        """From ``None`` (Table 1), a SearchSpace, a dict, or a config file / Config with
        a ``search_space`` field. Every problem is a one-line :class:`ArchitectureError`
        (a missing file: :class:`FileNotFoundError`)."""
        if cfg is None:
            return cls.table1()
        if isinstance(cfg, SearchSpace):
            return cfg
        where = 'search space'
        if isinstance(cfg, str):
            import os
            if not os.path.isfile(cfg):
                raise FileNotFoundError(f'search space: no such config file {cfg!r}')
            from mmengine.config import Config
            where = cfg
            try:
                cfg = Config.fromfile(cfg)
            except Exception as e:  # a syntax error in the user's file, ...
                raise ArchitectureError(f'search space: cannot read {cfg}: {type(e).__name__}: '
                                        f'{str(e).splitlines()[0] if str(e) else ""}') from None
            if 'search_space' not in cfg:
                raise ArchitectureError(f"search space: {where} has no 'search_space' field")
        if not hasattr(cfg, 'keys'):
            raise ArchitectureError(f'search space: {type(cfg).__name__} not allowed (allowed: a dict with stem and '
                                    'stages, a SearchSpace, or a config file with search_space)')
        if 'search_space' in cfg and 'stages' not in cfg:
            cfg = cfg['search_space']
            if not hasattr(cfg, 'keys'):
                raise ArchitectureError(f'search space: search_space in {where} is a {type(cfg).__name__}, '
                                        'not a dict with stem and stages')
        cfg = dict(cfg)
        cfg.pop('type', None)
        unknown = set(cfg) - {'stem', 'stages', 'nd'}
        if unknown or 'stem' not in cfg or 'stages' not in cfg:
            raise ArchitectureError(f'search space: fields {sorted(map(str, cfg))} not allowed in {where} '
                                    '(allowed: stem and stages, optionally nd)')
        return cls(cfg['stem'], cfg['stages'], nd=cfg.get('nd', True))

    def to_dict(self) -> dict:
        """The config form (``nd`` only when it is switched off)."""
        d = dict(
            stem=dict(widths=list(self.stem.widths), kernel=self.stem.kernel, stride=self.stem.stride),
            stages=[
                dict(
                    depths=list(s.depths),
                    widths=list(s.widths),
                    kernels=list(s.kernels),
                    groups=list(s.groups),
                    stride=s.stride) for s in self.stages
            ])
        if not self.nd:
            d['nd'] = False
        return d

    def __eq__(self, other) -> bool:
        return isinstance(other, SearchSpace) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(repr(self.to_dict()))

    def __repr__(self) -> str:
        return f'SearchSpace({self.to_dict()})'

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    # ------------------------------------------------------------ shapes for the supernet
    def max_in_channels(self, si: int, li: int) -> int:
        """Largest input channel count layer ``li`` of stage ``si`` can see."""
        if li > 0:
            return self.stages[si].widths[-1]
        prev = [self.stem.widths] + [s.widths for s in self.stages[:si]]
        return max(max(w) for w in prev)

    def min_in_channels(self, si: int, li: int) -> int:
        if li > 0:
            return self.stages[si].widths[0]
        return self.stages[si - 1].widths[0] if si > 0 else self.stem.widths[0]

    # ------------------------------------------------------------ validation
    @property
    def max_depths(self) -> Tuple[int, ...]:
        return tuple(s.max_depth for s in self.stages)

    def validate(self, arch) -> Architecture:
        """Return ``arch`` (Architecture, text, JSON, dict or preset name) as an Architecture
        of this space, or raise a one-line ArchitectureError."""
        arch = Architecture.coerce(arch, self.max_depths)
        if arch.stem.width not in self.stem.widths:
            raise ArchitectureError(f'stem: width {arch.stem.width} not allowed (allowed: {_fmt(self.stem.widths)})')
        if arch.stem.kernel != self.stem.kernel or arch.stem.groups != 1:
            raise ArchitectureError(f'stem: must be k{self.stem.kernel}_g1, got {arch.stem.to_text()}')
        if len(arch.stages) != self.num_stages:
            raise ArchitectureError(
                f'architecture: has {len(arch.stages)} stages, the search space has {self.num_stages}')
        prev = arch.stem.width
        prev_name = 'stem'
        for si, (stage, space) in enumerate(zip(arch.stages, self.stages)):
            if len(stage) not in space.depths:
                raise ArchitectureError(
                    f'stage {si + 1}: depth {len(stage)} not allowed (allowed: {_fmt(space.depths)})')
            for li, layer in enumerate(stage):
                where = f'stage {si + 1} layer {li + 1}'
                if layer.width not in space.widths:
                    raise ArchitectureError(f'{where}: width {layer.width} not allowed (allowed: {_fmt(space.widths)})')
                if layer.kernel not in space.kernels:
                    raise ArchitectureError(
                        f'{where}: kernel {layer.kernel} not allowed (allowed: {_fmt(space.kernels)})')
                if layer.groups not in space.groups:
                    raise ArchitectureError(
                        f'{where}: groups {layer.groups} not allowed (allowed: {_fmt(space.groups)})')
                if prev % layer.groups:
                    raise ArchitectureError(f'{where}: groups {layer.groups} do not divide its {prev} input channels')
                if self.nd and layer.width < prev:
                    raise ArchitectureError(f'{where}: width {layer.width} < {prev} of {prev_name} '
                                            '(Non-Decreasing constraint: widths may not shrink)')
                prev, prev_name = layer.width, where
        return arch

    def resolve(self, arch) -> Architecture:
        """:meth:`validate`, also accepting the names 'largest' and 'smallest' of this space."""
        if isinstance(arch, str) and arch.strip().lower() in ('largest', 'smallest'):
            return getattr(self, arch.strip().lower())()
        return self.validate(arch)

    def is_valid(self, arch) -> bool:
        try:
            self.validate(arch)
            return True
        except ArchitectureError:
            return False

    # ------------------------------------------------------------ extreme subnets
    def largest(self) -> Architecture:
        """Max depth, widths and kernels, fewest groups."""
        return self.validate(
            Architecture(
                LayerChoice(self.stem.widths[-1], self.stem.kernel, 1),
                tuple(
                    tuple(LayerChoice(s.widths[-1], s.kernels[-1], s.groups[0]) for _ in range(s.depths[-1]))
                    for s in self.stages)))

    def smallest(self) -> Architecture:
        """Min depth, widths and kernels, most groups (that divide the channels)."""
        prev = self.stem.widths[0]
        stages = []
        for s in self.stages:
            layers = []
            for _ in range(s.depths[0]):
                g = max(g for g in s.groups if prev % g == 0) if any(prev % g == 0 for g in s.groups) else None
                if g is None:
                    raise ArchitectureError('search space: smallest subnet has no valid groups')
                layers.append(LayerChoice(s.widths[0], s.kernels[0], g))
                prev = s.widths[0]
            stages.append(tuple(layers))
        return self.validate(Architecture(LayerChoice(self.stem.widths[0], self.stem.kernel, 1), tuple(stages)))

    # ------------------------------------------------------------ cardinality
    def _layer_options(self, si: int, c_prev: int, nd: bool) -> Dict[int, int]:
        """Map next width -> number of (width, kernel, groups) choices leading to it."""
        s = self.stages[si]
        n_groups = sum(1 for g in s.groups if c_prev % g == 0)
        if n_groups == 0:
            return {}
        return {w: len(s.kernels) * n_groups for w in s.widths if (not nd or w >= c_prev)}

    def cardinality(self, nd: Optional[bool] = None) -> int:
        """Exact number of valid architectures (Python int), with or without the ND constraint.

        Dynamic programming over the previous layer's width, which is all that the
        constraints of the next layer depend on.
        """
        nd = self.nd if nd is None else nd
        dist: Dict[int, int] = {w: 1 for w in self.stem.widths}
        for si, s in enumerate(self.stages):
            after_stage: Dict[int, int] = {}
            cur = dist
            for depth in range(1, s.max_depth + 1):
                nxt: Dict[int, int] = {}
                for c_prev, n in cur.items():
                    for w, m in self._layer_options(si, c_prev, nd).items():
                        nxt[w] = nxt.get(w, 0) + n * m
                cur = nxt
                if depth in s.depths:
                    for w, n in cur.items():
                        after_stage[w] = after_stage.get(w, 0) + n
            dist = after_stage
        return sum(dist.values())

    # ------------------------------------------------------------ sampling
    def with_nd(self, nd: bool) -> 'SearchSpace':
        """This space with the Non-Decreasing constraint on or off."""
        d = self.to_dict()
        d.pop('nd', None)
        return SearchSpace(d['stem'], d['stages'], nd=nd)

    def sample(self, rng: Optional[random.Random] = None) -> Architecture:
        """Draw a random architecture (under ND unless the space switches it off).

        Procedure (documented in README): the stem width is drawn uniformly; then, stage by
        stage, the depth is drawn uniformly from the stage's depths and, layer by layer,
        the width uniformly from the stage's widths that are >= the previous active width,
        the kernel uniformly, and the groups uniformly among the stage's groups that divide
        the layer's input channels. A draw that dead-ends (possible only in spaces whose
        stages do not overlap in width) is restarted.
        """
        rng = rng or random.Random()
        for _ in range(1000):
            arch = self._sample_once(rng)
            if arch is not None:
                return arch
        raise ArchitectureError('search space: could not draw a valid architecture in 1000 tries')

    def _sample_once(self, rng: random.Random) -> Optional[Architecture]:
        prev = rng.choice(self.stem.widths)
        stem = LayerChoice(prev, self.stem.kernel, 1)
        stages = []
        for s in self.stages:
            layers = []
            for _ in range(rng.choice(s.depths)):
                widths = [w for w in s.widths if w >= prev or not self.nd]
                groups = [g for g in s.groups if prev % g == 0]
                if not widths or not groups:
                    return None
                w = rng.choice(widths)
                layers.append(LayerChoice(w, rng.choice(s.kernels), rng.choice(groups)))
                prev = w
            stages.append(tuple(layers))
        return Architecture(stem, tuple(stages))

    def sample_many(self, n: int, seed: int = 0) -> List[Architecture]:
        rng = random.Random(seed)
        return [self.sample(rng) for _ in range(n)]
