"""Full-precision linear classifier that reads only the channels the active subnet produces."""
import torch
import torch.nn.functional as F
from mmpretrain.models.heads import LinearClsHead

from ..registry import MODELS

__all__ = ['SlicedLinearClsHead']


@MODELS.register_module()
class SlicedLinearClsHead(LinearClsHead):
    """mmpretrain's LinearClsHead whose ``fc`` has ``in_channels`` = the largest width; an input
    with C channels uses the first C columns of the weight (and the whole bias)."""

    def __init__(self,
                 num_classes: int,
                 in_channels: int,
                 loss: dict = dict(type='mmpretrain.CrossEntropyLoss', loss_weight=1.0),
                 **kwargs):
        # scoped loss type: builds whatever the caller's default scope is
        super().__init__(num_classes, in_channels, loss=loss, **kwargs)

    def forward(self, feats) -> torch.Tensor:
        x = self.pre_logits(feats)
        return F.linear(x, self.fc.weight[:, :x.shape[1]], self.fc.bias)
