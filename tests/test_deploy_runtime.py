"""The 1-bit runtime (nasbnn_mm/deploy/runtime.py) computes the float deployed model's logits bitwise:
every backend and every popcount / glue instruction-set path, presets A-F and the CIFAR demo space's
subnets, odd and tiny inputs (border pixels, 1 x 1 final maps), batch 1 and 3, exact zeros of x + b,
the ATen fallbacks, from a model, an exported subnet.pth and a packed file; plus tools/infer.py."""
import json
import os
import random
import re
import runpy
import sys

import numpy as np
import pytest
import torch

import nasbnn_mm  # noqa: F401
from nasbnn_mm.deploy import BinaryRuntime, bn_mode, load_runtime, supported_isas
from nasbnn_mm.deploy.runtime import deployed_classifier
from nasbnn_mm.deploy.testing import random_deployed_classifier, zero_thresholds
from nasbnn_mm.models import load_packed, pack_subnet, save_packed, subnet_classifier_state
from nasbnn_mm.ops import PackedFormatError
from nasbnn_mm.space import SearchSpace
from nasbnn_mm.utils import publish_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL_SPACE = 'configs/_base_/search_spaces/cifar_small.py'
_MODELS = {}


@pytest.fixture(autouse=True)
def _autotune_cache(tmp_path, monkeypatch):
    """A private autotune cache; 'auto' without timing (it takes popcount, or fp32 without the native
    kernels) except where a test times on purpose."""
    monkeypatch.setenv('NASBNN_BITCONV_CACHE', str(tmp_path / 'autotune.json'))
    monkeypatch.setenv('NASBNN_BITCONV_AUTOTUNE', '0')


def preset_model(name, seed=0):
    key = (name, seed)
    if key not in _MODELS:
        _MODELS[key] = random_deployed_classifier(name, num_classes=10, seed=seed)
    return _MODELS[key]


def images(n, h, w, seed=0):
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def assert_same_logits(rt, model, x):
    with torch.no_grad():
        ref = model(x, mode='tensor')
    out = rt(x)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert ref.abs().max() > 0.1 and ref.std() > 0.01  # non-trivial logits
    assert torch.equal(out, ref), f'max |diff| {(out - ref).abs().max().item():.3g}, |ref| {ref.abs().max().item():.3g}'


# ----------------------------------------------------------------------------- presets, backends, paths
@pytest.mark.parametrize('preset', list('ABCDEF'))
def test_presets_bitwise(preset):
    model = preset_model(preset)
    rt = BinaryRuntime.from_deployed(model, backend='popcount')
    if preset == 'A':
        assert_same_logits(rt, model, images(1, 64, 64))
    assert_same_logits(rt, model, images(3, 33, 47, seed=1))  # odd sizes: 17x24 -> ... -> 2x2 maps
    assert set(rt.backends().values()) == {'popcount'} and len(rt.backends()) == 2 * sum(model.backbone.arch.depths)


@pytest.mark.parametrize('backend', ['popcount', 'int8', 'int8_mm', 'bf16', 'fp32', 'reference', 'auto'])
def test_every_backend(backend, monkeypatch):
    if backend == 'auto':
        monkeypatch.setenv('NASBNN_BITCONV_AUTOTUNE', '1')  # times the backends of every layer shape
    # the largest CIFAR-space subnet: kernels 3 and 5, groups 1..16, 8..128 channels (the kernel tests cover
    # the backends on Table-1 shapes layer by layer; here: the integration, quickly)
    space = SearchSpace.build(SMALL_SPACE)
    model = _MODELS.get('largest') or _MODELS.setdefault(
        'largest', random_deployed_classifier(space.largest(), SMALL_SPACE, num_classes=10, seed=2))
    rt = BinaryRuntime.from_deployed(model, backend=backend)
    assert_same_logits(rt, model, images(3, 37, 29, seed=2))
    used = set(rt.backends().values())
    if backend == 'int8_mm':  # 1x1 convs only; the k x k convs take 'auto'
        assert 'int8_mm' in used
    elif backend != 'auto':
        assert used == {backend}
    else:
        assert used and 'auto' not in used


