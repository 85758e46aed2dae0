"""Pictures of a detector's test predictions next to the ground truth (mmdet's visualizer).

``tools/test.py CONFIG CKPT --show-dir DIR [--show-num 4] [--show-score-thr 0.3]`` sets
``default_hooks.visualization`` to :class:`DetSamplesVisualizationHook`: the first ``max_images``
test images with ground-truth boxes are drawn with mmdet's ``DetLocalVisualizer`` (ground truth left,
predictions above the score threshold right) into ``DIR/<image name>``.
"""
from __future__ import annotations
import os
import os.path as osp

from mmdet.engine.hooks import DetVisualizationHook

from ..registry import HOOKS

__all__ = ['DetSamplesVisualizationHook', 'visualization_hook_cfg']


@HOOKS.register_module()
class DetSamplesVisualizationHook(DetVisualizationHook):
    """mmdet's ``DetVisualizationHook`` for the test loop, limited to the first ``max_images`` images (with
    ground truth, by default) and writing to an absolute ``out_dir`` (not one nested in the run's timestamp
    folder).

    Args:
        out_dir (str): folder of the pictures (created).
        max_images (int): how many test images to draw (the first ones of the test set).
        score_thr (float): predictions drawn from this score on.
        with_gt_only (bool): skip test images without ground-truth boxes (of the config's classes).
    """

    def __init__(self, out_dir: str, max_images: int = 4, score_thr: float = 0.3, with_gt_only: bool = True, **kwargs):
        if isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1:
            raise ValueError(f'show_num: {max_images!r} not allowed (allowed: a positive integer)')
        if not 0.0 <= float(score_thr) <= 1.0:
            raise ValueError(f'show_score_thr: {score_thr!r} not allowed (allowed: 0..1)')
        super().__init__(draw=True, score_thr=float(score_thr), **kwargs)
        self.out_dir = osp.abspath(out_dir)
        os.makedirs(self.out_dir, exist_ok=True)
        self.max_images = max_images
        self.with_gt_only = bool(with_gt_only)
        self.written = []

    def after_test_iter(self, runner, batch_idx, data_batch, outputs) -> None:
        import mmcv
        from mmengine.fileio import get
        for sample in outputs:
            if len(self.written) >= self.max_images:
                return
            if self.with_gt_only and len(getattr(sample, 'gt_instances', ())) == 0:
                continue  # an image without an object of the classes shows nothing to compare
            img = mmcv.imfrombytes(get(sample.img_path), channel_order='rgb')
            out_file = osp.join(self.out_dir, osp.basename(sample.img_path))
            self._visualizer.add_datasample(
                'test_img', img, data_sample=sample, pred_score_thr=self.score_thr, out_file=out_file)
            self.written.append(out_file)


def visualization_hook_cfg(show_dir: str, show_num: int = 4, score_thr: float = 0.3) -> dict:
    """The ``default_hooks.visualization`` entry of ``--show-dir``."""
    return dict(type='nasbnn.DetSamplesVisualizationHook', out_dir=show_dir, max_images=show_num, score_thr=score_thr)
