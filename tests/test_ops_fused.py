"""The fused autograd Functions of nasbnn_mm.ops / models.blocks against plain autograd formulas.

Every reference below is written with ordinary differentiable torch ops (surrogate gradients
via the ``value.detach() + (f - f.detach())`` trick), independently of the fused code: RSign,
RPReLU, the two sign STEs, channel-wise weight normalization (+ binarization), BN with a
folded bias, the in-place shortcut, one separable layer, and a small supernet at 32 px
(outputs and the gradients of every parameter). Float64 checks are tight; float32 checks
allow float rounding.
"""
import math
import random

import pytest
import torch
import torch.nn.functional as F

from nasbnn_mm.models import NASBNNSupernet, SeparableBinaryLayer
from nasbnn_mm.models.blocks import _add_shortcut_
from nasbnn_mm.ops import (BINARY, TEACHER, RPReLU, RSign, SharedBinaryConv2d, SlicedBatchNorm2d, approx_sign,
                           binarize_weight, normalize_weight, sign_ste)
from nasbnn_mm.ops.dynamic_conv import normalize_binarize_weight

SMALL_SPACE = 'configs/_base_/search_spaces/cifar_small.py'
TOL = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=1e-5, atol=1e-5)}


# ----------------------------------------------------------------------------- references
def ref_approx_sign(u):
    """sign(u); gradient 2 - 2|u| for |u| <= 1, else 0."""
    sur = torch.where(u.abs() <= 1, 2 * u - u * u.abs(), u.sign())
    return u.sign().detach() + (sur - sur.detach())


def ref_sign_ste(w):
    """sign(w); gradient 1 for |w| <= 1, else 0."""
    sur = torch.where(w.abs() <= 1, w, w.detach())
    return w.sign().detach() + (sur - sur.detach())


def cview(v, c):
    return v[:c].view(1, c, 1, 1)


def ref_rsign(x, b):
    return ref_approx_sign(x + cview(b, x.shape[1]))


def ref_rprelu(x, b1, a, b2):
    c = x.shape[1]
    return F.prelu(x + cview(b1, c), a[:c]) + cview(b2, c)


def ref_normalize(w, eps=1e-5, unbiased=False):
    dims = tuple(range(1, w.dim()))
    mean = w.mean(dim=dims, keepdim=True)
    var = w.var(dim=dims, keepdim=True, unbiased=unbiased)
    return (w - mean) / torch.sqrt(var + eps)


def ref_binarize(w_n):
    alpha = w_n.detach().abs().mean(dim=tuple(range(1, w_n.dim())), keepdim=True)
    return alpha * ref_sign_ste(w_n)


def ref_latent(conv, c_in, c_out, k, g):
    """The documented slicing formula, written independently (chunk / column blocks / crop)."""
    sub = c_in // g
    filters = conv.weight[:c_out, :c_in]
    K = conv.max_kernel
    if k < K:
        off = (K - k) // 2
        crop = filters[:, :, off:off + k, off:off + k]
        m = conv.kernel_transforms[f'k{k}']
        filters = (crop.reshape(-1, k * k) @ m.t()).reshape(crop.shape)
    R = filters.shape[1] // sub
    parts = [chunk[:, (i % R) * sub:(i % R) * sub + sub] for i, chunk in enumerate(torch.chunk(filters, g, 0))]
    return torch.cat(parts, 0)


def ref_weight(conv, c_in, c_out, k, g, mode):
    w = ref_latent(conv, c_in, c_out, k, g)
    if mode == BINARY and conv.bi_transform is not None and k == conv.max_kernel:
        w = (w.reshape(-1, k * k) @ conv.bi_transform.t()).reshape(w.shape)
    w_n = ref_normalize(w, conv.wn_eps, conv.wn_unbiased)
    return ref_binarize(w_n) if mode == BINARY else w_n


def ref_shortcut(x, out_channels, stride):
    if stride == 2:
        x = F.avg_pool2d(x, 2, 2, ceil_mode=True, count_include_pad=False)
    reps = math.ceil(out_channels / x.shape[1])
    return torch.cat([x] * reps, 1)[:, :out_channels]


def ref_bn(bn, x):
    c = x.shape[1]
    return F.batch_norm(x, None, None, bn.weight[:c], bn.bias[:c], True, 0.0, bn.eps)


