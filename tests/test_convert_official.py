"""tools/convert_official_checkpoint.py: the authors' SuperBNN state dict -> our SandwichClassifier.

The source state dicts here are generated from the documented layout of the authors' release
(key names and shapes per block, `module.` prefix), filled with distinct random values; every
converted tensor is compared with the source tensor it must come from.
"""
import importlib.util
import os
import subprocess
import sys
from collections import OrderedDict

import pytest
import torch
from official_reference import official_layout, official_state_dict  # noqa: F401

from nasbnn_mm.ops import normalize_weight
from nasbnn_mm.space import TABLE1_SPACE, SearchSpace
from nasbnn_mm.utils.checkpoint import load_checkpoint_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, 'tools', 'convert_official_checkpoint.py')
SMALL_SPACE_CFG = os.path.join(ROOT, 'configs', '_base_', 'search_spaces', 'cifar_small.py')

_spec = importlib.util.spec_from_file_location('convert_official_checkpoint', TOOL)
conv = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(conv)


def expected_source(key: str, space: dict):
    """Independent restatement of the mapping (our key -> their unprefixed key), None = set."""
    if key == 'backbone.stem.conv.step_initialized':
        return None
    if key.startswith('head.'):
        return key[len('head.'):]
    stem = {
        'conv.weight': 'conv.weight',
        'conv.step': 'conv.w_scale',
        'act.bias_in': 'move1.bias',
        'act.slope': 'relu.prelu.weight',
        'act.bias_out': 'move2.bias'
    }
    if key.startswith('backbone.stem.'):
        rest = key[len('backbone.stem.'):]
        return 'features.0.0.' + (stem[rest] if rest in stem else 'bn.' + rest)
    _, _, s, b, rest = key.split('.', 4)
    ks = sorted(space['stages'][int(s)]['kernels'])
    block = {
        'sign1.bias': 'move11.bias',
        'conv_kxk.weight': 'binary_conv.weight',
        'conv_kxk.kernel_transforms.k3': 'binary_conv.matrix_5to3',
        'conv_kxk.bi_transform': f'binary_conv.fp2bin_{ks[-1]}',
        'act1.bias_in': 'move12.bias',
        'act1.slope': 'prelu1.prelu.weight',
        'act1.bias_out': 'move13.bias',
        'sign2.bias': 'move21.bias',
        'conv_1x1.weight': 'binary_conv1x1.weight',
        'act2.bias_in': 'move22.bias',
        'act2.slope': 'prelu2.prelu.weight',
        'act2.bias_out': 'move23.bias'
    }
    if rest in block:
        tail = block[rest]
    else:
        bn, field = rest.split('.')
        assert bn in ('bn1', 'bn2'), key
        tail = f'{bn}.bn.{field}'
    return f'features.{int(s) + 1}.{b}.{tail}'


def check_conversion(src_sd, out_sd, skipped, space: dict):
    used = set()
    for key, v in out_sd.items():
        exp = expected_source(key, space)
        if exp is None:
            assert v.dtype == torch.bool and bool(v), key
            continue
        src = src_sd['module.' + exp]
        assert exp not in used, f'{exp} used twice'
        used.add(exp)
        assert v.dtype == src.dtype, key
        assert v.numel() == src.numel(), key
        assert torch.equal(v.flatten(), src.flatten()), f'{key} != {exp}'
    # every source tensor is either used exactly once or listed as skipped
    rest = {k[len('module.'):] for k in src_sd} - used
    assert sorted(rest) == sorted(k[len('module.'):] for k in skipped)
    for k in rest:
        assert (k in ('biggest_cand', 'smallest_cand') or k.endswith('.scaling_factor')
                or k.endswith('.w_init_state')), k


# ----------------------------------------------------------------------------- Table 1
@pytest.fixture(scope='module')
def table1_official():
    return official_state_dict(TABLE1_SPACE)


@pytest.fixture(scope='module')
def table1_converted(table1_official):
    return conv.convert_state_dict(table1_official)


