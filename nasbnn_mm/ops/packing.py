"""What a module stores in the packed (deployable) form of a subnet.

Every module of a deployed NAS-BNN subnet describes its own stored tensors with
:class:`Field` entries (``packed_fields``), gives their values (``packed_values``) and turns
stored values back into its state dict (``unpacked_state``). The packed file is these fields
in module order (``nasbnn_mm.models.packed``), so a layer's tensor names exist only as its
modules' attribute names.
"""
from __future__ import annotations
from typing import Dict, List, NamedTuple, Sequence, Tuple

import torch

__all__ = ['Field', 'BITS', 'INT8', 'FP32', 'Fp32Fields', 'PackedFormatError']


class PackedFormatError(ValueError):
    """Bad input to packing / unpacking, or a model the packed form cannot hold exactly (one-line
    message naming the field). ``within(name)`` prefixes the module path where it happened."""

    def __init__(self, reason: str, where: Tuple[str, ...] = ()):
        self.reason, self.where = reason, tuple(where)
        super().__init__(f"{'.'.join(self.where)}: {reason}" if self.where else reason)

    def within(self, name: str) -> 'PackedFormatError':
        return PackedFormatError(self.reason, (name, ) + self.where)


BITS, INT8, FP32 = 'bits', 'int8', 'fp32'


class Field(NamedTuple):
    """One stored tensor: ``kind`` ('bits': ±1 as sign bits, 'int8', 'fp32'), the module
    attribute it fills, its shape and (binary convs) its groups."""
    kind: str
    attr: str
    shape: Tuple[int, ...]
    groups: int = 1

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


class Fp32Fields:
    """Mixin for modules whose deployed form is a few per-channel float32 vectors, named in
    ``_packed_attrs`` (the module's own parameters)."""

    _packed_attrs: Tuple[str, ...] = ()

    def packed_fields(self) -> List[Field]:
        return [Field(FP32, a, tuple(getattr(self, a).shape)) for a in self._packed_attrs]

    def packed_values(self) -> List[torch.Tensor]:
        return [getattr(self, a).detach().float().reshape(-1) for a in self._packed_attrs]

    def unpacked_state(self, values: Sequence[torch.Tensor]) -> Dict[str, torch.Tensor]:
        return {a: v.reshape(getattr(self, a).shape) for a, v in zip(self._packed_attrs, values)}
