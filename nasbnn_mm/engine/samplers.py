"""Samplers."""
from __future__ import annotations
from typing import Iterator, Optional

import torch
from torch.utils.data import Sampler

from ..registry import DATA_SAMPLERS

__all__ = ['UnshardedSampler']


@DATA_SAMPLERS.register_module()
class UnshardedSampler(Sampler):
    """Every rank iterates over the same (seeded) order of the whole dataset.

    Used for BN recalibration in distributed evaluation: each rank recalibrates on the same
    images, so the statistics (hence the accuracy) do not depend on the number of processes.
    """

    def __init__(self, dataset, shuffle: bool = True, seed: Optional[int] = 0):
        self.dataset, self.shuffle, self.seed = dataset, shuffle, 0 if seed is None else seed

    def __iter__(self) -> Iterator[int]:
        n = len(self.dataset)
        if not self.shuffle:
            return iter(range(n))
        g = torch.Generator().manual_seed(self.seed)
        return iter(torch.randperm(n, generator=g).tolist())

    def __len__(self) -> int:
        return len(self.dataset)