def test_official_layout_matches_documented_counts(table1_official):
    # 516 entries (notes on the release, section 3); 66,508,159 learnable elements
    assert len(table1_official) == 516
    learnable = sum(v.numel() for k, v in table1_official.items()
                    if not any(s in k for s in ('running_', 'num_batches', 'scaling_factor', 'w_init_state', '_cand')))
    assert learnable == 66_508_159
    assert table1_official['module.features.4.1.binary_conv.weight'].shape == (768, 192, 5, 5)
    assert table1_official['module.features.3.0.binary_conv.weight'].shape == (192, 96, 5, 5)


def test_table1_every_tensor_lands_in_place(table1_official, table1_converted):
    out, skipped = table1_converted
    template = conv.build_template(SearchSpace.table1()).state_dict()
    assert list(out) == list(template)
    for k, ref in template.items():
        assert out[k].shape == ref.shape and out[k].dtype == ref.dtype, k
    check_conversion(table1_official, out, skipped, TABLE1_SPACE)
    assert len(out) == 472
    # 2 cand buffers + stem w_init_state + 2 alpha buffers in each of the 21 blocks
    assert len(skipped) == 2 + 1 + 2 * 21
    assert torch.equal(out['backbone.stages.3.1.conv_kxk.kernel_transforms.k3'],
                       table1_official['module.features.4.1.binary_conv.matrix_5to3'])
    assert torch.equal(out['backbone.stages.0.2.act1.bias_in'],
                       table1_official['module.features.1.2.move12.bias'].flatten())


def test_table1_loads_into_model(table1_converted):
    out, _ = table1_converted
    model = conv.build_template(None, 1000, device='cpu')
    res = model.load_state_dict(out, strict=True)
    assert not res.missing_keys and not res.unexpected_keys
    assert model.backbone.stages[0][0].conv_kxk.wn_unbiased and model.backbone.stages[0][0].conv_kxk.wn_eps == 0
    assert bool(model.backbone.stem.conv.step_initialized)


def _one_line_error(fn, *needles):
    with pytest.raises(conv.ConversionError) as e:
        fn()
    msg = str(e.value)
    assert '\n' not in msg
    for n in needles:
        assert n in msg, msg
    return msg


def test_missing_key_error(table1_official):
    sd = OrderedDict(table1_official)
    del sd['module.features.4.3.move21.bias']
    _one_line_error(lambda: conv.convert_state_dict(sd), "'module.features.4.3.move21.bias'",
                    'backbone.stages.3.3.sign2.bias')


def test_wrong_shape_error(table1_official):
    sd = OrderedDict(table1_official)
    sd['module.features.2.1.binary_conv.weight'] = torch.zeros(192, 192, 3, 3)
    _one_line_error(lambda: conv.convert_state_dict(sd), "'module.features.2.1.binary_conv.weight'", '(192, 192, 3, 3)',
                    '(192, 192, 5, 5)')
    sd = OrderedDict(table1_official)
    sd['module.features.0.0.move1.bias'] = torch.zeros(48)  # LearnableBias must be (1, C, 1, 1)
    _one_line_error(lambda: conv.convert_state_dict(sd), "'module.features.0.0.move1.bias'")


def test_unexpected_key_error(table1_official):
    sd = OrderedDict(table1_official)
    sd['module.features.1.0.binary_conv.matrix_7to5'] = torch.eye(25)
    _one_line_error(lambda: conv.convert_state_dict(sd), "'module.features.1.0.binary_conv.matrix_7to5'", 'unexpected')


# ----------------------------------------------------------------------------- small space, CLI
@pytest.fixture(scope='module')
def small_space():
    return SearchSpace.build(SMALL_SPACE_CFG).to_dict()