@pytest.mark.parametrize('isa', ['scalar', 'avx2', 'avx512'])
def test_forced_instruction_set_paths(isa):
    if isa not in supported_isas():
        pytest.skip(f'{isa} not supported here')
    model = preset_model('B')
    rt = BinaryRuntime.from_deployed(model, backend='popcount', isa=isa)
    assert all(c.kernel.dispatch_path() == isa for c in rt.convs)
    assert rt.convs[0].glue.isa <= {'scalar': 0, 'avx2': 1, 'avx512': 2}[isa]
    assert_same_logits(rt, model, images(1, 31, 24, seed=3))


@pytest.mark.parametrize('size', [(8, 8), (5, 7), (1, 1), (40, 3)])
def test_tiny_and_thin_inputs(size):
    """Final maps of 1 x 1, a 1 x 1 input, a thin one: every pixel is a border pixel."""
    model = preset_model('A')
    rt = BinaryRuntime.from_deployed(model, backend='popcount')
    assert_same_logits(rt, model, images(3, *size, seed=4))


def test_exact_zeros_of_x_plus_b():
    """x + b == 0 exactly on a constant image region (the kernels' masked path, the sign 0 of RSign)."""
    model = random_deployed_classifier('A', num_classes=10, seed=5)
    x = images(3, 40, 40, seed=5)
    x[:, :, :20, :16] = 0.0
    n = zero_thresholds(model, x)
    backbone = model.backbone
    with torch.no_grad():
        stem = backbone.stem(x.contiguous(memory_format=torch.channels_last), backbone.arch.stem.width)
        zeros = int((stem + backbone.stages[0][0].sign1.bias.view(1, -1, 1, 1) == 0).sum())
    assert n > 0 and zeros > 100
    for backend in ('popcount', 'int8'):
        assert_same_logits(BinaryRuntime.from_deployed(model, backend=backend), model, x)


@pytest.mark.parametrize('which', ['largest', 'smallest', 'random'])
def test_cifar_demo_space_subnets(which):
    space = SearchSpace.build(SMALL_SPACE)
    arch = {'largest': space.largest(), 'smallest': space.smallest(), 'random': space.sample(random.Random(7))}[which]
    model = random_deployed_classifier(arch, SMALL_SPACE, num_classes=10, seed=6)
    rt = BinaryRuntime.from_deployed(model)  # 'auto'
    assert_same_logits(rt, model, images(1, 32, 32, seed=6))
    assert_same_logits(rt, model, images(3, 17, 23, seed=7))


def test_glue_fallbacks(monkeypatch):
    """The ATen glue (NASBNN_GLUE=aten) and no native kernels at all (NASBNN_BITCONV_NATIVE=0: PyTorch
    backends and ATen glue) give the same logits."""
    model = preset_model('A')
    x = images(3, 21, 26, seed=8)
    monkeypatch.setenv('NASBNN_GLUE', 'aten')
    rt = BinaryRuntime.from_deployed(model, backend='popcount')
    assert not any(c.glue.native for c in rt.convs)
    assert_same_logits(rt, model, x)
    monkeypatch.setenv('NASBNN_GLUE', 'native')
    monkeypatch.setenv('NASBNN_BITCONV_NATIVE', '0')
    rt = BinaryRuntime.from_deployed(model)
    assert not any(c.glue.native for c in rt.convs)
    assert_same_logits(rt, model, x)
    assert set(rt.backends().values()) <= {'int8', 'int8_mm', 'bf16', 'fp32'}


def test_bn_is_checked_against_pytorch():
    assert bn_mode() in ('fma', 'mul_add')  # this machine's F.batch_norm rounds as the native glue does


