"""Mutation and crossover of architectures for the evolutionary search.

Both operators only ever return valid architectures of the space: every changed value is
drawn among those that keep the choices allowed, the ND constraint and the groups
constraint *locally* (against the neighbouring active layers), which is enough for the
whole architecture to stay valid. (The authors' release mutates each value
independently and can produce ND-violating children.)
"""
from __future__ import annotations
import random
from typing import List, Optional, Tuple

from .arch import Architecture, LayerChoice
from .search_space import SearchSpace

__all__ = ['mutate', 'crossover']

_Flat = List[Tuple[int, LayerChoice]]  # (stage index, choice) for every active layer


def _flatten(arch: Architecture) -> _Flat:
    return [(si, l) for si, _, l in arch.layers()]


def _unflatten(space: SearchSpace, stem: LayerChoice, flat: _Flat) -> Architecture:
    stages = [[] for _ in space.stages]
    for si, l in flat:
        stages[si].append(l)
    return Architecture(stem, tuple(tuple(s) for s in stages))


def _neighbour_widths(stem: LayerChoice, flat: _Flat, i: int) -> Tuple[int, Optional[int]]:
    lo = flat[i - 1][1].width if i > 0 else stem.width
    hi = flat[i + 1][1].width if i + 1 < len(flat) else None
    return lo, hi


def _width_ok(space: SearchSpace, flat: _Flat, i: int, w: int, lo: int, hi: Optional[int]) -> bool:
    if space.nd and (w < lo or (hi is not None and w > hi)):
        return False
    # the next layer's groups split this layer's output channels
    return i + 1 >= len(flat) or w % flat[i + 1][1].groups == 0


def mutate(space: SearchSpace,
           arch: Architecture,
           prob: float = 0.2,
           rng: Optional[random.Random] = None) -> Architecture:
    """Return a mutant of ``arch``; each decision is re-drawn with probability ``prob``.

    Decisions: each stage's depth, the stem width, and each layer's width, kernel and groups.
    A re-drawn value is uniform over the values that keep the architecture valid (it may
    equal the old value). A deeper stage appends layers drawn like :meth:`SearchSpace.sample`
    between its last width and the next stage's first width.
    """
    rng = rng or random.Random()
    arch = space.validate(arch)
    flat = _flatten(arch)
    for si in range(space.num_stages):
        flat = _mutate_depth(space, flat, si, prob, rng)
    stem = _mutate_stem(space, arch.stem, flat, prob, rng)
    for i in range(len(flat)):
        flat[i] = (flat[i][0], _mutate_layer(space, stem, flat, i, prob, rng))
    return space.validate(_unflatten(space, stem, flat))


def _mutate_depth(space: SearchSpace, flat: _Flat, si: int, prob: float, rng: random.Random) -> _Flat:
    """Stage ``si``'s depth re-drawn with probability ``prob``: its last layers dropped (the next
    layer's groups repaired) or new layers appended between its last width and the next stage's."""
    s = space.stages[si]
    if len(s.depths) < 2 or rng.random() >= prob:
        return flat
    idx = [i for i, (sj, _) in enumerate(flat) if sj == si]
    new_depth, cur = rng.choice(s.depths), len(idx)
    if new_depth < cur:
        kept = flat[:idx[new_depth]] + flat[idx[-1] + 1:]
        nxt = idx[new_depth]  # the layer that now follows the shortened stage
        if nxt < len(kept):
            new_in = kept[nxt - 1][1].width
            nsi, nl = kept[nxt]
            if new_in % nl.groups:
                groups = [g for g in space.stages[nsi].groups if new_in % g == 0]
                if not groups:
                    return flat  # dropping would break the groups constraint: keep the depth
                kept[nxt] = (nsi, LayerChoice(nl.width, nl.kernel, rng.choice(groups)))
        return kept
    pos = idx[-1] + 1
    for _ in range(new_depth - cur):
        lo = flat[pos - 1][1].width
        hi = flat[pos][1].width if pos < len(flat) else None
        nxt_g = flat[pos][1].groups if pos < len(flat) else 1
        in_order = (lambda w: w >= lo and (hi is None or w <= hi)) if space.nd else (lambda w: True)
        widths = [w for w in s.widths if in_order(w) and w % nxt_g == 0]
        groups = [g for g in s.groups if lo % g == 0]
        if not widths or not groups:
            break  # cannot grow here without breaking a constraint
        flat.insert(pos, (si, LayerChoice(rng.choice(widths), rng.choice(s.kernels), rng.choice(groups))))
        pos += 1
    return flat