def test_small_space_without_prefix_and_static_copies(small_space):
    sd = official_state_dict(small_space, num_classes=10, seed=1)
    bare = OrderedDict((k[len('module.'):], v) for k, v in sd.items())
    bare['features.2.0.binary_conv.weight_s'] = torch.zeros(3)  # to_static leftovers are skipped
    bare['features.2.0.bn1.bn_s.running_mean'] = torch.zeros(3)
    out, skipped = conv.convert_state_dict(bare, small_space)
    static = {'features.2.0.binary_conv.weight_s', 'features.2.0.bn1.bn_s.running_mean'}
    assert static <= set(skipped)
    check_conversion(sd, out, ['module.' + k for k in skipped if k not in static], small_space)
    assert out['head.fc.weight'].shape == (10, 128)


def test_cli_small_file(tmp_path, small_space):
    from mmengine.runner import load_checkpoint

    sd = official_state_dict(small_space, num_classes=10, seed=2)
    src = tmp_path / 'checkpoint.pth.tar'
    torch.save({'epoch': 7, 'arch': 'superbnn', 'state_dict': sd}, src)
    dst = tmp_path / 'out' / 'converted.pth'
    r = subprocess.run(
        [sys.executable, TOOL, str(src), str(dst), '--space', SMALL_SPACE_CFG],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120)
    assert r.returncode == 0, r.stderr
    assert 'module.biggest_cand' in r.stdout and 'module.features.0.0.conv.w_init_state' in r.stdout
    assert 'wn_unbiased=True' in r.stdout
    ck = load_checkpoint_file(str(dst))  # safe loading
    meta = ck['meta']
    assert meta['space'] == small_space
    assert meta['backbone_settings'] == dict(wn_eps=0.0, wn_unbiased=True)
    assert meta['source_epoch'] == 7 and meta['num_classes'] == 10
    assert len(meta['skipped']) == 2 + 1 + 2 * sum(max(s['depths']) for s in small_space['stages'])
    check_conversion(sd, ck['state_dict'], meta['skipped'], small_space)
    # the file loads into the model with mmengine's loader and runs
    assert meta['backbone_settings'] == conv.OFFICIAL_BACKBONE_SETTINGS  # what build_template uses
    model = conv.build_template(small_space, 10, device='cpu').eval()
    load_checkpoint(model, str(dst), map_location='cpu', strict=True)
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 16, 16), mode='tensor')
    assert logits.shape == (1, 10)


def test_cli_errors_are_one_line(tmp_path, small_space, capsys):
    sd = official_state_dict(small_space, num_classes=10, seed=3)
    del sd['module.fc.bias']
    src = tmp_path / 'bad.pth'
    torch.save({'state_dict': sd}, src)
    assert conv.main([str(src), str(tmp_path / 'o.pth'), '--space', SMALL_SPACE_CFG]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('error: ') and '\n' not in err and "'module.fc.bias'" in err
    assert not (tmp_path / 'o.pth').exists()
    # untrusted pickle content is refused by default
    torch.save({'state_dict': official_state_dict(small_space, 10), 'optimizer': {'x': object}}, src)
    assert conv.main([str(src), str(tmp_path / 'o.pth'), '--space', SMALL_SPACE_CFG]) == 2
    err = capsys.readouterr().err.strip()
    assert '--trust-checkpoint' in err and '\n' not in err
    assert conv.main([str(src), str(tmp_path / 'o.pth'), '--space', SMALL_SPACE_CFG, '--trust-checkpoint']) == 0


# ----------------------------------------------------------------------------- weight normalization option
def test_normalize_weight_unbiased_matches_release_formula():
    w = torch.randn(6, 4, 3, 3, dtype=torch.float64)
    ref = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / w.std(dim=(1, 2, 3), keepdim=True)
    assert torch.allclose(normalize_weight(w, 0.0, unbiased=True), ref, rtol=0, atol=1e-12)
    biased = (w - w.mean(dim=(1, 2, 3),
                         keepdim=True)) / torch.sqrt(w.var(dim=(1, 2, 3), keepdim=True, unbiased=False) + 1e-5)
    assert torch.allclose(normalize_weight(w), biased, rtol=0, atol=1e-12)  # default unchanged
