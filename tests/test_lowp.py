"""The exact low-precision binary convolutions (nasbnn_mm.ops.lowp).

* forward: for random layers of the Table-1 space (kernels 1/3/5, its groups and widths, strides 1/2,
  odd input sizes, the supernet's slicing and kernel transforms), the 'bf16' path equals the float64
  reference rounded once to float32, bit for bit; the 'fp32' path's error is nowhere smaller;
* gradients: 'bf16' with a float32 backward equals the 'fp32' path's backward bit for bit; the
  split backwards agree with it to 1e-4 relative, norm-wise per tensor, with every bfloat16 operand
  rounded in Python (EMULATE_BF16_ROUNDING: what a bfloat16 machine computes, on any machine);
* a supernet sandwich step (small input) gives the same losses to 1e-5 relative, and the same
  parameters to 1e-4, on every path;
* memory: the 'bf16' path saves no more for backward than the 'fp32' path;
* API: one-line errors, 'auto' by hardware, exact_parity forces 'fp32', the setting reaches every
  binary conv (supernet, static subnet, detection backbone and neck), the math mode is restored.
"""
import copy
import random

import pytest
import torch
import torch.nn.functional as F

from nasbnn_mm.models import NASBNNSubnet, NASBNNSupernet
from nasbnn_mm.ops import BINARY, TEACHER, SharedBinaryConv2d, lowp
from nasbnn_mm.space import SearchSpace

TABLE1 = SearchSpace.table1()
GRAD_TOL = 1e-4


@pytest.fixture
def emulate(monkeypatch):
    monkeypatch.setattr(lowp, 'EMULATE_BF16_ROUNDING', True)


