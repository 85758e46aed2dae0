"""Supernet, binary layer and sandwich-rule tests."""
import math
import os
import random
import subprocess
import sys

import pytest
import torch
from mmengine.registry import MODELS

import nasbnn_mm  # noqa: F401
from nasbnn_mm.engine import recalibrated_bn
from nasbnn_mm.models import NASBNNSubnet, NASBNNSupernet
from nasbnn_mm.ops import BINARY, TEACHER, SharedBinaryConv2d, approx_sign, lsq_quantize, normalize_weight, sign_ste
from nasbnn_mm.space import PRESET_NAMES, SearchSpace

SMALL_SPACE = 'configs/_base_/search_spaces/cifar_small.py'


def build_classifier(space=SMALL_SPACE, num_classes=10, seed=0):
    sp = SearchSpace.build(space)
    return MODELS.build(
        dict(
            type='nasbnn.SandwichClassifier',
            backbone=dict(type='nasbnn.NASBNNSupernet', search_space=sp.to_dict()),
            neck=dict(type='mmpretrain.GlobalAveragePooling'),
            head=dict(
                type='nasbnn.SlicedLinearClsHead', num_classes=num_classes, in_channels=max(sp.stages[-1].widths)),
            sample_seed=seed,
            data_preprocessor=dict(type='mmpretrain.ClsDataPreprocessor', mean=[127.5] * 3, std=[127.5] * 3)))


# ---------------------------------------------------------------- full Table-1 supernet
@pytest.fixture(scope='module')
def table1_supernet():
    torch.manual_seed(0)
    return NASBNNSupernet(out_indices=(1, 2, 3, 4)).eval()


@pytest.mark.parametrize('name', list(PRESET_NAMES) + ['largest', 'smallest', 'random0', 'random1'])
def test_table1_forward_every_preset_and_random(table1_supernet, name):
    sp = table1_supernet.space
    arch = {'largest': sp.largest(), 'smallest': sp.smallest()}.get(name)
    if arch is None:
        arch = sp.sample(random.Random(name)) if name.startswith('random') else name
    arch = table1_supernet.set_subnet(arch, BINARY)
    x = torch.randn(1, 3, 40, 56)  # small, non-square, not a multiple of 32
    with torch.no_grad():
        outs = table1_supernet(x)
    assert [o.shape[1] for o in outs] == list(arch.stage_out_channels[1:])
    assert [tuple(o.shape[2:]) for o in outs] == [(10, 14), (5, 7), (3, 4), (2, 2)]
    assert all(torch.isfinite(o).all() for o in outs)


def test_table1_parameter_count_matches_authors_layout(table1_supernet):
    n = sum(p.numel() for p in table1_supernet.parameters())
    # the authors' supernet has 66,508,159 parameters including the 1536x1000 classifier + bias
    assert n + 1536 * 1000 + 1000 == 66_508_159


def test_teacher_mode_runs_on_table1(table1_supernet):
    table1_supernet.set_subnet(table1_supernet.space.largest(), TEACHER)
    with torch.no_grad():
        t = table1_supernet(torch.randn(1, 3, 32, 32))[-1]
    table1_supernet.set_subnet(mode=BINARY)
    with torch.no_grad():
        b = table1_supernet(torch.randn(1, 3, 32, 32))[-1]
    assert t.shape == b.shape


# ---------------------------------------------------------------- binarizers and LSQ
def test_approx_sign_gradient_by_hand():
    x = torch.tensor([-1.5, -1.0, -0.5, 0.0, 0.25, 1.0, 2.0], requires_grad=True)
    y = approx_sign(x)
    assert y.tolist() == [-1, -1, -1, 0, 1, 1, 1]
    y.backward(torch.ones_like(x))
    assert x.grad.tolist() == [0.0, 0.0, 1.0, 2.0, 1.5, 0.0, 0.0]


def test_weight_sign_ste_clipped():
    w = torch.tensor([-2.0, -1.0, -0.3, 0.4, 1.0, 1.5], requires_grad=True)
    sign_ste(w).backward(torch.full_like(w, 3.0))
    assert w.grad.tolist() == [0.0, 3.0, 3.0, 3.0, 3.0, 0.0]


