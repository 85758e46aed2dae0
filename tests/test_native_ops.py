"""The native one-pass CPU kernels (nasbnn_mm/ops/csrc/binary_act.cpp) against the ATen
reference path of RSign / RPReLU: element-wise results bitwise equal, per-channel sums close."""
import shutil

import pytest
import torch

from nasbnn_mm.ops import RPReLU, RSign, native

pytestmark = pytest.mark.skipif(
    shutil.which('c++') is None and shutil.which('g++') is None,
    reason='no C++ compiler: the native kernels cannot be built here')

LAYOUTS = {
    'nchw': ((3, 5, 6, 7), torch.contiguous_format),
    'nhwc': ((3, 5, 6, 7), torch.channels_last),
    'nc': ((9, 5), torch.contiguous_format),
    'nhwc-wide': ((2, 40, 3, 3), torch.channels_last),  # rows longer than the reduction lanes
    'nchw-big-plane': ((2, 3, 20, 21), torch.contiguous_format),
}


def _input(shape, fmt, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * 1.5
    flat = x.view(-1)
    flat[::7] = 0.0  # sign(0) and the PReLU kink
    flat[1::11] = 1.0  # |u| = 1: the ApproxSign window edge
    flat[2::13] = -1.0
    return x.contiguous(memory_format=fmt) if x.dim() == 4 else x


def _run(module, forward, x, grad, native_on, monkeypatch):
    monkeypatch.setenv('NASBNN_NATIVE_OPS', '1' if native_on else '0')
    module.zero_grad(set_to_none=True)
    xi = x.detach().clone(memory_format=torch.preserve_format).requires_grad_()
    y = forward(module, xi)
    y.backward(grad)
    return y.detach(), xi.grad, {n: p.grad for n, p in module.named_parameters()}


@pytest.fixture(scope='module')
def ops():
    o = native.native_ops()
    assert o is not None, 'the native kernels did not build (see the warning above)'
    return o


def _compare(make, forward, layout, monkeypatch, seed=0):
    shape, fmt = LAYOUTS[layout]
    x = _input(shape, fmt, seed)
    module = make(shape[1])
    with torch.no_grad():
        for p in module.parameters():  # non-trivial parameters, some exactly at the kinks
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(seed + 1)) * 0.5)
    grad = torch.randn(shape, generator=torch.Generator().manual_seed(seed + 2))
    grad = grad.contiguous(memory_format=fmt) if grad.dim() == 4 else grad
    y_n, gx_n, gp_n = _run(module, forward, x, grad, True, monkeypatch)
    y_r, gx_r, gp_r = _run(module, forward, x, grad, False, monkeypatch)
    assert torch.equal(y_n, y_r)
    assert torch.equal(gx_n, gx_r)
    assert y_n.is_contiguous(memory_format=fmt) and gx_n.is_contiguous(memory_format=fmt)
    for name in gp_r:
        torch.testing.assert_close(gp_n[name], gp_r[name], rtol=1e-5, atol=1e-5, msg=name)
    return y_n, gx_n


@pytest.mark.parametrize('layout', sorted(LAYOUTS))
def test_rsign_native_matches_reference(ops, layout, monkeypatch):
    _compare(RSign, lambda m, x: m(x), layout, monkeypatch)


@pytest.mark.parametrize('layout', sorted(LAYOUTS))
def test_rprelu_native_matches_reference(ops, layout, monkeypatch):
    _compare(RPReLU, lambda m, x: m(x), layout, monkeypatch, seed=3)


def test_sliced_parameters_and_frozen_parameters(ops, monkeypatch):
    """A wider module on fewer channels (supernet slicing) and parameters without gradients."""
    shape, fmt = LAYOUTS['nhwc']
    x = _input(shape, fmt, 5)
    grad = torch.randn(shape).contiguous(memory_format=fmt)
    for make in (lambda: RSign(8), lambda: RPReLU(8)):
        outs = []
        for on in (True, False):
            module = make()
            with torch.no_grad():
                for p in module.parameters():
                    p.copy_(torch.linspace(-0.7, 0.7, p.numel()))
            module.bias.requires_grad_(False) if isinstance(module, RSign) else module.slope.requires_grad_(False)
            outs.append(_run(module, lambda m, t: m(t), x, grad, on, monkeypatch))
        (y_n, gx_n, gp_n), (y_r, gx_r, gp_r) = outs
        assert torch.equal(y_n, y_r) and torch.equal(gx_n, gx_r)
        for name, g in gp_r.items():
            if g is None:
                assert gp_n[name] is None
            else:
                assert gp_n[name].shape == (8, ) and torch.all(gp_n[name][shape[1]:] == 0)
                torch.testing.assert_close(gp_n[name], g, rtol=1e-5, atol=1e-5)


def test_gradient_in_another_layout(ops, monkeypatch):
    """The incoming gradient may arrive contiguous for a channels_last activation."""
    shape, fmt = LAYOUTS['nhwc']
    x = _input(shape, fmt, 7)
    grad = torch.randn(shape)  # contiguous
    for make in (RSign, RPReLU):
        res = [_run(make(shape[1]), lambda m, t: m(t), x, grad, on, monkeypatch) for on in (True, False)]
        assert torch.equal(res[0][1], res[1][1])


def test_reference_path_for_other_dtypes_and_strides(ops, monkeypatch):
    """float64 and odd strides take the ATen path (no error, same results as with the kernels off)."""
    monkeypatch.setenv('NASBNN_NATIVE_OPS', '1')
    x64 = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    assert not native.supports(x64)
    odd = torch.randn(2, 4, 5, 6).transpose(2, 3)
    assert not native.supports(odd)
    m = RPReLU(4)
    y = m(odd)
    monkeypatch.setenv('NASBNN_NATIVE_OPS', '0')
    assert torch.equal(y, m(odd))


def test_switch_off(monkeypatch):
    monkeypatch.setenv('NASBNN_NATIVE_OPS', '0')
    assert native.native_ops() is None
