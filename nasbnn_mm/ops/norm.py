"""Batch norm whose statistics and affine parameters are shared across widths."""
from __future__ import annotations
from typing import Dict, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .packing import Fp32Fields

__all__ = ['SlicedBatchNorm2d']


class SlicedBatchNorm2d(Fp32Fields, nn.BatchNorm2d):
    """BatchNorm2d over the first C channels of a max-width BN (slices are views, so the
    running statistics of those channels are updated in place).

    Forms: dynamic (the supernet's, any C up to ``num_features``), static (``to_static(C)``: exactly
    C channels) and deployed (``to_deployed()``: folded into ``y = x * weight + bias``, i.e. running
    mean 0, variance 1, eps 0, with the scale and shift PyTorch's inference BN computes)."""

    _packed_attrs = ('weight', 'bias')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == self.num_features:
            return super().forward(x)
        return self._sliced_forward(x)

    def _sliced_forward(self, x: torch.Tensor) -> torch.Tensor:
        """BN over the first C channels (the same F.batch_norm call as the authors' release)."""
        c = x.shape[1]
        self._check_input_dim(x)
        if self.momentum is None:
            factor = 0.0
        else:
            factor = self.momentum
        use_batch = self.training or self.running_mean is None
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        full = c == self.num_features
        weight = bias = None
        if self.affine:
            weight = self.weight if full else self.weight[:c]
            bias = self.bias if full else self.bias[:c]
        keep_stats = not self.training or self.track_running_stats
        return F.batch_norm(x, (self.running_mean if full else self.running_mean[:c]) if keep_stats else None,
                            (self.running_var if full else self.running_var[:c]) if keep_stats else None, weight, bias,
                            use_batch, factor, self.eps)

    @torch.no_grad()
    def to_static(self, channels: int) -> 'SlicedBatchNorm2d':
        """A BN of exactly ``channels`` channels holding a copy of this one's first channels."""
        m = SlicedBatchNorm2d(channels, self.eps, self.momentum, self.affine, self.track_running_stats)
        m.to(self.weight if self.affine else self.running_mean)
        for name, t in list(m.named_parameters()) + list(m.named_buffers()):
            src = getattr(self, name)
            t.copy_(src if name == 'num_batches_tracked' else src[:channels])
        m.train(self.training)
        return m

    @torch.no_grad()
    def to_deployed(self) -> 'SlicedBatchNorm2d':
        """BN folded into a per-channel scale and shift: scale = weight * rsqrt(var + eps),
        shift = bias - mean * scale (the inference arithmetic of PyTorch's BN)."""
        if not (self.affine and self.track_running_stats):
            raise ValueError('SlicedBatchNorm2d.to_deployed: needs affine parameters and running statistics')
        m = SlicedBatchNorm2d.deployed(self.num_features).to(self.weight)
        scale = torch.rsqrt(self.running_var + self.eps) * self.weight
        m.weight.copy_(scale)
        m.bias.copy_(torch.addcmul(self.bias, self.running_mean, scale, value=-1))
        return m.eval()

    @classmethod
    def deployed(cls, channels: int) -> 'SlicedBatchNorm2d':
        """An empty folded BN (mean 0, variance 1, eps 0): ``y = x * weight + bias`` in eval mode."""
        return cls(channels, eps=0.0)

    def unpacked_state(self, values: Sequence[torch.Tensor]) -> Dict[str, torch.Tensor]:
        state = super().unpacked_state(values)
        c = self.num_features
        state.update(
            running_mean=torch.zeros(c),
            running_var=torch.ones(c),
            num_batches_tracked=torch.zeros((), dtype=torch.long))
        return state