def ref_layer(layer, x, width, k, g, mode):
    c = x.shape[1]
    s = ref_rsign(x, layer.sign1.bias)
    y = F.conv2d(s, ref_weight(layer.conv_kxk, c, c, k, g, mode), None, layer.stride, k // 2, 1, g)
    y = ref_bn(layer.bn1, y) + ref_shortcut(x, c, layer.stride)
    y = ref_rprelu(y, layer.act1.bias_in, layer.act1.slope, layer.act1.bias_out)
    s = ref_rsign(y, layer.sign2.bias)
    z = F.conv2d(s, ref_weight(layer.conv_1x1, c, width, 1, 1, mode))
    z = ref_bn(layer.bn2, z) + ref_shortcut(y, width, 1)
    return ref_rprelu(z, layer.act2.bias_in, layer.act2.slope, layer.act2.bias_out)


def ref_supernet(net, x, arch, mode):
    st = net.stem
    y = ref_bn(st.bn, st.conv(x, arch.stem.width))
    y = ref_rprelu(y, st.act.bias_in, st.act.slope, st.act.bias_out)
    for layers, choices in zip(net.stages, arch.stages):
        for layer, ch in zip(layers, choices):
            y = ref_layer(layer, y, ch.width, ch.kernel, ch.groups, mode)
    return y


# ----------------------------------------------------------------------------- helpers
def randomize_(module, seed=0):
    """Non-trivial values for every parameter (biases, slopes, transforms are 0 / identity at init)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in module.named_parameters():
            if p.dim() == 1 or 'transform' in n:
                p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def grads_of(fn, *tensors, grad_out=None, seed=0):
    """Output and gradients of fn(*tensors) for a fixed random output gradient."""
    ts = [t.detach().clone().requires_grad_() for t in tensors]
    out = fn(*ts)
    if grad_out is None:
        grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    out.backward(grad_out)
    return out.detach(), [t.grad for t in ts]


def assert_close(a, b, dtype):
    torch.testing.assert_close(a, b, **TOL[dtype])


def probe(shape, dtype, seed=0):
    """Random values plus the edge cases of the surrogates: exactly 0, +-1, just inside/outside."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=dtype) * 1.2
    edges = torch.tensor([0.0, 1.0, -1.0, 0.999, -0.999, 1.001, -1.001, 0.5], dtype=dtype)
    x.view(-1)[:edges.numel()] = edges
    return x


DTYPES = [torch.float64, torch.float32]


@pytest.fixture(autouse=True, scope='module')
def _one_thread():
    """Tiny tensors: one thread is faster and immune to OpenMP stalls on a loaded machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ----------------------------------------------------------------------------- activations
@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('c', [6, 4])  # full width and a sliced width of a 6-channel module
def test_rsign_matches_reference(dtype, c):
    m = randomize_(RSign(6).to(dtype))
    with torch.no_grad():
        m.bias[0] = 0.0  # keep the probed edge values (+-1, 0) at the sign's input
    x = probe((3, c, 5, 7), dtype)
    out, (gx, ) = grads_of(m, x)
    ref, (rgx, ) = grads_of(lambda t: ref_rsign(t, m.bias), x)
    assert torch.equal(out, ref)
    assert_close(gx, rgx, dtype)
    m.zero_grad()
    m(x).backward(torch.ones_like(x))
    b = m.bias.detach().clone().requires_grad_()
    ref_rsign(x, b).backward(torch.ones_like(x))
    assert_close(m.bias.grad, b.grad, dtype)


@pytest.mark.parametrize('dtype', DTYPES)
def test_approx_sign_and_weight_ste_match_reference(dtype):
    x = probe((4, 33), dtype)
    for fused, ref_fn in [(approx_sign, ref_approx_sign), (sign_ste, ref_sign_ste)]:
        out, (g, ) = grads_of(fused, x)
        ref, (rg, ) = grads_of(ref_fn, x)
        assert torch.equal(out, ref)
        assert_close(g, rg, dtype)
    w = torch.tensor([-1.0, 1.0, -1.0000001, 1.0000001, 0.0], dtype=torch.float32, requires_grad=True)
    sign_ste(w).backward(torch.ones_like(w))
    assert w.grad.tolist() == [1.0, 1.0, 0.0, 0.0, 1.0]  # |w| <= 1 inclusive


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('c', [5, 3])
def test_rprelu_matches_reference(dtype, c):
    m = randomize_(RPReLU(5).to(dtype))
    x = probe((2, c, 4, 6), dtype)
    with torch.no_grad():
        x[0, :, 0, 0] = -m.bias_in[:c]  # z == 0 exactly: PReLU takes the slope there
    params = [m.bias_in, m.slope, m.bias_out]

    def run(fn):
        for p in params:
            p.grad = None
        out, (gx, ) = grads_of(fn, x)
        return out, [gx] + [p.grad.clone() for p in params]

    out, grads = run(m)
    ref, rgrads = run(lambda t: ref_rprelu(t, *params))
    assert torch.equal(out, ref)
    for a, b in zip(grads, rgrads):
        assert_close(a, b, dtype)


# ----------------------------------------------------------------------------- weights
@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('eps,unbiased', [(1e-5, False), (0.0, False), (1e-5, True), (0.0, True)])
def test_weight_normalization_and_binarization_match_reference(dtype, eps, unbiased):
    w = torch.randn(6, 4, 3, 3, dtype=dtype) * 0.05 + 0.01
    for fused, ref in [(lambda t: normalize_weight(t, eps, unbiased), lambda t: ref_normalize(t, eps, unbiased)),
                       (lambda t: normalize_binarize_weight(t, eps, unbiased),
                        lambda t: ref_binarize(ref_normalize(t, eps, unbiased))),
                       (lambda t: binarize_weight(normalize_weight(t, eps, unbiased)),
                        lambda t: ref_binarize(ref_normalize(t, eps, unbiased)))]:
        out, (g, ) = grads_of(fused, w)
        r, (rg, ) = grads_of(ref, w)
        assert_close(out, r, dtype)
        assert_close(g, rg, dtype)


def test_weight_normalization_non_contiguous_slice():
    base = torch.randn(8, 6, 5, 5, dtype=torch.float64)
    out, (g, ) = grads_of(lambda t: normalize_binarize_weight(t[:5, :4]), base)
    r, (rg, ) = grads_of(lambda t: ref_binarize(ref_normalize(t[:5, :4])), base)
    assert_close(out, r, torch.float64)
    assert_close(g, rg, torch.float64)


@pytest.mark.parametrize('max_in,groups,c', [(48, (2, 4), 32), (48, (2, 4), 48), (96, (4, 8), 64), (96, (4, 8), 48),
                                             (24, (1, 2), 24)])
def test_group_slicing_matches_reference(max_in, groups, c):
    """Column-block selection (incl. the diagonal-view path and R = 3 cycles) and its gradient."""
    conv = SharedBinaryConv2d(max_in, max_in, (3, 5), groups).double()
    for g in groups:
        for k in (3, 5):
            out, grads = [], []
            for fn in (conv.latent_weight, lambda *a: ref_latent(conv, *a)):
                conv.zero_grad(set_to_none=True)
                w = fn(c, c, k, g)
                w.backward(torch.arange(w.numel(), dtype=w.dtype).view_as(w))
                out.append(w.detach())
                grads.append(conv.weight.grad)
            assert torch.equal(out[0], out[1]) and torch.equal(grads[0], grads[1])


# ----------------------------------------------------------------------------- sliced BN and shortcut
@pytest.mark.parametrize('c', [6, 4])
@pytest.mark.parametrize('training', [True, False])
def test_sliced_bn_matches_bn_of_the_slice(c, training):
    """BN over the first c channels of a 6-channel BN: a plain BatchNorm2d(c) holding that slice
    gives the same outputs, gradients and running statistics (which land in the slice)."""
    a = SlicedBatchNorm2d(6).double()
    randomize_(a)
    with torch.no_grad():
        a.running_mean.normal_()
    b = torch.nn.BatchNorm2d(c).double()
    with torch.no_grad():
        for name in ('weight', 'bias', 'running_mean', 'running_var'):
            getattr(b, name).copy_(getattr(a, name)[:c])
    a.train(training)
    b.train(training)
    x = torch.randn(3, c, 4, 4, dtype=torch.float64)
    out, (gx, ) = grads_of(a, x)
    ref, (rgx, ) = grads_of(b, x)
    assert_close(out, ref, torch.float64)
    assert_close(gx, rgx, torch.float64)
    assert_close(a.weight.grad[:c], b.weight.grad, torch.float64)
    assert_close(a.bias.grad[:c], b.bias.grad, torch.float64)
    assert torch.equal(a.running_mean[:c], b.running_mean) and torch.equal(a.running_var[:c], b.running_var)


@pytest.mark.parametrize('c_in,c_out,stride,hw', [(4, 4, 1, 6), (4, 4, 2, 7), (3, 8, 1, 5), (4, 6, 1, 5), (6, 4, 1, 5),
                                                  (4, 10, 2, 9)])
def test_inplace_shortcut_matches_reference(c_in, c_out, stride, hw):
    x = torch.randn(2, c_in, hw, hw, dtype=torch.float64)
    ho = -(-hw // stride)
    y = torch.randn(2, c_out, ho, ho, dtype=torch.float64)
    # y is a non-leaf (as the BN output it stands for), so it can be written in place
    out, (gy, gx) = grads_of(lambda a, b: _add_shortcut_(a * 1.0, b, stride), y, x)
    ref, (rgy, rgx) = grads_of(lambda a, b: a + ref_shortcut(b, c_out, stride), y, x)
    assert_close(out, ref, torch.float64)
    assert_close(gy, rgy, torch.float64)
    assert_close(gx, rgx, torch.float64)


# ----------------------------------------------------------------------------- whole layer / supernet
LAYER_CASES = [  # max_in, max_out, kernels, groups, stride, c_in, width, k, g, mode
    (8, 8, (3, ), (1, ), 1, 8, 8, 3, 1, TEACHER),
    (8, 12, (3, 5), (1, 2), 2, 6, 12, 5, 2, BINARY),
    (12, 12, (3, 5), (2, 4), 1, 8, 12, 3, 4, BINARY),
    (12, 16, (3, 5), (2, 4), 1, 12, 16, 5, 2, TEACHER),
]


@pytest.mark.parametrize('case', LAYER_CASES)
@pytest.mark.parametrize('hooked', [False, True])
def test_separable_layer_matches_reference(case, hooked):
    mi, mo, ks, gs, st, c, width, k, g, mode = case
    torch.manual_seed(0)
    layer = randomize_(SeparableBinaryLayer(mi, mo, ks, gs, st).double().train())
    if hooked:  # a forward hook on the BN disables the fused path
        layer.bn1.register_forward_hook(lambda *a: None)
    x = torch.randn(3, c, 7, 7, dtype=torch.float64)
    params = dict(layer.named_parameters())
    gen = torch.Generator().manual_seed(1)
    gout = None
    results = []
    for fn in (lambda t: layer(t, width, k, g, mode), lambda t: ref_layer(layer, t, width, k, g, mode)):
        layer.zero_grad(set_to_none=True)
        xx = x.clone().requires_grad_()
        out = fn(xx)
        if gout is None:
            gout = torch.randn(out.shape, generator=gen, dtype=out.dtype)
        out.backward(gout)
        results.append((out.detach(), xx.grad, {n: p.grad for n, p in params.items()}))
    (o, gx, gp), (ro, rgx, rgp) = results
    assert_close(o, ro, torch.float64)
    assert_close(gx, rgx, torch.float64)
    assert gp.keys() == rgp.keys()
    for n in gp:
        if rgp[n] is None:
            assert gp[n] is None or not gp[n].any(), n
        else:
            assert_close(gp[n], rgp[n], torch.float64)


def _close_to_scale(a, b, rel):
    """max |a - b| <= rel * max |b| (float32 through a deep binary net: rounding gets amplified
    wherever a value sits next to a sign threshold, so element-wise rtol is too strict)."""
    assert (a - b).abs().max().item() <= rel * b.abs().max().item() + 1e-12


@pytest.mark.parametrize('dtype', DTYPES)
def test_small_supernet_outputs_and_gradients_match_reference_32px(dtype):
    torch.manual_seed(0)
    net = randomize_(NASBNNSupernet(SMALL_SPACE).to(dtype).train())
    net.stem.conv.init_step()
    sp = net.space
    x = torch.randn(2, 3, 32, 32, dtype=dtype)
    archs = [(sp.largest(), TEACHER), (sp.smallest(), BINARY), (sp.sample(random.Random(3)), BINARY)]
    if dtype == torch.float32:
        archs = archs[1:]
    params = dict(net.named_parameters())
    for arch, mode in archs:
        grads = []
        for use_ref in (False, True):
            net.zero_grad(set_to_none=True)
            net.set_subnet(arch, mode)
            out = ref_supernet(net, x, arch, mode) if use_ref else net(x)[-1]
            out.backward(torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out))
            grads.append((out.detach(), {n: p.grad for n, p in params.items()}))
        (o, gp), (ro, rgp) = grads
        check = (lambda a, b: assert_close(a, b, dtype)) if dtype == torch.float64 else \
            (lambda a, b: _close_to_scale(a, b, 1e-4))
        check(o, ro)
        for n in gp:
            if rgp[n] is None:
                assert gp[n] is None or not gp[n].any(), n
            else:
                assert gp[n] is not None, n
                check(gp[n], rgp[n])
