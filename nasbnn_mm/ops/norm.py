"""Batch norm whose statistics and affine parameters are shared across widths."""
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['SlicedBatchNorm2d']


class SlicedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d over the first C channels of a max-width BN (slices are views, so the
    running statistics of those channels are updated in place)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c == self.num_features:
            return super().forward(x)
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
        return F.batch_norm(
            x,
            self.running_mean[:c] if (not self.training or self.track_running_stats) else None,
            self.running_var[:c] if (not self.training or self.track_running_stats) else None,
            self.weight[:c] if self.affine else None, self.bias[:c] if self.affine else None,
            use_batch, factor, self.eps)
