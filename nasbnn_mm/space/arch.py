"""Architecture of one subnet and its text / dict forms.

The text form follows the paper's Table 6: one token ``c<width>_k<kernel>_g<groups>``
per layer, layers separated by spaces (or commas), parts separated by ``|``. The first
part is the stem, then one part per stage::

    c24_k3_g1 | c48_k3_g1 c48_k3_g1 | c96_k3_g2 c96_k3_g2 | ...

A token ``xN`` right after a layer repeats that layer so that it appears N times in
total (``c384_k3_g8 x8``). :func:`Architecture.to_text` always writes the expanded form.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Iterator, List, Sequence, Tuple

__all__ = ['ArchitectureError', 'LayerChoice', 'Architecture']


class ArchitectureError(ValueError):
    """A malformed or out-of-space architecture. The message is one line."""


_LAYER_RE = re.compile(r'^c(\d+)_k(\d+)_g(\d+)$')
_REPEAT_RE = re.compile(r'^[x\*](\d+)$')


@dataclass(frozen=True, order=True)
class LayerChoice:
    """Choices of one separable layer (or of the stem, which always has k3 g1)."""
    width: int
    kernel: int
    groups: int

    def to_text(self) -> str:
        return f'c{self.width}_k{self.kernel}_g{self.groups}'

    @classmethod
    def from_text(cls, token: str, where: str = 'layer') -> 'LayerChoice':
        m = _LAYER_RE.match(token.strip())
        if m is None:
            raise ArchitectureError(
                f'{where}: malformed layer token {token!r} '
                f"(expected 'c<width>_k<kernel>_g<groups>', e.g. 'c768_k5_g4')")
        return cls(int(m.group(1)), int(m.group(2)), int(m.group(3)))


@dataclass(frozen=True)
class Architecture:
    """A subnet: the stem width and, per stage, the list of its active layers.

    Immutable and hashable, so it can key caches (the search loop evaluates each
    architecture once). Validity against a search space is checked by
    :meth:`nasbnn_mm.space.SearchSpace.validate`, not here.
    """
    stem: LayerChoice
    stages: Tuple[Tuple[LayerChoice, ...], ...]

    # ------------------------------------------------------------------ access
    @property
    def depths(self) -> Tuple[int, ...]:
        return tuple(len(s) for s in self.stages)

    def layers(self) -> Iterator[Tuple[int, int, LayerChoice]]:
        """Yield ``(stage_index, layer_index, choice)`` over active layers in order."""
        for si, stage in enumerate(self.stages):
            for li, layer in enumerate(stage):
                yield si, li, layer

    @property
    def widths(self) -> List[int]:
        """Stem width then every active layer's width, in order."""
        return [self.stem.width] + [l.width for _, _, l in self.layers()]

    @property
    def stage_out_channels(self) -> Tuple[int, ...]:
        """Channels each stage outputs (its last active layer's width)."""
        return tuple(s[-1].width for s in self.stages)

    # ------------------------------------------------------------------ text
    def to_text(self) -> str:
        parts = [self.stem.to_text()]
        parts += [' '.join(l.to_text() for l in stage) for stage in self.stages]
        return ' | '.join(parts)

    def __str__(self) -> str:
        return self.to_text()

    @classmethod
    def from_text(cls, text: str) -> 'Architecture':
        if not isinstance(text, str) or not text.strip():
            raise ArchitectureError('architecture text: empty (expected "<stem> | <stage 1 layers> | ...")')
        parts = [p.strip() for p in text.strip().split('|')]
        if len(parts) < 2:
            raise ArchitectureError(
                f'architecture text: found {len(parts)} part(s); expected the stem and at least one '
                "stage separated by '|'")
        stem = LayerChoice.from_text(parts[0], 'stem')
        stages = []
        for si, part in enumerate(parts[1:], start=1):
            tokens = [t for t in re.split(r'[\s,]+', part) if t]
            if not tokens:
                raise ArchitectureError(f'stage {si}: no layers given')
            layers: List[LayerChoice] = []
            for tok in tokens:
                rep = _REPEAT_RE.match(tok)
                if rep:
                    if not layers:
                        raise ArchitectureError(f"stage {si}: repeat {tok!r} must follow a layer token")
                    n = int(rep.group(1))
                    if n < 1:
                        raise ArchitectureError(f'stage {si}: repeat count must be >= 1, got {tok!r}')
                    layers.extend([layers[-1]] * (n - 1))
                else:
                    layers.append(LayerChoice.from_text(tok, f'stage {si} layer {len(layers) + 1}'))
            stages.append(tuple(layers))
        return cls(stem, tuple(stages))

    # ------------------------------------------------------------------ dict
    def to_dict(self) -> dict:
        """Plain dict (JSON/YAML safe)."""
        def one(l: LayerChoice) -> dict:
            return dict(width=l.width, kernel=l.kernel, groups=l.groups)
        return dict(stem=one(self.stem), stages=[[one(l) for l in s] for s in self.stages])

    @classmethod
    def from_dict(cls, d: Any) -> 'Architecture':
        if not isinstance(d, dict) or 'stem' not in d or 'stages' not in d:
            raise ArchitectureError("architecture dict: needs keys 'stem' and 'stages'")

        def one(x: Any, where: str) -> LayerChoice:
            if isinstance(x, str):
                return LayerChoice.from_text(x, where)
            if isinstance(x, dict):
                try:
                    return LayerChoice(int(x['width']), int(x['kernel']), int(x['groups']))
                except (KeyError, TypeError, ValueError):
                    pass
            raise ArchitectureError(
                f"{where}: expected {{'width', 'kernel', 'groups'}} or 'c<w>_k<k>_g<g>', got {x!r}")

        stages = d['stages']
        if not isinstance(stages, (list, tuple)):
            raise ArchitectureError("architecture dict: 'stages' must be a list of lists of layers")
        out = []
        for si, s in enumerate(stages, start=1):
            if not isinstance(s, (list, tuple)) or not s:
                raise ArchitectureError(f'stage {si}: expected a non-empty list of layers')
            out.append(tuple(one(x, f'stage {si} layer {li}') for li, x in enumerate(s, start=1)))
        return cls(one(d['stem'], 'stem'), tuple(out))

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, s: str) -> 'Architecture':
        try:
            return cls.from_dict(json.loads(s))
        except json.JSONDecodeError as e:
            raise ArchitectureError(f'architecture JSON: {e.msg} at char {e.pos}') from None

    @classmethod
    def coerce(cls, arch: Any) -> 'Architecture':
        """Accept an Architecture, a text form, a dict or a preset name."""
        if isinstance(arch, Architecture):
            return arch
        if isinstance(arch, dict):
            return cls.from_dict(arch)
        if isinstance(arch, str):
            s = arch.strip()
            if s.startswith('{'):
                return cls.from_json(s)
            if '|' in s or re.search(r'c\d+_k\d+', s):
                return cls.from_text(s)
            from .presets import get_preset  # names like 'A' or 'nasbnn-a'
            return get_preset(s)
        raise ArchitectureError(
            f'architecture: expected text, dict, preset name or Architecture, got {type(arch).__name__}')

    def replace_stage(self, si: int, layers: Sequence[LayerChoice]) -> 'Architecture':
        stages = list(self.stages)
        stages[si] = tuple(layers)
        return Architecture(self.stem, tuple(stages))
