"""Static export equals the supernet's subnet (binary and teacher mode, any input size)."""
import random

import pytest
import torch

from nasbnn_mm.models import NASBNNSupernet, build_static_backbone, subnet_backbone_state
from nasbnn_mm.ops import BINARY, TEACHER

SMALL_SPACE = 'configs/_base_/search_spaces/cifar_small.py'


@pytest.fixture(scope='module')
def supernet():
    torch.manual_seed(0)
    net = NASBNNSupernet(SMALL_SPACE, out_indices=(0, 1, 2, 3, 4))
    with torch.no_grad():  # non-identity transforms and non-trivial BN so that folding is exercised
        for name, p in net.named_parameters():
            if 'transform' in name:
                p.add_(0.1 * torch.randn_like(p))
            elif p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
    # float64: two computations of the same subnet agree to rounding, and a float32 rounding
    # difference could flip a binary activation and spread (float32 differs across CPUs)
    return net.double().eval()


@pytest.mark.parametrize('mode', [BINARY, TEACHER])
@pytest.mark.parametrize('seed', range(4))
def test_static_export_equals_supernet_subnet(supernet, mode, seed):
    arch = supernet.space.sample(random.Random(seed)) if seed else supernet.space.largest()
    supernet.set_subnet(arch, mode)
    static = build_static_backbone(supernet, arch, (0, 1, 2, 3, 4), mode).eval()
    assert not any('transform' in n for n, _ in static.named_parameters())  # folded
    static.double()
    x = torch.randn(2, 3, 33, 47, dtype=torch.float64)
    with torch.no_grad():
        for a, b in zip(supernet(x), static(x)):
            assert (a - b).abs().max() <= 1e-10 * a.abs().max(), (a - b).abs().max()


def test_export_state_is_a_copy(supernet):
    arch = supernet.space.smallest()
    sd = subnet_backbone_state(supernet, arch)
    sd['stem.conv.weight'].add_(1.0)
    assert not torch.equal(sd['stem.conv.weight'], supernet.stem.conv.weight[:arch.stem.width])
