"""The exact binary conv kernels of nasbnn_mm/deploy (bitconv.cpp + bitconv.py) against the float64
reference ``F.conv2d(sign(x + b), w) * alpha``: every backend and every popcount dispatch path
(forced) must give bitwise the same float32 output, on Table-1 shapes (kernels 1/3/5, groups
1..16, channel counts that are not multiples of 64), odd and tiny maps (border pixels), batch 1
and 3, exact zeros of x + b, NCHW and NHWC inputs and outputs."""
import json
import random
import shutil
import sys
import types

import numpy as np
import pytest
import torch

try:
    import nasbnn_mm  # noqa: F401
except ImportError:  # the OpenMMLab stack is not installed: the deploy kernels need torch only
    _pkg = types.ModuleType('nasbnn_mm')
    _pkg.__path__ = [__import__('os').path.join(__import__('os').path.dirname(__file__), '..', 'nasbnn_mm')]
    sys.modules['nasbnn_mm'] = _pkg

from nasbnn_mm.deploy import bitconv as bc  # noqa: E402

HAS_COMPILER = shutil.which('c++') is not None or shutil.which('g++') is not None
needs_native = pytest.mark.skipif(not HAS_COMPILER, reason='no C++ compiler: the popcount kernels cannot be built')

# Table 1: (in widths of the stage's first layer incl. the previous stage, widths, kernels, groups, stride)
_STAGES = [
    ((24, 32, 48), (48, 64, 96), (3, ), (1, ), 1),
    ((48, 64, 96), (96, 128, 192), (3, 5), (1, 2), 2),
    ((96, 128, 192), (192, 256, 384), (3, 5), (2, 4), 2),
    ((192, 256, 384), (384, 512, 768), (3, 5), (4, 8), 2),
    ((384, 512, 768), (768, 1024, 1536), (3, 5), (8, 16), 2),
]
_SIZES = (1, 2, 3, 5, 7, 13, 15)
_MAX_MACS = 1.2e7  # per case: keeps the float64 reference and the scalar path quick


