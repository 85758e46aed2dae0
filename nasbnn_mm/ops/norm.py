"""Batch norm whose statistics and affine parameters are shared across widths."""
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['SlicedBatchNorm2d']


class SlicedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d over the first C channels of a max-width BN (slices are views, so the
    running statistics of those channels are updated in place)."""

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
        return F.batch_norm(
            x,
            (self.running_mean if full else self.running_mean[:c]) if keep_stats else None,
            (self.running_var if full else self.running_var[:c]) if keep_stats else None,
            weight, bias, use_batch, factor, self.eps)
