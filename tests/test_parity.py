"""Parity with the authors' release without their code.

tests/official_reference.py restates their forward (models/superbnn.py and dynamic_operations.py
of VDIGPKU/NAS-BNN) op by op on their state-dict layout. A runnable official-layout state dict is
converted with tools/convert_official_checkpoint.py and run through our model:
  * float64: our default path equals the reference to rounding (<= 1e-10 relative);
  * float32 with ``exact_parity=True`` (their order of operations, NCHW): bit-identical logits and
    bit-identical BN statistics after a training-mode forward.
The full Table-1 space is used, at 32 px so that the largest subnet runs in a second.
"""
import copy
import importlib.util
import math
import os
import random

import pytest
import torch
from official_reference import _grad_scale, _round_pass, realistic_official_state_dict, reference_logits

from nasbnn_mm.ops import lsq_quantize
from nasbnn_mm.space import TABLE1_SPACE, SearchSpace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location('convert_official_checkpoint',
                                               os.path.join(ROOT, 'tools', 'convert_official_checkpoint.py'))
conv = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(conv)

SPACE = SearchSpace.table1()
NUM_CLASSES = 10


def _subnets():
    rng = random.Random(3)
    return {'smallest': SPACE.smallest(), 'largest': SPACE.largest(), 'random': SPACE.sample(rng)}


SUBNETS = _subnets()


@pytest.fixture(scope='module')
def official():
    return realistic_official_state_dict(TABLE1_SPACE, NUM_CLASSES, seed=0)


@pytest.fixture(scope='module')
def ours(official):
    sd, _ = conv.convert_state_dict(official, SPACE)
    model = conv.build_template(SPACE, NUM_CLASSES, device='cpu')
    model.load_state_dict(sd, strict=True)
    return model.eval()


def _images(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, 32, 32, generator=g).to(dtype)


def _ours_logits(model, x, arch, teacher):
    with torch.no_grad():
        return model(x, mode='tensor', arch=arch, weight_mode='teacher' if teacher else 'binary')


@pytest.mark.parametrize('teacher', [False, True], ids=['student', 'teacher'])
@pytest.mark.parametrize('name', list(SUBNETS))
def test_float64_logits_match_reference(official, ours, name, teacher):
    arch = SUBNETS[name]
    model = copy.deepcopy(ours).double()
    x = _images(torch.float64)
    sd64 = {k: (v.double() if v.is_floating_point() else v) for k, v in official.items()}
    ref = reference_logits(sd64, TABLE1_SPACE, arch, x, teacher=teacher)
    got = _ours_logits(model, x, arch, teacher)
    scale = ref.abs().max().item()
    assert scale > 0.1  # the network is not degenerate
    assert (got - ref).abs().max().item() <= 1e-10 * scale, name


@pytest.mark.parametrize('teacher', [False, True], ids=['student', 'teacher'])
@pytest.mark.parametrize('name', list(SUBNETS))
def test_float32_exact_parity_is_bit_identical(official, ours, name, teacher):
    arch = SUBNETS[name]
    model = ours
    model.backbone.exact_parity = True
    try:
        x = _images(torch.float32, seed=1)
        ref = reference_logits(official, TABLE1_SPACE, arch, x, teacher=teacher)
        got = _ours_logits(model, x, arch, teacher)
    finally:
        model.backbone.exact_parity = False
    assert torch.equal(got, ref), f'{name}: max abs diff {(got - ref).abs().max().item():.3g}'


def test_float32_exact_parity_training_bn_statistics_identical(official, ours):
    """A training-mode forward updates the running statistics of every BN slice the subnet uses
    exactly as the authors' BN does (batch statistics in their order of operations)."""
    arch = SUBNETS['random']
    theirs = {k: v.clone() for k, v in official.items()}
    model = copy.deepcopy(ours)
    model.backbone.exact_parity = True
    model.train()
    x = _images(torch.float32, seed=2)
    ref = reference_logits(theirs, TABLE1_SPACE, arch, x, training=True)
    with torch.no_grad():
        got = model(x, mode='tensor', arch=arch, weight_mode='binary')
    assert torch.equal(got, ref)
    converted, _ = conv.convert_state_dict(theirs, SPACE)
    mine = model.state_dict()
    stats = [k for k in mine if k.endswith(('running_mean', 'running_var'))]
    assert len(stats) == 2 + 4 * sum(s.max_depth for s in SPACE.stages)
    changed = 0
    for k in stats:
        assert torch.equal(mine[k], converted[k]), k
        changed += int(not torch.equal(mine[k], ours.state_dict()[k]))
    assert changed >= 2 * (1 + 2 * sum(len(s) for s in arch.stages)) - 2  # the used BNs moved


