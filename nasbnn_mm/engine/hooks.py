"""Hooks: publishing safe checkpoints for others to use."""
from __future__ import annotations

import os.path as osp
from typing import Optional

from mmengine.dist import master_only
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from ..registry import HOOKS
from ..utils.checkpoint import publish_checkpoint

__all__ = ['PublishCheckpointHook']


@HOOKS.register_module()
class PublishCheckpointHook(Hook):
    """Write the model's weights as a checkpoint that loads with ``weights_only=True``.

    mmengine's training checkpoints (for resuming) pickle the message hub and other objects
    that safe loading refuses; the file written here holds only ``state_dict`` and plain
    ``meta`` (iteration, epoch, the search space of a supernet, the architecture of a subnet)
    and is what tools/test.py, the search, the export and the detector consume.

    Args:
        interval: also publish every ``interval`` training iterations (-1: only at the end).
        filename: name in the work dir of the final file.
    """

    priority = 'VERY_LOW'

    def __init__(self, interval: int = -1, filename: str = 'published.pth'):
        self.interval = interval
        self.filename = filename

    @master_only
    def _publish(self, runner, name: str) -> str:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        meta = dict(iter=runner.iter, epoch=runner.epoch, experiment=runner.experiment_name,
                    model_type=type(model).__name__)
        backbone = getattr(model, 'backbone', None)
        if backbone is not None and hasattr(backbone, 'space'):
            meta['search_space'] = backbone.space.to_dict()
        if backbone is not None and type(backbone).__name__ == 'NASBNNSubnet':
            meta['arch'] = backbone.arch.to_text()
        path = publish_checkpoint(model.state_dict(), osp.join(runner.work_dir, name), meta)
        runner.logger.info(f'Published weights-only checkpoint {path}')
        return path

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.interval > 0 and self.every_n_train_iters(runner, self.interval):
            self._publish(runner, f'published_iter_{runner.iter + 1}.pth')

    def after_train(self, runner) -> None:
        self._publish(runner, self.filename)
