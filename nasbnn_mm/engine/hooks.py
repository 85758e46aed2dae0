"""Hooks: publishing safe checkpoints for others to use."""
from __future__ import annotations
import os.path as osp

from mmengine.dist import master_only
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from ..registry import HOOKS
from ..utils.checkpoint import publish_checkpoint

__all__ = ['PublishCheckpointHook', 'DistSyncCheckHook']


def _dataset_meta(runner):
    """Class names of the run's training data (what mmpretrain's / mmdet's inferencers show)."""
    try:
        classes = runner.train_dataloader.dataset.metainfo.get('classes')
    except Exception:  # no train dataloader (test-only runs), lazy datasets, ...
        return None
    return dict(classes=list(classes)) if classes else None


@HOOKS.register_module()
class PublishCheckpointHook(Hook):
    """Write the model's weights as a checkpoint that loads with ``weights_only=True``.

    mmengine's training checkpoints (for resuming) pickle the message hub and other objects
    that safe loading refuses; the file written here holds only ``state_dict`` and plain
    ``meta`` (iteration, epoch, the search space of a supernet, the architecture of a subnet, the
    backbone's arithmetic settings, the class names) and is what tools/test.py, the search, the
    export, the detector and the OpenMMLab inferencers consume.

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
        meta = dict(
            iter=runner.iter, epoch=runner.epoch, experiment=runner.experiment_name, model_type=type(model).__name__)
        backbone = getattr(model, 'backbone', None)
        if backbone is not None and hasattr(backbone, 'space'):
            meta['search_space'] = backbone.space.to_dict()
        if backbone is not None and hasattr(backbone, 'settings'):
            meta['backbone_settings'] = backbone.settings()
        from ..models import NASBNNSubnet  # subclasses too (e.g. the detection backbone)
        if isinstance(backbone, NASBNNSubnet):
            meta['arch'] = backbone.arch.to_text()
        dataset_meta = getattr(model, 'dataset_meta', None) or _dataset_meta(runner)
        if dataset_meta:
            meta['dataset_meta'] = dataset_meta
        path = publish_checkpoint(model.state_dict(), osp.join(runner.work_dir, name), meta)
        runner.logger.info(f'Published weights-only checkpoint {path}')
        return path

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.interval > 0 and self.every_n_train_iters(runner, self.interval):
            self._publish(runner, f'published_iter_{runner.iter + 1}.pth')

    def after_train(self, runner) -> None:
        self._publish(runner, self.filename)


@HOOKS.register_module()
class DistSyncCheckHook(Hook):
    """Check that distributed ranks stay in lockstep.

    Every ``interval`` iterations all ranks compare the subnets the sandwich rule trained (each
    rank derives them itself from the seed and the iteration), and at the end of training a
    digest of every parameter. A mismatch raises on every rank. Costs one small
    all_gather per check; does nothing in a single process.
    """

    priority = 'LOW'

    def __init__(self, interval: int = 1):
        self.interval = interval

    @staticmethod
    def _core(runner):
        return runner.model.module if is_model_wrapper(runner.model) else runner.model

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        from mmengine.dist import all_gather_object, get_world_size
        core = self._core(runner)
        if get_world_size() < 2 or not hasattr(core, 'sandwich_archs') or not self.every_n_train_iters(
                runner, self.interval):
            return
        mine = [a.to_text() for _, a in core.sandwich_archs(runner.iter)]
        everyone = all_gather_object(mine)
        if any(x != everyone[0] for x in everyone):
            raise RuntimeError(f'ranks trained different subnets at iteration {runner.iter}: {everyone}')

    def after_train(self, runner) -> None:
        import hashlib

        import torch
        from mmengine.dist import all_gather_object, get_world_size
        if get_world_size() < 2:
            return
        h = hashlib.sha1()
        # parameters only: BN running statistics are per-rank by nature (each rank's data) and
        # are re-estimated by BN recalibration before any subnet is evaluated
        for name, t in self._core(runner).named_parameters():
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        digests = all_gather_object(h.hexdigest())
        if any(d != digests[0] for d in digests):
            raise RuntimeError(f'ranks ended training with different weights: {digests}')
        runner.logger.info(f'DistSyncCheckHook: weights identical on all {len(digests)} ranks (sha1 {digests[0][:12]})')