def _random_layers(n, seed=0):
    """(c_in, c_out, kernel, groups, stride, size, supernet) drawn from the Table-1 stages."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        st = TABLE1.stages[rng.randrange(TABLE1.num_stages)]
        c_in = rng.choice(st.widths)
        pointwise = i % 3 == 2
        kernel = 1 if pointwise else rng.choice(st.kernels)
        groups = 1 if pointwise else rng.choice([g for g in st.groups if c_in % g == 0])
        c_out = rng.choice([w for w in st.widths if w >= c_in]) if pointwise else c_in
        stride = 1 if pointwise else rng.choice((1, 2))
        size = rng.choice((3, 5, 7, 9, 11))
        out.append((c_in, c_out, kernel, groups, stride, size, st, i % 2 == 0))
    return out


LAYERS = _random_layers(12)


def _conv(layer, seed):
    c_in, c_out, kernel, groups, stride, size, st, dynamic = layer
    torch.manual_seed(seed)
    if dynamic and kernel > 1:  # the supernet's conv: slicing, kernel transform / Bi-Transformation
        conv = SharedBinaryConv2d(max(st.widths), max(st.widths), st.kernels, st.groups)
        with torch.no_grad():
            for p in list(conv.kernel_transforms.values()) + [conv.bi_transform]:
                p.add_(0.1 * torch.randn_like(p))
    else:
        conv = SharedBinaryConv2d(c_in, c_out, (kernel, ), (groups, ))
    return conv


def _signs(shape, seed):
    """±1 activations with some zeros (RSign's sign(0) = 0), channels_last like the backbones'."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 2, shape, generator=g).float().mul_(2).sub_(1)
    x[torch.rand(shape, generator=g) < 0.02] = 0
    return x.contiguous(memory_format=torch.channels_last)


def _run(conv, layer, x, precision, grad='fp32', g=None):
    c_in, c_out, kernel, groups, stride, *_ = layer
    conv = copy.deepcopy(conv)
    conv.conv_precision, conv.conv_grad = precision, grad
    x = x.clone().requires_grad_(g is not None)
    y = conv(x, c_out, kernel, groups, stride, BINARY)
    if g is None:
        return y.detach(), None
    y.backward(g)
    grads = {'x': x.grad}
    grads.update({n: p.grad for n, p in conv.named_parameters() if p.grad is not None})
    return y.detach(), grads


@pytest.mark.parametrize('i', range(len(LAYERS)))
def test_bf16_forward_is_the_exact_value(i):
    layer = LAYERS[i]
    c_in, c_out, kernel, groups, stride, size, _, _ = layer
    conv = _conv(layer, i)
    x = _signs((2, c_in, size, size), i)
    with torch.no_grad():
        w = conv.effective_weight(c_in, c_out, kernel, groups, BINARY, memory_format=torch.channels_last)
        exact = F.conv2d(x.double(), w.double(), None, stride, kernel // 2, 1, groups)  # integers x alpha, exact
    bf16, _ = _run(conv, layer, x, 'bf16')
    fp32, _ = _run(conv, layer, x, 'fp32')
    assert bf16.dtype == torch.float32 and bf16.shape == exact.shape
    assert torch.equal(bf16, exact.float()), f'layer {layer[:6]}'
    # the float32 path rounds every partial sum: its error is nowhere smaller than the one rounding
    err_fp32, err_bf16 = (fp32.double() - exact).abs(), (bf16.double() - exact).abs()
    assert bool((err_fp32 >= err_bf16).all())


@pytest.mark.parametrize('i', range(0, len(LAYERS), 2))
def test_gradients_within_tolerance_of_fp32(i, emulate):
    layer = LAYERS[i]
    c_in, c_out, kernel, groups, stride, size, _, _ = layer
    conv = _conv(layer, i)
    x = _signs((2, c_in, size, size), i)
    out_size = (size + 2 * (kernel // 2) - kernel) // stride + 1
    g = torch.randn(2, c_out, out_size, out_size, generator=torch.Generator().manual_seed(i))
    g = g.contiguous(memory_format=torch.channels_last)
    _, ref = _run(conv, layer, x, 'fp32', g=g)
    _, same = _run(conv, layer, x, 'bf16', 'fp32', g=g)
    for k in ref:  # the float32 backward of the bf16 path is the fp32 path's backward, bit for bit
        assert torch.equal(same[k], ref[k]), k
    for grad in ('bf16x2', 'bf16x3'):
        _, got = _run(conv, layer, x, 'bf16', grad, g=g)
        assert set(got) == set(ref)
        for k, r in ref.items():
            e = ((got[k] - r).norm() / r.norm()).item()
            assert e <= GRAD_TOL, f'{grad} {k}: {e:.2e} (layer {layer[:6]})'
            if grad == 'bf16x2':
                assert e > 0  # the emulated rounding is in effect


def test_teacher_mode_is_the_fp32_path():
    layer = LAYERS[1]
    c_in, c_out, kernel, groups, stride, size, _, _ = layer
    conv = _conv(layer, 0)
    x = _signs((2, c_in, size, size), 0)
    outs = []
    for p in ('fp32', 'bf16'):
        conv.conv_precision = p
        outs.append(conv(x, c_out, kernel, groups, stride, TEACHER))
    assert torch.equal(outs[0], outs[1])


def test_float64_through_the_bf16_path():
    layer = LAYERS[0]
    c_in, c_out, kernel, groups, stride, size, _, _ = layer
    conv = _conv(layer, 0).double()
    x = _signs((2, c_in, size, size), 0).double()
    y, _ = _run(conv, layer, x, 'bf16')
    w = conv.effective_weight(c_in, c_out, kernel, groups, BINARY, memory_format=torch.channels_last)
    ref = F.conv2d(x, w.detach(), None, stride, kernel // 2, 1, groups)
    assert y.dtype == torch.float64 and torch.allclose(y, ref, rtol=1e-12, atol=1e-12)


def test_math_mode_restored():
    mk = torch.backends.mkldnn.conv
    layer = LAYERS[0]
    c_in, c_out, kernel, groups, stride, size, _, _ = layer
    conv = _conv(layer, 0)
    before = mk.fp32_precision
    x = _signs((1, c_in, size, size), 0)
    for grad in ('fp32', 'bf16x2'):
        _run(conv, layer, x, 'bf16', grad, g=torch.ones(1, c_out, (size - 1) // stride + 1, (size - 1) // stride + 1))
        assert mk.fp32_precision == before
    try:
        with pytest.raises(RuntimeError):
            with lowp._bf16_math(torch.device('cpu')):
                assert mk.fp32_precision == 'bf16'
                raise RuntimeError('inside')
        assert mk.fp32_precision == before
    finally:
        mk.fp32_precision = before


def test_bf16_path_saves_no_more_for_backward():
    layer = LAYERS[2]
    c_in, c_out, kernel, groups, stride, size, _, _ = layer
    conv = _conv(layer, 0)
    x = _signs((2, c_in, 16, 16), 0)

    def saved_bytes(precision, grad):
        total = []

        def pack(t):
            total.append(t.numel() * t.element_size())
            return t

        c = copy.deepcopy(conv)
        c.conv_precision, c.conv_grad = precision, grad
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            c(x.clone().requires_grad_(), c_out, kernel, groups, stride, BINARY)
        return sum(total)

    ref = saved_bytes('fp32', 'fp32')  # the sign input and the effective weight
    assert saved_bytes('bf16', 'fp32') <= ref
    assert saved_bytes('bf16', 'bf16x2') <= ref + 4 * c_out  # the signs of the weight, and alpha


# ----------------------------------------------------------------------------- a supernet step
SMALL = 'configs/_base_/search_spaces/cifar_small.py'


def _sandwich_step(precision, grad):
    """One sandwich step (teacher + smallest + 2 random, Adam) of the CPU configs' supernet at 32 px:
    its losses and the gradients the optimizer steps with."""
    from mmengine.logging import MessageHub
    from mmengine.optim import OptimWrapper
    from mmpretrain.structures import DataSample

    import nasbnn_mm  # noqa: F401
    from nasbnn_mm.registry import MODELS
    space = SearchSpace.build(SMALL)
    torch.manual_seed(0)
    model = MODELS.build(
        dict(
            type='nasbnn.SandwichClassifier',
            backbone=dict(
                type='nasbnn.NASBNNSupernet',
                search_space=space.to_dict(),
                binary_conv_precision=precision,
                binary_conv_grad=grad),
            neck=dict(type='mmpretrain.GlobalAveragePooling'),
            head=dict(type='nasbnn.SlicedLinearClsHead', num_classes=10, in_channels=max(space.stages[-1].widths)),
            num_random=2,
            data_preprocessor=dict(type='mmpretrain.ClsDataPreprocessor'))).train()
    grads = {}

    class Recording(OptimWrapper):

        def step(self, **kwargs):
            grads.update({k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None})
            return super().step(**kwargs)

    optim = Recording(torch.optim.Adam(model.parameters(), lr=1e-3))
    g = torch.Generator().manual_seed(0)
    data = dict(
        inputs=(torch.rand(4, 3, 32, 32, generator=g) * 255).to(torch.uint8),
        data_samples=[DataSample().set_gt_label(i) for i in (3, 7, 1, 0)])
    MessageHub.get_current_instance().update_info('iter', 0)
    losses = {k: v.item() for k, v in model.train_step(data, optim).items()}
    return losses, grads


def test_supernet_step_agrees_on_every_path(emulate):
    """Losses to 1e-5 relative, the step's summed gradients to 1e-4 (norm-wise per tensor). Later
    steps are not compared: a binary network's float32 training is chaotic (a 1e-6 relative
    perturbation of the float32 path's own parameters flips sign activations and moves the next
    losses by percents; Adam's first update is about lr * sign(gradient), so gradient entries at
    rounding level already differ by 2 * lr), whichever path runs."""
    ref_losses, ref_grads = _sandwich_step('fp32', 'fp32')
    for precision, grad in (('bf16', 'fp32'), ('bf16', 'bf16x2'), ('bf16', 'bf16x3')):
        losses, grads = _sandwich_step(precision, grad)
        for k, v in ref_losses.items():
            assert abs(losses[k] - v) <= 1e-5 * abs(v), f'{precision}/{grad} {k}: {losses[k]} vs {v}'
        assert set(grads) == set(ref_grads)
        for k, v in ref_grads.items():
            e = ((grads[k] - v).norm() / v.norm()).item() if v.norm() > 0 else grads[k].norm().item()
            assert e <= GRAD_TOL, f'{precision}/{grad} {k}: {e:.2e}'


# ----------------------------------------------------------------------------- API
def _precisions(module):
    return {(m.conv_precision, m.conv_grad) for m in module.modules() if isinstance(m, SharedBinaryConv2d)}


@pytest.mark.parametrize('field,value', [('binary_conv_precision', 'int8'), ('binary_conv_precision', None),
                                         ('binary_conv_grad', 'bf16'), ('binary_conv_grad', 2)])
def test_bad_values_are_one_line_errors(field, value):
    small = SMALL
    with pytest.raises(ValueError) as e:
        NASBNNSupernet(small, **{field: value})
    msg = str(e.value)
    assert '\n' not in msg and msg.startswith(f'{field}: {value!r} not allowed (allowed: ')
    with pytest.raises(ValueError, match=f'^{field}: '):
        NASBNNSubnet('smallest', small, **{field: value})


def test_exact_parity_forces_fp32():
    small = SMALL
    net = NASBNNSupernet(small, exact_parity=True)
    assert _precisions(net) == {('fp32', 'auto')}
    assert _precisions(net.get_active_subnet('smallest')) == {('fp32', 'auto')}
    with pytest.raises(ValueError, match="^binary_conv_precision: 'bf16' not allowed with exact_parity=True"):
        NASBNNSupernet(small, exact_parity=True, binary_conv_precision='bf16')


def test_setting_reaches_every_binary_conv():
    small = SMALL
    net = NASBNNSupernet(small, binary_conv_precision='bf16', binary_conv_grad='bf16x3')
    assert _precisions(net) == {('bf16', 'bf16x3')}
    sub = net.get_active_subnet('smallest')
    assert _precisions(sub) == {('bf16', 'bf16x3')} and sub.binary_conv_precision == 'bf16'
    assert _precisions(NASBNNSubnet('smallest', small)) == {('auto', 'auto')}
    assert 'binary_conv_precision' not in net.settings()  # not a checkpoint-numerics setting
    pytest.importorskip('mmdet')
    from nasbnn_mm.det import NASBNNDetBackbone
    from nasbnn_mm.det.heads import BinaryFPN, BinaryRPNHead
    det = NASBNNDetBackbone('smallest', small, binary_conv_precision='fp32', binary_conv_grad='bf16x2')
    assert _precisions(det) == {('fp32', 'bf16x2')}
    fpn = BinaryFPN([16, 24], 16, 2, binary_conv_precision='bf16')
    assert _precisions(fpn) == {('bf16', 'auto')}
    rpn = BinaryRPNHead(16, 1, binary_conv_precision='bf16', binary_conv_grad='fp32')
    assert _precisions(rpn) == {('bf16', 'fp32')}


def test_auto_follows_the_hardware(monkeypatch):
    cpu = torch.device('cpu')
    monkeypatch.setattr(lowp, '_resolved', {})
    monkeypatch.setattr(lowp, '_cpu_flags', lambda: dict(amx_bf16=True, avx512_bf16=True))
    assert lowp.resolve_precision('auto', 'auto', cpu) == ('bf16', 'bf16x2')
    assert lowp.resolve_precision('auto', 'fp32', cpu) == ('bf16', 'fp32')
    monkeypatch.setattr(lowp, '_resolved', {})
    monkeypatch.setattr(lowp, '_cpu_flags', lambda: dict(amx_bf16=False, avx512_bf16=True))
    assert lowp.resolve_precision('auto', 'auto', cpu) == ('fp32', 'fp32')
    assert lowp.resolve_precision('bf16', 'auto', cpu) == ('bf16', 'fp32')  # forced: exact, float32 backward
    assert lowp.resolve_precision('bf16', 'bf16x3', cpu) == ('bf16', 'bf16x3')
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda d=None: 'GPU')
    for cap, want in (((8, 0), ('bf16', 'bf16x2')), ((7, 5), ('fp32', 'fp32'))):
        monkeypatch.setattr(lowp, '_resolved', {})
        monkeypatch.setattr(torch.cuda, 'get_device_capability', lambda d=None, cap=cap: cap)
        assert lowp.resolve_precision('auto', 'auto', torch.device('cuda', 0)) == want


def test_choice_logged_once(monkeypatch):
    logged = []
    import mmengine.logging
    monkeypatch.setattr(mmengine.logging, 'print_log', lambda msg, logger=None: logged.append(msg))
    monkeypatch.setattr(lowp, '_resolved', {})
    monkeypatch.setattr(lowp, '_logged', set())
    layer = LAYERS[0]
    conv = _conv(layer, 0)
    x = _signs((1, layer[0], 5, 5), 0)
    for _ in range(3):
        _run(conv, layer, x, 'bf16')
    assert len(logged) == 1 and 'binary_conv_precision=bf16' in logged[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device')
def test_cuda_forward_exact():
    for i, layer in enumerate(LAYERS[:6]):
        c_in, c_out, kernel, groups, stride, size, _, _ = layer
        conv = _conv(layer, i).cuda()
        x = _signs((2, c_in, size, size), i).cuda()
        w = conv.effective_weight(c_in, c_out, kernel, groups, BINARY, memory_format=torch.channels_last).detach()
        exact = F.conv2d(x.double().cpu(), w.double().cpu(), None, stride, kernel // 2, 1, groups)
        y, _ = _run(conv, layer, x, 'bf16')
        assert torch.equal(y.cpu(), exact.float())
