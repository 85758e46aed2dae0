"""Architecture of one subnet and its text / dict / JSON forms.

The text form follows the paper's Table 6: one token ``c<width>_k<kernel>_g<groups>``
per layer, layers separated by spaces (or commas), parts separated by ``|``. The first
part is the stem, then one part per stage::

    c24_k3_g1 | c48_k3_g1 c48_k3_g1 | c96_k3_g2 c96_k3_g2 | ...

A token ``xN`` right after a layer repeats that layer so that it appears N times in
total (``c384_k3_g8 x8``). :func:`Architecture.to_text` always writes the expanded form.

Parsing is strict: every value is a positive integer written as such (no floats, booleans or
digit strings in the dict form), at most :data:`MAX_VALUE`; a stage holds at most
:data:`MAX_LAYERS` layers (a search space validates the exact depths); anything else is a
one-line :class:`ArchitectureError`.
"""
from __future__ import annotations
import json
import re
from dataclasses import dataclass
from typing import Any, Iterator, List, Optional, Sequence, Tuple

from .errors import ArchitectureError, short_repr
from .presets import PRESET_TEXTS, preset_name

__all__ = ['ArchitectureError', 'LayerChoice', 'Architecture', 'get_preset', 'MAX_VALUE', 'MAX_LAYERS']

MAX_VALUE = 1 << 20  # widths, kernels, groups: far above any real network, far below a memory bomb
MAX_LAYERS = 1024  # layers per stage accepted by the parsers (a space then checks its own depths)
_MAX_TEXT = 1 << 16  # characters of an architecture text / JSON document

_LAYER_RE = re.compile(r'^c(\d{1,7})_k(\d{1,7})_g(\d{1,7})$')
_REPEAT_RE = re.compile(r'^[x\*](\d+)$')
_FIELDS = ('width', 'kernel', 'groups')


