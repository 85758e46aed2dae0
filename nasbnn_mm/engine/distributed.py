"""Distributed helpers that work on CPU (gloo) as well as GPU (nccl), without patching mmengine.

mmengine's ``init_dist`` calls ``torch.cuda.set_device`` and its runner passes
``device_ids=[LOCAL_RANK]`` to DDP; neither works on a CPU-only machine.
"""
from __future__ import annotations
import os

import torch
import torch.distributed as dist
from mmengine.model import MMDistributedDataParallel

from ..registry import MODEL_WRAPPERS

__all__ = ['init_cpu_dist_if_needed', 'SandwichDDP']


def init_cpu_dist_if_needed(launcher: str, cfg) -> None:
    """For a non-'none' launcher on a machine without CUDA, start the gloo process group
    ourselves (the runner then finds it initialised and skips ``init_dist``)."""
    if launcher == 'none' or torch.cuda.is_available() or dist.is_initialized():
        return
    if launcher != 'pytorch':
        raise ValueError(f"launcher: {launcher!r} is not supported on CPU (allowed: 'none', 'pytorch')")
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
    # mmengine's default wrapper passes device_ids=[LOCAL_RANK], which CPU DDP refuses
    if not cfg.get('model_wrapper_cfg'):
        cfg.model_wrapper_cfg = dict(type='nasbnn.SandwichDDP')
    dist.init_process_group(backend='gloo', rank=int(os.environ['RANK']), world_size=int(os.environ['WORLD_SIZE']))


@MODEL_WRAPPERS.register_module()
class SandwichDDP(MMDistributedDataParallel):
    """DDP wrapper whose ``train_step`` runs the model's sandwich rule through the wrapper (so
    each pass's backward all-reduces its gradients). Uses ``device_ids=None`` on CPU."""

    def __init__(self, module, device_ids=None, **kwargs):
        if not torch.cuda.is_available():
            device_ids = None
        kwargs.setdefault('find_unused_parameters', True)  # a subnet uses a slice of the supernet
        super().__init__(module=module, device_ids=device_ids, **kwargs)

    def train_step(self, data, optim_wrapper):
        if hasattr(self.module, 'sandwich_step'):
            return self.module.sandwich_step(data, optim_wrapper, self)
        return super().train_step(data, optim_wrapper)