def _mutate_stem(space: SearchSpace, stem: LayerChoice, flat: _Flat, prob: float, rng: random.Random) -> LayerChoice:
    if len(space.stem.widths) > 1 and rng.random() < prob:
        first = flat[0][1]
        widths = [w for w in space.stem.widths if (w <= first.width or not space.nd) and w % first.groups == 0]
        stem = LayerChoice(rng.choice(widths), stem.kernel, 1)
    return stem


def _mutate_layer(space: SearchSpace, stem: LayerChoice, flat: _Flat, i: int, prob: float,
                  rng: random.Random) -> LayerChoice:
    """Layer ``i``'s width, kernel and groups, each re-drawn with probability ``prob`` among the
    values that keep it valid against its neighbours."""
    si, layer = flat[i]
    s = space.stages[si]
    if len(s.widths) > 1 and rng.random() < prob:
        lo, hi = _neighbour_widths(stem, flat, i)
        widths = [w for w in s.widths if _width_ok(space, flat, i, w, lo, hi)]
        layer = LayerChoice(rng.choice(widths), layer.kernel, layer.groups)
    if len(s.kernels) > 1 and rng.random() < prob:
        layer = LayerChoice(layer.width, rng.choice(s.kernels), layer.groups)
    if len(s.groups) > 1 and rng.random() < prob:
        lo, _ = _neighbour_widths(stem, flat, i)
        layer = LayerChoice(layer.width, layer.kernel, rng.choice([g for g in s.groups if lo % g == 0]))
    return layer


def crossover(space: SearchSpace,
              a: Architecture,
              b: Architecture,
              rng: Optional[random.Random] = None,
              max_tries: int = 20) -> Architecture:
    """Uniform crossover of two parents, repaired to stay valid.

    The stem and each stage's depth come from either parent with probability 1/2; layer j of
    a stage comes from either parent that has it. Where the child breaks ND, the width is
    raised to the smallest allowed width that restores it, and groups that no longer divide
    the input channels are replaced by the closest allowed groups that do. If no repair
    exists (only in spaces whose stages do not overlap in width) the draw is repeated; after
    ``max_tries`` the fitter-looking choice, parent ``a``, is returned.
    """
    rng = rng or random.Random()
    a, b = space.validate(a), space.validate(b)
    for _ in range(max_tries):
        child = _cross_once(space, a, b, rng)
        if child is not None:
            return child
    return a


def _cross_once(space: SearchSpace, a: Architecture, b: Architecture, rng: random.Random):
    stem = a.stem if rng.random() < 0.5 else b.stem
    prev = stem.width
    stages = []
    for si, s in enumerate(space.stages):
        sa, sb = a.stages[si], b.stages[si]
        depth = len(sa) if rng.random() < 0.5 else len(sb)
        layers = []
        for j in range(depth):
            opts = [x[j] for x in (sa, sb) if j < len(x)]
            l = rng.choice(opts)
            w = l.width
            if space.nd and w < prev:
                ws = [x for x in s.widths if x >= prev]
                if not ws:
                    return None
                w = ws[0]
            g = l.groups
            if prev % g:
                gs = [x for x in s.groups if prev % x == 0]
                if not gs:
                    return None
                g = min(gs, key=lambda x: (abs(x - l.groups), x))
            layers.append(LayerChoice(w, l.kernel, g))
            prev = w
        stages.append(tuple(layers))
    child = Architecture(stem, tuple(stages))
    return child if space.is_valid(child) else None