def _positive_int(value: Any, where: str, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArchitectureError(f'{where}: {field} {short_repr(value)} not allowed (allowed: a positive integer)')
    if not 1 <= value <= MAX_VALUE:
        raise ArchitectureError(f'{where}: {field} {short_repr(value)} not allowed (allowed: 1..{MAX_VALUE})')
    return value


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
            raise ArchitectureError(f'{where}: malformed layer token {short_repr(token)} '
                                    f"(expected 'c<width>_k<kernel>_g<groups>', e.g. 'c768_k5_g4')")
        return cls(*(_positive_int(int(v), where, f) for v, f in zip(m.groups(), _FIELDS)))

    @classmethod
    def from_any(cls, x: Any, where: str = 'layer') -> 'LayerChoice':
        """From a token string or a ``{'width', 'kernel', 'groups'}`` dict of ints."""
        if isinstance(x, str):
            return cls.from_text(x, where)
        if isinstance(x, dict):
            if set(x) != set(_FIELDS):
                raise ArchitectureError(
                    f"{where}: keys {sorted(map(str, x))} not allowed (allowed: exactly 'width', 'kernel', 'groups')")
            return cls(*(_positive_int(x[f], where, f) for f in _FIELDS))
        raise ArchitectureError(
            f"{where}: expected {{'width', 'kernel', 'groups'}} or 'c<w>_k<k>_g<g>', got {short_repr(x)}")


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
        return [self.stem.width] + [layer.width for _, _, layer in self.layers()]

    @property
    def stage_out_channels(self) -> Tuple[int, ...]:
        """Channels each stage outputs (its last active layer's width)."""
        return tuple(s[-1].width for s in self.stages)

    # ------------------------------------------------------------------ text
    def to_text(self) -> str:
        parts = [self.stem.to_text()]
        parts += [' '.join(layer.to_text() for layer in stage) for stage in self.stages]
        return ' | '.join(parts)

    def __str__(self) -> str:
        return self.to_text()

    @classmethod
    def from_text(cls, text: str, max_depths: Optional[Sequence[int]] = None) -> 'Architecture':
        """Parse the text form; ``max_depths`` (per stage) bounds the layers of each stage."""
        if not isinstance(text, str) or not text.strip():
            raise ArchitectureError('architecture text: empty (expected "<stem> | <stage 1 layers> | ...")')
        if len(text) > _MAX_TEXT:
            raise ArchitectureError(f'architecture text: {len(text)} characters not allowed (allowed: <= {_MAX_TEXT})')
        parts = [p.strip() for p in text.strip().split('|')]
        if len(parts) < 2:
            raise ArchitectureError(
                f'architecture text: found {len(parts)} part(s); expected the stem and at least one '
                "stage separated by '|'")
        stem = LayerChoice.from_text(parts[0], 'stem')
        stages = []
        for si, part in enumerate(parts[1:], start=1):
            limit = _stage_limit(max_depths, si)
            tokens = [t for t in re.split(r'[\s,]+', part) if t]
            if not tokens:
                raise ArchitectureError(f'stage {si}: no layers given')
            layers: List[LayerChoice] = []
            for tok in tokens:
                rep = _REPEAT_RE.match(tok)
                if rep:
                    if not layers:
                        raise ArchitectureError(f'stage {si}: repeat {tok!r} must follow a layer token')
                    n = int(rep.group(1)) if len(rep.group(1)) <= 12 else MAX_LAYERS + len(layers) + 1
                    if n < 1:
                        raise ArchitectureError(f'stage {si}: repeat count must be >= 1, got {tok!r}')
                    if len(layers) + n - 1 > limit:
                        raise ArchitectureError(f'stage {si}: repeat {tok!r} gives more than {limit} layers '
                                                f'(allowed: at most {limit})')
                    layers.extend([layers[-1]] * (n - 1))
                else:
                    layers.append(LayerChoice.from_text(tok, f'stage {si} layer {len(layers) + 1}'))
                if len(layers) > limit:
                    raise ArchitectureError(f'stage {si}: more than {limit} layers (allowed: at most {limit})')
            stages.append(tuple(layers))
        return cls(stem, tuple(stages))

    # ------------------------------------------------------------------ dict
    def to_dict(self) -> dict:
        """Plain dict (JSON/YAML safe)."""

        def one(layer: LayerChoice) -> dict:
            return dict(width=layer.width, kernel=layer.kernel, groups=layer.groups)

        return dict(stem=one(self.stem), stages=[[one(layer) for layer in s] for s in self.stages])

    @classmethod
    def from_dict(cls, d: Any, max_depths: Optional[Sequence[int]] = None) -> 'Architecture':
        if not isinstance(d, dict) or set(d) != {'stem', 'stages'}:
            keys = sorted(map(str, d)) if isinstance(d, dict) else type(d).__name__
            raise ArchitectureError(f"architecture dict: {short_repr(keys)} not allowed "
                                    "(allowed: a dict with exactly the keys 'stem' and 'stages')")
        stages = d['stages']
        if not isinstance(stages, (list, tuple)) or not stages:
            raise ArchitectureError("architecture dict: 'stages' must be a non-empty list of lists of layers")
        if len(stages) > MAX_LAYERS:
            raise ArchitectureError(f"architecture dict: {len(stages)} stages not allowed (allowed: <= {MAX_LAYERS})")
        out = []
        for si, s in enumerate(stages, start=1):
            limit = _stage_limit(max_depths, si)
            if not isinstance(s, (list, tuple)) or not s:
                raise ArchitectureError(f'stage {si}: expected a non-empty list of layers, got {short_repr(s)}')
            if len(s) > limit:
                raise ArchitectureError(f'stage {si}: {len(s)} layers not allowed (allowed: at most {limit})')
            out.append(tuple(LayerChoice.from_any(x, f'stage {si} layer {li}') for li, x in enumerate(s, start=1)))
        return cls(LayerChoice.from_any(d['stem'], 'stem'), tuple(out))

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, s: str, max_depths: Optional[Sequence[int]] = None) -> 'Architecture':
        if len(s) > _MAX_TEXT:
            raise ArchitectureError(f'architecture JSON: {len(s)} characters not allowed (allowed: <= {_MAX_TEXT})')
        try:
            data = json.loads(s, parse_constant=_reject_constant)
        except ArchitectureError:
            raise
        except json.JSONDecodeError as e:
            raise ArchitectureError(f'architecture JSON: {e.msg} at char {e.pos}') from None
        except RecursionError:
            raise ArchitectureError('architecture JSON: nested too deeply') from None
        except ValueError as e:  # e.g. an integer of thousands of digits
            raise ArchitectureError(f'architecture JSON: {str(e).splitlines()[0][:120]}') from None
        return cls.from_dict(data, max_depths)

    @classmethod
    def from_preset(cls, name: str) -> 'Architecture':
        """NAS-BNN-A ... F (``A``, ``a``, ``nasbnn-a``, ``NAS-BNN-A``)."""
        return cls.from_text(PRESET_TEXTS[preset_name(name)])

    @classmethod
    def coerce(cls, arch: Any, max_depths: Optional[Sequence[int]] = None) -> 'Architecture':
        """Accept an Architecture, a text form, a JSON text, a dict or a preset name."""
        if isinstance(arch, Architecture):
            return arch
        if isinstance(arch, dict):
            return cls.from_dict(arch, max_depths)
        if isinstance(arch, str):
            s = arch.strip()
            if s.startswith('{'):
                return cls.from_json(s, max_depths)
            if '|' in s or re.search(r'c\d+_k\d+', s):
                return cls.from_text(s, max_depths)
            return cls.from_preset(s)
        raise ArchitectureError(
            f'architecture: expected text, dict, preset name or Architecture, got {type(arch).__name__}')

    def replace_stage(self, si: int, layers: Sequence[LayerChoice]) -> 'Architecture':
        stages = list(self.stages)
        stages[si] = tuple(layers)
        return Architecture(self.stem, tuple(stages))


def _stage_limit(max_depths: Optional[Sequence[int]], si: int) -> int:
    if max_depths is None or si > len(max_depths):
        return MAX_LAYERS
    return max_depths[si - 1]


def _reject_constant(name: str):
    raise ArchitectureError(f'architecture JSON: {name} not allowed (allowed: positive integers)')


def get_preset(name: str) -> Architecture:
    """The architecture of a preset name (NAS-BNN-A ... F)."""
    return Architecture.from_preset(name)