# ----------------------------------------------------------------------------- the 8-bit stem quantizer
def _release_lsq(w, step, bits=8):
    """DynamicQConv2d's weight quantization: round_pass first, clamp after (their order)."""
    qn, qp = -(2**(bits - 1)), 2**(bits - 1) - 1
    g = 1.0 / math.sqrt(w.numel() * qp)
    s = _grad_scale(step, g).view(-1, *([1] * (w.dim() - 1)))
    return _round_pass(w / s).clamp(qn, qp) * s


def _clamp_gradient_passes_at_bounds() -> bool:
    """torch.clamp's subgradient where the input equals a bound (0 in torch 2.x, 1 in some older
    releases); the release's quantizer inherits whichever the installed torch has."""
    t = torch.tensor([1.0], requires_grad=True)
    torch.clamp(t, 0.0, 1.0).sum().backward()
    return bool(t.grad.item() == 1.0)


def test_lsq_rounds_before_clamping_like_the_release():
    """Weights whose w/s rounds onto the ends of the range (or just inside / outside): ours gives
    the release's values and gradients, and the gradients derived by hand."""
    ratios = torch.tensor(
        [127.0, 127.3, 127.5, 127.6, 126.7, 126.5, -128.0, -128.4, -128.5, -128.6, -129.0, 0.25, -3.5, 40.49, 200.0],
        dtype=torch.float64)
    step = torch.tensor([2.0**-7, 2.0**-6], dtype=torch.float64)  # w = ratio * step exactly
    w0 = torch.stack([ratios * step[0], ratios * step[1]])  # (2 channels, 15)
    upstream = torch.linspace(0.5, 2.0, w0.numel(), dtype=torch.float64).view_as(w0)
    out = {}
    for name, fn in (('ours', lsq_quantize), ('release', _release_lsq)):
        w, s = w0.clone().requires_grad_(), step.clone().requires_grad_()
        q = fn(w, s)
        (q * upstream).sum().backward()
        out[name] = (q.detach(), w.grad, s.grad)
    for a, b in zip(out['ours'], out['release']):
        assert torch.equal(a, b)
    # by hand, with r = round(w / s) (s as LSQ's gradient scaling computes it: (s - s g) + s g):
    g = 1.0 / math.sqrt(w0.numel() * 127)
    s_eff = ((step - step * g) + step * g).view(-1, 1)
    r = torch.round(w0 / s_eff)
    assert r[0].tolist() == [127, 127, 128, 128, 127, 126, -128, -128, -128, -129, -129, 0, -4, 40, 200]
    # rounded first, clamped after: q = clamp(r, -128, 127) * s (the old clamp-then-round order
    # also gave these values; its gradients differed)
    assert torch.equal(out['ours'][0], r.clamp(-128, 127) * s_eff)
    # d q / d w = 1 where r lies inside the range (at a bound: torch.clamp's subgradient), else 0
    on_bound = (r == -128) | (r == 127)
    passes = ((r > -128) & (r < 127)) | (on_bound & _clamp_gradient_passes_at_bounds())
    assert torch.equal(out['ours'][1], torch.where(passes, upstream, torch.zeros_like(upstream)))
    # 126.7 rounds onto 127: the clamp-first order passed its gradient (the release does not)
    assert not passes[0, 4] or _clamp_gradient_passes_at_bounds()
    # d q / d s = (r - w/s) where the gradient passes, else the clamped value; times LSQ's scale g
    dq_ds = torch.where(passes, r - w0 / s_eff, r.clamp(-128, 127))
    assert torch.allclose(out['ours'][2], (dq_ds * upstream).sum(1) * g, rtol=1e-12, atol=0)
