"""BN recalibration: a subnet's batch-norm statistics re-estimated on training batches.

The shared BN statistics of a supernet are a mixture over all the subnets trained, so each
subnet is evaluated after resetting them and accumulating a cumulative average over a few
training batches (no gradients). The context manager restores the supernet's statistics
afterwards, so evaluating a subnet never changes the supernet.
"""
from __future__ import annotations
from contextlib import contextmanager
from typing import Iterable, Optional

import torch
from mmengine.model import is_model_wrapper
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ['recalibrate_bn', 'recalibrated_bn']


def _bns(model):
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_bn(model, dataloader: Iterable, num_batches: int) -> int:
    """Reset BN running statistics and accumulate them over ``num_batches`` batches of
    ``dataloader`` (cumulative average). Returns the number of images seen. Only the BN
    layers are put in training mode."""
    if num_batches < 1:
        raise ValueError(f'num_batches: must be >= 1, got {num_batches}')
    core = model.module if is_model_wrapper(model) else model
    bns = _bns(core)
    modes = [m.training for m in core.modules()]
    momenta = [bn.momentum for bn in bns]
    core.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average over the batches
        bn.train()
    seen = 0
    try:
        for i, batch in enumerate(dataloader):
            if i >= num_batches:
                break
            data = core.data_preprocessor(batch, False)
            core(data['inputs'], mode='tensor')
            seen += len(data['inputs'])
    finally:
        for bn, mom in zip(bns, momenta):
            bn.momentum = mom
        for m, t in zip(core.modules(), modes):
            m.training = t
    if seen == 0:
        raise RuntimeError('BN recalibration: the calibration dataloader yielded no batch')
    return seen


@contextmanager
def recalibrated_bn(model, dataloader: Optional[Iterable], num_batches: int):
    """Recalibrate inside the ``with`` block; restore the previous BN buffers on exit."""
    core = model.module if is_model_wrapper(model) else model
    bns = _bns(core)
    saved = [(bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()) for bn in bns]
    try:
        if dataloader is not None and num_batches > 0:
            recalibrate_bn(model, dataloader, num_batches)
        yield
    finally:
        with torch.no_grad():
            for bn, (m, v, n) in zip(bns, saved):
                bn.running_mean.copy_(m)
                bn.running_var.copy_(v)
                bn.num_batches_tracked.copy_(n)