def test_lsq_quantizer_by_hand():
    w = torch.tensor([[0.304, -0.256, 2.0], [0.5, -0.5, 0.013]], requires_grad=True)
    step = torch.tensor([0.01, 0.1], requires_grad=True)
    q = lsq_quantize(w, step, bits=8)
    # w/s = [30.4, -25.6, 200 -> clamp 127] and [5, -5, 0.13]
    expected = torch.tensor([[0.30, -0.26, 1.27], [0.5, -0.5, 0.0]])
    assert torch.allclose(q, expected, atol=1e-6)
    q.sum().backward()
    # STE: gradient 1 inside the range, 0 where clamped
    assert w.grad.tolist() == [[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]
    # LSQ step gradient: sum of (round(v) - v) inside, Qp/Qn where clamped, times g = 1/sqrt(numel*Qp)
    g = 1 / math.sqrt(6 * 127)
    ds0 = (30 - 30.4) + (-26 + 25.6) + 127
    ds1 = (5 - 5) + (-5 + 5) + (0 - 0.13)
    assert torch.allclose(step.grad, torch.tensor([ds0, ds1]) * g, atol=1e-5)


def test_lsq_step_data_init():
    from nasbnn_mm.ops import LSQConv2d
    conv = LSQConv2d(3, 4).train()
    conv(torch.randn(1, 3, 8, 8), 4)
    w = conv.weight.detach().flatten(1)
    m, s = w.mean(1), w.std(1)
    assert torch.allclose(conv.step.detach(), torch.maximum((m - 3 * s).abs(), (m + 3 * s).abs()) / 128)
    assert bool(conv.step_initialized)


# ---------------------------------------------------------------- weight sharing
def _column_blocks(conv, c, g):
    """For each output channel, the index of the column block it reads (authors' layout)."""
    with torch.no_grad():
        conv.weight.copy_(torch.arange(conv.weight.shape[1]).view(1, -1, 1, 1).expand_as(conv.weight))
        w = conv.latent_weight(c, c, conv.max_kernel, g)
    sub = c // g
    first_col = w[:, 0, 0, 0].long()
    assert torch.all(first_col % sub == 0)
    return [int(v) // sub for v in first_col[::c // g]]  # one entry per group


def test_group_slicing_matches_authors_layout():
    # stage-3 first layer of Table 1: shared (192, 96, 5, 5)
    conv = SharedBinaryConv2d(192, 192, (3, 5), (2, 4))
    assert tuple(conv.weight.shape) == (192, 96, 5, 5)
    assert _column_blocks(conv, 96, 2) == [0, 1]
    assert _column_blocks(conv, 192, 2) == [0, 0]
    assert _column_blocks(conv, 192, 4) == [0, 1, 0, 1]
    # stage-4 later layers: shared (768, 192, 5, 5); 512 channels in 8 groups: 64-column blocks cycling 0,1,2
    conv = SharedBinaryConv2d(768, 768, (3, 5), (4, 8))
    assert tuple(conv.weight.shape) == (768, 192, 5, 5)
    assert _column_blocks(conv, 512, 8) == [0, 1, 2, 0, 1, 2, 0, 1]


def test_kernel3_is_transformed_centre_crop():
    conv = SharedBinaryConv2d(8, 8, (3, 5), (1, ))
    with torch.no_grad():
        conv.kernel_transforms['k3'].copy_(torch.randn(9, 9))
    w3 = conv.latent_weight(8, 8, 3, 1)
    crop = conv.weight[:, :, 1:4, 1:4].reshape(-1, 9)
    assert torch.allclose(w3.reshape(-1, 9), crop @ conv.kernel_transforms['k3'].t(), atol=1e-6)


def test_teacher_and_student_weights_differ_exactly_as_specified():
    torch.manual_seed(0)
    conv = SharedBinaryConv2d(16, 16, (3, 5), (1, 2))
    with torch.no_grad():
        conv.bi_transform.copy_(torch.eye(25) + 0.3 * torch.randn(25, 25))
    for k in (3, 5):
        latent = conv.latent_weight(16, 16, k, 2)
        teacher = conv.effective_weight(16, 16, k, 2, TEACHER)
        student = conv.effective_weight(16, 16, k, 2, BINARY)
        # teacher: normalized full-precision latent weight, no Bi-Transformation
        assert torch.allclose(teacher, normalize_weight(latent), atol=1e-6)
        # student: Bi-Transformation only with the largest kernel, then normalize, then alpha * sign
        pre = (latent.reshape(-1, k * k) @ conv.bi_transform.t()).view_as(latent) if k == 5 else latent
        wn = normalize_weight(pre)
        alpha = wn.abs().mean(dim=(1, 2, 3), keepdim=True)
        assert torch.allclose(student, alpha * wn.sign(), atol=1e-6)
        assert torch.allclose(student.abs(), alpha.expand_as(student), atol=1e-6)
    # normalization: (W - mean) / sqrt(var + 1e-5) per output channel (biased variance)
    raw = conv.latent_weight(16, 16, 5, 1).flatten(1)
    wn = normalize_weight(conv.latent_weight(16, 16, 5, 1)).flatten(1)
    v = raw.var(1, unbiased=False)
    assert torch.allclose(wn.mean(1), torch.zeros(16), atol=1e-5)
    assert torch.allclose(wn.var(1, unbiased=False), v / (v + 1e-5), atol=1e-4)


def test_activations_stay_binary_in_teacher_mode():
    model = build_classifier()
    seen = []
    for m in model.backbone.modules():
        if m.__class__.__name__ == 'RSign':
            m.register_forward_hook(lambda mod, inp, out: seen.append(out.detach()))
    model(torch.randn(2, 3, 32, 32), arch=model.space.largest(), weight_mode=TEACHER)
    assert seen and all(set(torch.unique(o).tolist()) <= {-1.0, 0.0, 1.0} for o in seen)


def test_gradient_reaches_every_shared_parameter_of_a_subnet():
    torch.manual_seed(0)
    model = build_classifier()
    sp = model.space
    arch = sp.sample(random.Random(5))
    model.train()
    logits = model(torch.randn(4, 3, 32, 32), arch=arch, weight_mode=BINARY)
    logits.sum().backward()
    used = {
        'backbone.stem.' + n
        for n in ('conv.weight', 'conv.step', 'bn.weight', 'bn.bias', 'act.bias_in', 'act.slope', 'act.bias_out')
    }
    used |= {'head.fc.weight', 'head.fc.bias'}
    for si, stage in enumerate(arch.stages):
        K = max(sp.stages[si].kernels)
        for li, layer in enumerate(stage):
            p = f'backbone.stages.{si}.{li}.'
            used |= {
                p + n
                for n in ('sign1.bias', 'conv_kxk.weight', 'bn1.weight', 'bn1.bias', 'act1.bias_in', 'act1.slope',
                          'act1.bias_out', 'sign2.bias', 'conv_1x1.weight', 'bn2.weight', 'bn2.bias', 'act2.bias_in',
                          'act2.slope', 'act2.bias_out')
            }
            used.add(p +
                     (f'conv_kxk.kernel_transforms.k{layer.kernel}' if layer.kernel < K else 'conv_kxk.bi_transform'))
    params = dict(model.named_parameters())
    assert used <= set(params)
    for name, p in params.items():
        has_grad = p.grad is not None and p.grad.abs().sum() > 0
        assert has_grad == (name in used), name


# ---------------------------------------------------------------- BN recalibration
def test_bn_recalibration_accumulates_and_restores():
    torch.manual_seed(0)
    model = build_classifier().eval()
    model.set_subnet(model.space.smallest(), BINARY)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [(b.running_mean.clone(), b.running_var.clone(), b.num_batches_tracked.clone()) for b in bns]
    batches = [dict(inputs=[torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8) for _ in range(4)]) for _ in range(3)]
    stem_bn = model.backbone.stem.bn
    c = model.space.smallest().stem.width
    with torch.no_grad():
        means = []
        for b in batches:
            x = model.data_preprocessor(b, False)['inputs']
            y = model.backbone.stem.conv(x, c)
            means.append(y.mean(dim=(0, 2, 3)))
    with recalibrated_bn(model, batches, num_batches=3):
        # cumulative average of the three batch means (not a momentum average)
        assert torch.allclose(stem_bn.running_mean[:c], torch.stack(means).mean(0), atol=1e-5)
        assert int(stem_bn.num_batches_tracked) == 3
        assert all(not b.training for b in bns) and stem_bn.momentum == 0.1
    for b, (m, v, n) in zip(bns, before):
        assert torch.equal(b.running_mean, m) and torch.equal(b.running_var, v)
        assert torch.equal(b.num_batches_tracked, n)


# ---------------------------------------------------------------- sandwich sampling
def test_sandwich_sampling_identical_across_ranks_and_processes():
    a, b = build_classifier(seed=3), build_classifier(seed=3)
    for it in range(20):
        assert a.sandwich_archs(it) == b.sandwich_archs(it)
    assert a.sandwich_archs(1) != a.sandwich_archs(2)
    assert a.sandwich_archs(1)[0][1] == a.space.smallest()
    code = ('import sys; sys.path.insert(0, "tests"); from test_models import build_classifier; '
            'print([a.to_text() for _, a in build_classifier(seed=3).sandwich_archs(7)])')
    outs = {
        subprocess.run([sys.executable, '-c', code],
                       capture_output=True,
                       text=True,
                       check=True,
                       env=dict(os.environ, PYTHONHASHSEED=str(h))).stdout
        for h in (1, 2)
    }
    assert len(outs) == 1
    assert outs.pop().strip() == str([x.to_text() for _, x in a.sandwich_archs(7)])


def test_static_subnet_any_size():
    net = NASBNNSubnet('A', out_indices=(1, 2, 3, 4)).eval()
    with torch.no_grad():
        outs = net(torch.randn(1, 3, 37, 61))
    assert [o.shape[1] for o in outs] == [96, 192, 384, 768]
    assert [tuple(o.shape[2:]) for o in outs] == [(10, 16), (5, 8), (3, 4), (2, 2)]