# ----------------------------------------------------------------------------- files: exported and packed
@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """An exported subnet.pth (as tools/export_subnet.py writes it: static classifier weights, meta with the
    architecture, space, weight normalization, classes, preprocessing) of a cifar_small supernet whose BN
    statistics, RSign / RPReLU vectors, kernel transforms and LSQ steps are all non-trivial; and its packed
    file."""
    from test_packed import randomised_supernet_classifier, static_classifier
    space = SearchSpace.build(SMALL_SPACE)
    clf = randomised_supernet_classifier(space)
    arch = space.sample(random.Random(11))
    settings = clf.backbone.settings()
    meta = dict(
        arch=arch.to_text(),
        search_space=space.to_dict(),
        num_classes=10,
        backbone_settings=settings,
        **settings,
        img_size=32,
        dataset_meta=dict(classes=[f'class{i}' for i in range(10)]),
        data_preprocessor=dict(
            type='mmpretrain.ClsDataPreprocessor', mean=[127.5] * 3, std=[127.5] * 3, to_rgb=True, num_classes=10))
    d = tmp_path_factory.mktemp('export')
    sd = subnet_classifier_state(clf, arch)
    subnet = publish_checkpoint(sd, str(d / 'subnet.pth'), meta)
    packed = save_packed(pack_subnet(sd, arch, meta), str(d / 'subnet_packed.pth'))
    return dict(subnet=subnet, packed=packed, static=static_classifier(clf, arch), arch=arch, dir=d)


def test_exported_and_packed_files(exported):
    x = images(3, 32, 32, seed=9)
    deployed = load_packed(exported['packed'])
    for path in (exported['subnet'], exported['packed']):
        rt = load_runtime(path)
        assert rt.arch == exported['arch'] and rt.classes == [f'class{i}' for i in range(10)]
        assert_same_logits(rt, deployed, x)
        model, _ = deployed_classifier(path)
        assert_same_logits(rt, model, images(1, 19, 32, seed=10))
    # the chain static -> deployed -> runtime: the static model convolves with alpha * sign, so it agrees to
    # float rounding (relative to the logits' magnitude; tests/test_packed.py)
    with torch.no_grad():
        ref = exported['static'](x, mode='tensor')
    assert (rt(x) - ref).abs().max() <= 1e-5 * ref.abs().max()
    # weights in memory ~ the packed payload (bits padded to 32-bit words and 16-channel lanes: the small
    # space's 1..8 channels per group fill few bits of a word; the float32 stem adds 3 bytes per weight)
    payload = sum(t.numel() * t.element_size() for t in torch.load(exported['packed'])['state_dict'].values())
    rt = load_runtime(exported['packed'], backend='popcount')
    assert payload < rt.nbytes < 4 * payload, (rt.nbytes, payload)