def _table1_cases(n: int, seed: int = 0):
    """(cin, cout, k, groups, stride, h, w, batch) drawn from Table-1 choices, kxk group convs and 1x1."""
    rng = random.Random(seed)
    cases = []
    while len(cases) < n:
        ins, widths, kernels, groups, stride = rng.choice(_STAGES)
        if rng.random() < 0.6:  # the k x k group conv: in = out
            c = rng.choice(ins + widths)
            case = [
                c, c,
                rng.choice(kernels + (5, ) if rng.random() < 0.2 else kernels),
                rng.choice(groups),
                rng.choice((1, stride))
            ]
        else:  # the 1x1: in -> out, groups 1
            case = [rng.choice(ins + widths), rng.choice(widths), 1, 1, 1]
        cin, cout, k, g, _ = case
        batch = rng.choice((1, 3))
        per_pixel = cout * (cin // g) * k * k
        h = rng.choice([v for v in _SIZES if batch * v * per_pixel <= _MAX_MACS] or [1])
        w = rng.choice([v for v in _SIZES if batch * h * v * per_pixel <= _MAX_MACS] or [1])
        cases.append(tuple(case) + (h, w, batch))
    return cases


# a few cases picked on purpose: tails, 16 groups, everything on the border, stride 2 on odd maps
_HAND = [
    (24, 24, 3, 1, 1, 7, 7, 1),  # 24 channels: 40 unused bits per word
    (130, 130, 5, 2, 2, 5, 5, 3),  # 65 per group: two words, the second 1 bit; 65 outputs: a 1-lane block
    (768, 768, 3, 16, 1, 7, 7, 1),  # 48 per group, 16 groups
    (1536, 1536, 5, 16, 2, 3, 3, 1),  # 96 per group; 3x3 map, k 5: every pixel on the border
    (384, 384, 5, 8, 2, 13, 15, 1),  # odd map, stride 2
    (1536, 1536, 1, 1, 1, 2, 3, 3),  # 24 words per pixel
    (200, 72, 1, 1, 2, 15, 13, 1),  # 1x1 stride 2, tails on both sides
    (96, 96, 3, 4, 1, 1, 1, 3),  # 1x1 map: only the centre tap is inside
    (40, 40, 1, 8, 1, 5, 5, 1),  # 5 channels per group, grouped 1x1
]
CASES = _HAND + _table1_cases(28)


def _data(cin, cout, k, g, h, w, batch, seed, zeros=False):
    gen = torch.Generator().manual_seed(seed)
    sign = torch.randint(0, 2, (cout, cin // g, k, k), generator=gen).float() * 2 - 1
    alpha = torch.rand(cout, generator=gen) * 0.2 + 1e-3
    x = torch.randn(batch, cin, h, w, generator=gen)
    b = torch.randn(cin, generator=gen) * 0.3
    if zeros:  # exact x + b == 0 at scattered places (and a whole channel of one image)
        mask = torch.rand(batch, cin, h, w, generator=gen) < 0.15
        x = torch.where(mask, -b.view(1, -1, 1, 1).expand_as(x), x)
        x[0, cin // 2] = -b[cin // 2]
    return sign, alpha, x, b


def _case_id(c):
    return '{}>{}-k{}-g{}-s{}-{}x{}-n{}'.format(*c)


@pytest.fixture(scope='module')
def isas():
    if not HAS_COMPILER:
        pytest.skip('no C++ compiler')
    assert bc.bitconv_ops() is not None, 'the native bitconv kernels did not build (see the warning)'
    paths = bc.supported_isas()
    assert 'scalar' in paths
    return paths


# ---------------------------------------------------------------------------- popcount, every path
@needs_native
@pytest.mark.parametrize('case', CASES, ids=_case_id)
def test_popcount_paths_bitwise_equal_reference(case, isas):
    cin, cout, k, g, s, h, w, n = case
    zeros = hash(case) % 3 == 0
    sign, alpha, x, b = _data(cin, cout, k, g, h, w, n, seed=sum(case), zeros=zeros)
    ref = bc.reference_binary_conv(x, sign, alpha, g, s, b)
    assert ref.shape == (n, cout, -(-h // s), -(-w // s))
    for isa in isas:
        for out_layout in bc.LAYOUTS:
            kern = bc.BinaryConvKernel(sign, alpha, g, s, 'popcount', out_layout=out_layout, isa=isa)
            assert kern.backend == 'popcount' and kern.dispatch_path() == isa
            for xin in (x, x.contiguous(memory_format=torch.channels_last)):
                out = kern(xin, b)
                assert out.dtype == torch.float32 and out.shape == ref.shape
                fmt = torch.channels_last if out_layout == 'nhwc' else torch.contiguous_format
                assert out.is_contiguous(memory_format=fmt)
                assert torch.equal(out, ref), f'{isa} {out_layout} in-{"nhwc" if xin is not x else "nchw"}'


@needs_native
@pytest.mark.parametrize('case', CASES[::4], ids=_case_id)
def test_exact_zeros_masked_path(case, isas):
    """x + b == 0 gives s = 0 (the masked kernel); also an all-zero input (output exactly 0 * alpha)."""
    cin, cout, k, g, s, h, w, n = case
    sign, alpha, x, b = _data(cin, cout, k, g, h, w, n, seed=7, zeros=True)
    ref = bc.reference_binary_conv(x, sign, alpha, g, s, b)
    ref0 = bc.reference_binary_conv(torch.zeros_like(x), sign, alpha, g, s, None)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    for isa in isas:
        kern = bc.BinaryConvKernel(sign, alpha, g, s, 'popcount', isa=isa)
        assert torch.equal(kern(x, b), ref) and torch.equal(kern(x_cl, b), ref)
        assert torch.equal(kern(torch.zeros_like(x)), ref0) and not ref0.any()


@needs_native
def test_negative_zero_and_nan(isas):
    """-0.0 (x = -0.0 with b = -0.0 or none) is a zero like +0.0; NaN counts as +1 on every path (the
    float reference gives NaN there: the kernels document NaN as not supported, but agree)."""
    cin, cout, k, g, s, h, w, n = 72, 40, 3, 1, 1, 6, 17, 2
    sign, alpha, x, b = _data(cin, cout, k, g, h, w, n, seed=9)
    x[0, :, 2, 3] = -0.0
    b_neg0 = b.clone()
    b_neg0[::4] = -0.0
    x[1, ::4] = -0.0  # -0.0 + -0.0 = -0.0: sign bit set, still a zero
    for bb in (None, b_neg0):
        ref = bc.reference_binary_conv(x, sign, alpha, g, s, bb)
        for isa in isas:
            for xin in (x, x.contiguous(memory_format=torch.channels_last)):
                assert torch.equal(bc.BinaryConvKernel(sign, alpha, g, s, 'popcount', isa=isa)(xin, bb), ref)
    xn = x.clone()
    xn[1, 5, 1, 1] = float('nan')
    xn[0, 7, 4, 16] = -float('nan')
    ref = bc.reference_binary_conv(torch.nan_to_num(xn, nan=1e30), sign, alpha, g, s, b)
    for isa in isas:
        for xin in (xn, xn.contiguous(memory_format=torch.channels_last)):
            assert torch.equal(bc.BinaryConvKernel(sign, alpha, g, s, 'popcount', isa=isa)(xin, b), ref)


# ---------------------------------------------------------------------------- the PyTorch backends
@needs_native
@pytest.mark.parametrize('case', CASES[::3], ids=_case_id)
def test_all_backends_bitwise_equal_reference(case, isas):
    cin, cout, k, g, s, h, w, n = case
    sign, alpha, x, b = _data(cin, cout, k, g, h, w, n, seed=3, zeros=True)
    ref = bc.reference_binary_conv(x, sign, alpha, g, s, b)
    backends = bc.available_backends(k, g)
    assert 'fp32' in backends and 'reference' in backends and ('int8_mm' in backends) == (k == 1 and g == 1)
    for backend in backends:
        for xin in (x, x.contiguous(memory_format=torch.channels_last)):
            out = bc.BinaryConvKernel(sign, alpha, g, s, backend)(xin, b)
            assert torch.equal(out, ref), backend


@needs_native
def test_fused_scale_shift_all_backends(isas):
    cin, cout, k, g, s, h, w, n = 96, 96, 3, 4, 1, 7, 9, 2
    sign, alpha, x, b = _data(cin, cout, k, g, h, w, n, seed=11, zeros=True)
    gen = torch.Generator().manual_seed(12)
    scale, shift = torch.randn(cout, generator=gen), torch.randn(cout, generator=gen)
    ref = bc.reference_binary_conv(x, sign, alpha, g, s, b, scale, shift)
    ref_s = bc.reference_binary_conv(x, sign, alpha, g, s, b, scale, None)
    # the reference is (float32(acc) * alpha) * scale + shift, rounded after each op
    plain = bc.reference_binary_conv(x, sign, alpha, g, s, b)
    assert torch.equal(ref, plain * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1))
    for backend in bc.available_backends(k, g):
        assert torch.equal(bc.BinaryConvKernel(sign, alpha, g, s, backend, scale=scale, shift=shift)(x, b), ref)
    for isa in isas:
        kern = bc.BinaryConvKernel(sign, alpha, g, s, 'popcount', scale=scale, isa=isa, out_layout='nchw')
        assert torch.equal(kern(x, b), ref_s)


@needs_native
def test_bigger_layers(isas):
    """Two layers of realistic size (many pixel tiles and channel tiles, several threads)."""
    for cin, cout, k, g, s, h, w, n in [(96, 96, 3, 1, 1, 56, 56, 1), (768, 1536, 1, 1, 1, 14, 14, 1)]:
        sign, alpha, x, b = _data(cin, cout, k, g, h, w, n, seed=5)
        x = x.contiguous(memory_format=torch.channels_last)
        ref = bc.reference_binary_conv(x, sign, alpha, g, s, b)
        for isa in [i for i in isas if i != 'scalar']:
            assert torch.equal(bc.BinaryConvKernel(sign, alpha, g, s, 'popcount', isa=isa)(x, b), ref)
        old = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            assert torch.equal(bc.BinaryConvKernel(sign, alpha, g, s, 'popcount')(x, b), ref)
        finally:
            torch.set_num_threads(old)


# ---------------------------------------------------------------------------- packing
@needs_native
def test_weight_packing_native_python_and_file_bits(isas):
    ops = bc.bitconv_ops()
    for cout, cpg, k, g in [(130, 65, 5, 2), (48, 24, 3, 2), (72, 200, 1, 1), (1536, 96, 3, 16)]:
        gen = torch.Generator().manual_seed(cout)
        neg = torch.rand(cout, cpg, k, k, generator=gen) < 0.5
        words = bc.pack_weight_words(neg, g)
        assert words.shape == (g, -(-(cout // g) // 16), k * k, -(-cpg // 32), 16) and words.dtype == torch.int32
        assert torch.equal(ops.pack_weights(neg, g), words)
        assert torch.equal(bc.unpack_weight_words(words, cout, cpg, k), neg)
        # the packed-checkpoint format: numpy.packbits (big bit order) of w > 0, C order
        sign = 1 - 2 * neg.float()
        alpha = torch.rand(cout, generator=gen)
        bits = np.packbits((sign > 0).numpy().ravel(), bitorder='big')
        a = bc.BinaryConvKernel.from_packed_bits(bits, sign.shape, alpha, g, 1, backend='popcount')
        b = bc.BinaryConvKernel(sign, alpha, g, 1, backend='popcount')
        assert torch.equal(a.sign_weight, sign) and torch.equal(a._words, b._words)
        x = torch.randn(1, cpg * g, 5, 5, generator=gen)
        assert torch.equal(a(x), b(x))
        # 1 bit per weight (plus word / lane padding) and the float32 alpha
        assert a.nbytes == words.numel() * 4 + cout * 4


@needs_native
@pytest.mark.parametrize('layout', ['nchw', 'nhwc'])
@pytest.mark.parametrize('c,g', [(130, 2), (72, 1), (144, 3)])
def test_activation_packing_layout(layout, c, g, isas):
    """The packed planes: bit c % 32 of word g*Wg + c // 32 at padded pixel (h + pad, w + pad)."""
    ops = bc.bitconv_ops()
    n, h, w, k = 2, 4, 19, 3
    x = torch.randn(n, c, h, w)
    b = torch.randn(c) * 0.2
    x[0, 3, 1, 2] = -b[3]
    if layout == 'nhwc':
        x = x.contiguous(memory_format=torch.channels_last)
    u = x + b.view(1, -1, 1, 1)
    for isa in isas:
        s, z, any_zero = ops.pack_activations(x, b, g, k, bc.ISAS.index(isa))
        cpg, wg, pad = c // g, -(-(c // g) // 32), k // 2
        assert s.shape == (n, h + 2 * pad, w + 2 * pad, g * wg) and s.dtype == torch.int32 and any_zero
        shape = (n, h + 2 * pad, w + 2 * pad, g, wg * 32)
        bits = ((s.long().unsqueeze(-1) >> torch.arange(32)) & 1).view(shape)
        zbits = ((z.long().unsqueeze(-1) >> torch.arange(32)) & 1).view(shape)
        inner = (slice(None), slice(pad, pad + h), slice(pad, pad + w))
        want_s = (u < 0).permute(0, 2, 3, 1).reshape(n, h, w, g, cpg).long()
        want_z = (u != 0).permute(0, 2, 3, 1).reshape(n, h, w, g, cpg).long()
        assert torch.equal(bits[inner][..., :cpg], want_s) and torch.equal(zbits[inner][..., :cpg], want_z)
        assert not bits[..., cpg:].any() and not zbits[..., cpg:].any()  # tail bits
        ring = torch.ones(h + 2 * pad, w + 2 * pad, dtype=torch.bool)
        ring[pad:pad + h, pad:pad + w] = False
        assert not s[:, ring].any() and not z[:, ring].any()
        assert not ops.pack_activations(x.abs() + 1, None, g, k, bc.ISAS.index(isa))[2]


# ---------------------------------------------------------------------------- dispatch, auto, errors
@needs_native
def test_dispatch_env_and_argument(isas, monkeypatch):
    for isa in isas:
        monkeypatch.setenv('NASBNN_BITCONV_ISA', isa)
        assert bc.dispatch_path() == isa
    monkeypatch.setenv('NASBNN_BITCONV_ISA', 'sse9')
    with pytest.raises(ValueError, match=r'NASBNN_BITCONV_ISA: .*allowed: scalar, avx2, avx512'):
        bc.dispatch_path()
    monkeypatch.delenv('NASBNN_BITCONV_ISA')
    assert bc.dispatch_path() == isas[-1]  # the best supported
    with pytest.raises(ValueError, match=r'isa: .*allowed'):
        bc.dispatch_path('neon')
    assert bc.popcount_peak('scalar', seconds=0.01) > 0


@needs_native
def test_auto_backend_tunes_once_and_caches(isas, tmp_path, monkeypatch):
    cache = tmp_path / 'autotune.json'
    monkeypatch.setenv('NASBNN_BITCONV_CACHE', str(cache))
    sign, alpha, x, b = _data(48, 48, 3, 1, 9, 9, 1, seed=1)
    kern = bc.BinaryConvKernel(sign, alpha, 1, 1)  # backend='auto'
    assert kern.backend == 'auto'
    out = kern(x, b)
    assert torch.equal(out, bc.reference_binary_conv(x, sign, alpha, 1, 1, b))
    assert kern.backend in bc.TUNED_BACKENDS and kern.last_tune['backend'] == kern.backend
    assert set(kern.last_tune['times_ms']) == {'popcount', 'int8', 'bf16', 'fp32'}
    entries = json.loads(cache.read_text())
    assert entries[kern.last_tune['key']]['backend'] == kern.backend
    assert bc.cpu_model() in kern.last_tune['key']
    # a second kernel of the same shape takes the cached choice without timing
    other = bc.BinaryConvKernel(sign, alpha, 1, 1)
    monkeypatch.setattr(other, 'tune', lambda *a, **k: pytest.fail('tuned again'))
    assert torch.equal(other(x, b), out) and other.backend == kern.backend
    # the helper for a layer shape
    res = bc.autotune_layer(24, 48, 1, 1, 1, 7, batch=2, threads=1, repeats=2)
    assert res['backend'] in res['times_ms'] and 'int8_mm' in res['times_ms']
    assert 'threads 1' in res['key'] and res['key'] in json.loads(cache.read_text())
    # no timing at all: popcount
    monkeypatch.setenv('NASBNN_BITCONV_AUTOTUNE', '0')
    monkeypatch.setenv('NASBNN_BITCONV_CACHE', str(tmp_path / 'other.json'))
    third = bc.BinaryConvKernel(sign, alpha, 1, 1)
    third(x, b)
    assert third.backend == 'popcount' and not (tmp_path / 'other.json').exists()


def test_python_fallback_without_native(monkeypatch):
    """NASBNN_BITCONV_NATIVE=0 (as without a compiler): no popcount, the PyTorch backends still exact."""
    monkeypatch.setenv('NASBNN_BITCONV_NATIVE', '0')
    monkeypatch.setenv('NASBNN_BITCONV_AUTOTUNE', '0')
    assert 'popcount' not in bc.available_backends() and bc.supported_isas() == []
    sign, alpha, x, b = _data(130, 130, 3, 2, 5, 6, 2, seed=2, zeros=True)
    ref = bc.reference_binary_conv(x, sign, alpha, 2, 2, b)
    kern = bc.BinaryConvKernel(sign, alpha, 2, 2)
    assert torch.equal(kern(x, b), ref) and kern.backend == 'fp32' and kern.dispatch_path() is None
    with pytest.raises(ValueError, match=r"backend: 'popcount' not available .*allowed: int8"):
        bc.BinaryConvKernel(sign, alpha, 2, 2, 'popcount')


@needs_native
def test_bad_input_messages(isas):
    sign, alpha, x, b = _data(48, 48, 3, 2, 5, 5, 1, seed=4)
    kern = bc.BinaryConvKernel(sign, alpha, 2, 1, 'popcount')
    with pytest.raises(ValueError, match=r'x: torch.float64 .*allowed: float32'):
        kern(x.double(), b)
    with pytest.raises(ValueError, match=r'x: 24 channels not allowed \(allowed: 48'):
        kern(x[:, :24], b)
    with pytest.raises(ValueError, match=r'threshold: .*allowed: float32 CPU tensor of shape \(48,\)'):
        kern(x, b[:5])
    with pytest.raises(ValueError, match=r"backend: 'gpu' not allowed \(allowed: auto, popcount"):
        bc.BinaryConvKernel(sign, alpha, 2, 1, 'gpu')
    with pytest.raises(ValueError, match=r"backend: 'int8_mm' not available .*k=3"):
        bc.BinaryConvKernel(sign, alpha, 2, 1, 'int8_mm')
    with pytest.raises(ValueError, match=r'stride: 3 not allowed \(allowed: 1, 2\)'):
        bc.BinaryConvKernel(sign, alpha, 2, 3)
    with pytest.raises(ValueError, match=r'groups: 5 not allowed'):
        bc.BinaryConvKernel(sign, alpha, 5, 1)
    with pytest.raises(ValueError, match=r'sign_weight: values other than ±1'):
        bc.BinaryConvKernel(sign * 0.5, alpha, 2, 1)
    with pytest.raises(ValueError, match=r'alpha: .*allowed: float32 CPU tensor of shape \(48,\)'):
        bc.BinaryConvKernel(sign, alpha.double(), 2, 1)
    with pytest.raises(ValueError, match=r"out_layout: 'chw' not allowed"):
        bc.BinaryConvKernel(sign, alpha, 2, 1, out_layout='chw')
    with pytest.raises(ValueError, match=r'bits: .*allowed: uint8'):
        bc.BinaryConvKernel.from_packed_bits(np.zeros(3, np.uint8), sign.shape, alpha, 2)
    # odd strides of x are fine (copied), the output still exact
    xs = torch.randn(1, 48, 10, 10)[:, :, ::2, ::2]
    assert torch.equal(kern(xs, b), bc.reference_binary_conv(xs, sign, alpha, 2, 1, b))


def test_deploy_imports_without_the_training_stack():
    """nasbnn_mm.deploy needs torch only: importable with nasbnn_mm as a bare namespace (as the benchmark
    does), without pulling in mmengine / mmpretrain / mmdet."""
    import os
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ('import sys, types; pkg = types.ModuleType("nasbnn_mm"); pkg.__path__ = [sys.argv[1] + "/nasbnn_mm"]; '
            'sys.modules["nasbnn_mm"] = pkg; import nasbnn_mm.deploy, nasbnn_mm.space; '
            'bad = [m for m in ("mmengine", "mmpretrain", "mmdet", "mmcv") if m in sys.modules]; '
            'assert not bad, bad; print("ok")')
    out = subprocess.run([sys.executable, '-c', code, root],
                         capture_output=True,
                         text=True,
                         timeout=120,
                         env={
                             **os.environ, 'NASBNN_BITCONV_NATIVE': '0'
                         })
    assert out.returncode == 0 and out.stdout.strip().endswith('ok'), out.stderr[-2000:]
