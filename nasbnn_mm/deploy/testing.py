"""Deployed NAS-BNN classifiers with random weights, for tests and benchmarks of the runtime.

:func:`random_deployed_classifier` fills every tensor the packed form stores with values like a trained,
exported network's: ±1 binary weights with alpha ~ 1 / sqrt(fan-in) (activations of order 1), 8-bit stem
integers with a step that keeps the stem's output of order 1, folded BN scales in [0.5, 1.5] and shifts,
RSign thresholds, RPReLU biases and slopes away from their defaults, so that the thresholds decide a
good share of the signs. Speed does not depend on the values (except exact zeros of x + b, which the
kernels handle on a slower path; :func:`zero_thresholds` puts some there on purpose).
"""
from __future__ import annotations
from typing import Optional

import torch

__all__ = ['random_deployed_classifier', 'zero_thresholds']


@torch.no_grad()
def random_deployed_classifier(arch, search_space=None, num_classes: int = 1000, seed: int = 0):
    """An ImageClassifier(NASBNNDeployedSubnet, GAP, LinearClsHead) in eval mode with random weights.

    Args:
        arch: preset name, architecture text / dict or Architecture.
        search_space: the space (dict or config path; default Table 1).
        num_classes (int): classifier outputs.
        seed (int): of the values.
    """
    from ..models.packed import build_deployed_classifier
    from ..ops import DeployedBinaryConv2d, LSQConv2d, RPReLU, RSign, SlicedBatchNorm2d
    model = build_deployed_classifier(arch, search_space, num_classes).eval()
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.rand(*shape, generator=g)

    def randn(*shape):
        return torch.randn(*shape, generator=g)

    for m in model.modules():
        if isinstance(m, DeployedBinaryConv2d):
            m.sign.copy_(torch.where(rand(*m.sign.shape) < 0.5, -1.0, 1.0))
            fan_in = m.sign[0].numel()
            m.alpha.copy_((0.5 + rand(m.out_channels)) / fan_in**0.5)
        elif isinstance(m, LSQConv2d):
            fan_in = m.weight[0].numel()
            step = (0.5 + rand(m.max_out)) / (64 * fan_in**0.5)
            q = torch.randint(-128, 128, m.weight.shape, generator=g).float()
            m.step.copy_(step)
            m.weight.copy_(q * step.view(-1, 1, 1, 1))
        elif isinstance(m, SlicedBatchNorm2d):
            m.weight.copy_(0.5 + rand(m.num_features))
            m.bias.copy_(0.3 * randn(m.num_features))
        elif isinstance(m, RSign):
            m.bias.copy_(0.3 * randn(m.bias.numel()))
        elif isinstance(m, RPReLU):
            c = m.slope.numel()
            m.bias_in.copy_(0.2 * randn(c))
            m.slope.copy_(rand(c) * 0.5 - 0.1)  # a few negative slopes too
            m.bias_out.copy_(0.2 * randn(c))
    fc = model.head.fc
    fc.weight.copy_(randn(*fc.weight.shape) / fc.in_features**0.5)
    fc.bias.copy_(0.1 * randn(fc.out_features))
    return model


@torch.no_grad()
def zero_thresholds(model, images: torch.Tensor, share: float = 0.5, seed: Optional[int] = 0) -> int:
    """Set the first binary conv's RSign thresholds so that ``x + b == 0`` exactly at some pixels: on a
    constant region of ``images`` the stem's output is one value per channel, and for ``share`` of the
    channels b becomes its negation (at the first pixel of the first image). Returns how many channels."""
    backbone = model.backbone
    x = backbone.stem(images.contiguous(memory_format=torch.channels_last), backbone.arch.stem.width)
    v = x[0, :, 0, 0]
    layer = backbone.stages[0][0]
    c = v.numel()
    g = torch.Generator().manual_seed(seed or 0)
    idx = torch.randperm(c, generator=g)[:max(1, int(share * c))]
    layer.sign1.bias[idx] = -v[idx]
    return int(idx.numel())