def test_weights_in_memory_about_the_packed_size():
    from nasbnn_mm.models.packed import packed_layout
    model = preset_model('A')
    rt = BinaryRuntime.from_deployed(model, backend='popcount')
    layout = packed_layout(model.backbone.arch, 10)
    payload = sum(-(-s.numel // 8) if s.kind == 'bits' else s.numel * (1 if s.kind == 'int8' else 4) for s in layout)
    assert payload < rt.nbytes < 1.35 * payload, (rt.nbytes, payload)


def test_features_and_api():
    model = preset_model('A')
    rt = BinaryRuntime.from_deployed(model.backbone, backend='popcount', threads=1)
    x = images(1, 32, 32)
    with torch.no_grad():
        ref = model.backbone(x)
    feats = rt.features(x)
    assert len(feats) == len(ref) and all(torch.equal(a, b) for a, b in zip(feats, ref))
    with pytest.raises(ValueError, match='without a head'):
        rt(x)
    assert 'BinaryRuntime(' in repr(rt) and rt.num_classes is None
    parts = BinaryRuntime.from_deployed(model, backend='popcount').time_parts(x, repeats=1)
    assert set(parts) == {'stem', 'rsign', 'binary convs', 'glue', 'head', 'total', 'fused total'}


def test_bad_inputs_give_one_line_errors(exported, tmp_path):
    model = preset_model('A')
    with pytest.raises(ValueError, match=r"^backend: 'gpu' not allowed \(allowed: auto, popcount"):
        BinaryRuntime.from_deployed(model, backend='gpu')
    with pytest.raises(ValueError, match=r'^threads: 0 not allowed'):
        BinaryRuntime.from_deployed(model, threads=0)
    with pytest.raises(ValueError, match=r'^model: .* not allowed'):
        BinaryRuntime.from_deployed(exported['static'])
    rt = BinaryRuntime.from_deployed(model, backend='popcount')
    with pytest.raises(ValueError, match=r'^images: torch.uint8 .* not allowed'):
        rt(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r'^images: .* \(allowed: float32 \(N, 3, H, W\)'):
        rt(torch.zeros(3, 8, 8))
    with pytest.raises(TypeError):
        BinaryRuntime()
    bad = tmp_path / 'other.pth'
    torch.save({'meta': {'format': 'nasbnn-packed-v9'}, 'state_dict': {}}, bad)
    with pytest.raises(PackedFormatError, match=r"^checkpoint meta.format: 'nasbnn-packed-v9' not allowed"):
        load_runtime(str(bad))
    torch.save({'meta': {}, 'state_dict': {'x': torch.zeros(1)}}, bad)
    with pytest.raises(PackedFormatError, match=r'^checkpoint: neither a packed subnet'):
        load_runtime(str(bad))


def test_mmdet_backbone_on_the_runtime():
    """A detector in test mode with its NAS-BNN backbone on the runtime: the backbone's features equal the
    deployed backbone's bitwise, the neck's outputs the float detector's up to float rounding."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    import nasbnn_mm.det  # noqa: F401
    from nasbnn_mm.deploy import RuntimeBackbone, runtime_detector
    from nasbnn_mm.registry import MODELS
    cfg = Config.fromfile('configs/coco/faster-rcnn_nasbnn-cifar-small_fpn_coco-small.py')
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmdet'):
        det = MODELS.build(cfg.model)
    with torch.no_grad():
        for m in det.backbone.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2.0)
            for name, p in m.named_parameters(recurse=False):
                if name in ('bias', 'bias_in', 'bias_out'):
                    p.normal_(0, 0.1)
    det.eval()
    x = images(2, 45, 70, seed=12)
    with torch.no_grad():
        ref = det.extract_feat(x)
        deployed = det.backbone.to_deployed()(x)
    runtime_detector(det, backend='popcount')
    assert isinstance(det.backbone, RuntimeBackbone) and len(deployed) == 4
    with torch.no_grad():
        feats = det.backbone(x)
        out = det.extract_feat(x)
    assert all(torch.equal(a, b) for a, b in zip(feats, deployed))
    assert all(f.is_contiguous() for f in feats)  # mmcv's CPU RoIAlign reads NCHW memory
    assert all((a - b).abs().max() <= 1e-5 * b.abs().max() for a, b in zip(out, ref))
    with pytest.raises(RuntimeError, match='inference only'):
        det.train()


# ----------------------------------------------------------------------------- tools/infer.py
def _infer(argv, capsys):
    old = sys.argv
    sys.argv = ['infer.py'] + [str(a) for a in argv]
    try:
        runpy.run_path(os.path.join(ROOT, 'tools', 'infer.py'), run_name='__main__')
        code = 0
    except SystemExit as e:
        code = e.code
    finally:
        sys.argv = old
    out = capsys.readouterr()
    return code, out.out, out.err


def test_infer_tool(exported, tmp_path, capsys):
    import cv2
    img_dir = tmp_path / 'imgs'
    img_dir.mkdir()
    rng = np.random.default_rng(0)
    for name, shape in (('a.png', (32, 32, 3)), ('b.jpg', (45, 61, 3))):
        cv2.imwrite(str(img_dir / name), rng.integers(0, 255, shape, dtype=np.uint8))
    (img_dir / 'notes.txt').write_text('not an image')
    code, out, err = _infer([exported['packed'], img_dir, '--topk', 3, '--backend', 'popcount'], capsys)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].startswith('# subnet_packed.pth') and 'resize to 32x32' in lines[0]
    assert lines[1].endswith('a.png') and lines[5].endswith('b.jpg') and len(lines) == 9
    scores = [float(line.split()[-1]) for line in lines[2:5]]
    assert all(line.split()[1].startswith('class') for line in lines[2:5]) and scores == sorted(scores, reverse=True)
    # the same predictions as the deployed model on mmpretrain's own pipeline and data preprocessor
    from mmcv.transforms import LoadImageFromFile, Resize
    from mmpretrain.models import ClsDataPreprocessor
    pipe = [LoadImageFromFile(), Resize(scale=(32, 32), keep_ratio=False)]
    res = dict(img_path=str(img_dir / 'b.jpg'))
    for t in pipe:
        res = t(res)
    pre = ClsDataPreprocessor(mean=[127.5] * 3, std=[127.5] * 3, to_rgb=True)
    batch = pre(dict(inputs=[torch.from_numpy(res['img']).permute(2, 0, 1).contiguous()]), False)['inputs']
    with torch.no_grad():
        probs = torch.softmax(load_packed(exported['packed'])(batch, mode='tensor'), 1)[0]
    assert [f'{v:.4f}' for v in probs.topk(3).values.tolist()] == [line.split()[-1] for line in lines[6:9]]
    # exported subnet.pth, one image, 224 px ImageNet-style preprocessing
    code, out, err = _infer([exported['subnet'], img_dir / 'b.jpg', '--img-size', 224, '--threads', 1], capsys)
    assert code == 0 and 'centre crop 224x224' in out and len(out.strip().splitlines()) == 7, err
    # --compare-float: the float deployed model on the same batch, logits equal, timings, JSON written atomically
    code, out, err = _infer(
        [exported['packed'], img_dir, '--compare-float', '--repeats', 2, '--out', tmp_path / 'r.json'], capsys)
    assert code == 0, err
    assert re.search(
        r'runtime vs float deployed model, batch 2, \d thread\(s\), median of 2: runtime [0-9.]+ ms, '
        r'float [0-9.]+ ms, [0-9.]+x, logits equal$',
        out.strip().splitlines()[-1]), out
    with open(tmp_path / 'r.json') as f:
        rec = json.load(f)
    assert rec['comparison']['equal'] is True and rec['comparison']['max_abs_diff'] == 0.0
    assert len(rec['predictions']) == 2 and rec['comparison']['speedup'] > 0


@pytest.mark.parametrize('argv,message',
                         [(['{missing}', '{img}'], r"^error: checkpoint: no such file '.*missing.pth'$"),
                          (['{img}', '{img}'], r'^error: checkpoint .*: not a readable checkpoint'),
                          (['{packed}', '{txt}'], r"^error: image '.*x.txt': cannot be decoded"),
                          (['{packed}', '{empty}'], r"^error: images: no image files in folder"),
                          (['{packed}', '{img}', '--topk', '0'], r'^error: topk: 0 not allowed'),
                          (['{packed}', '{img}', '--threads', '0'], r'^error: threads: 0 not allowed')])
def test_infer_tool_errors(exported, tmp_path, capsys, argv, message):
    import re

    import cv2
    img = tmp_path / 'i.png'
    cv2.imwrite(str(img), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / 'x.txt').write_text('text')
    (tmp_path / 'empty').mkdir()
    names = dict(
        missing=tmp_path / 'missing.pth',
        img=img,
        txt=tmp_path / 'x.txt',
        empty=tmp_path / 'empty',
        packed=exported['packed'])
    code, out, err = _infer([a.format(**names) for a in argv], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and re.match(message, err.strip()), err
