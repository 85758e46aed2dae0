"""Careless and hostile input: broken, wrong or untrusted checkpoints and bad values give one-line
errors (exit code 2) in every tool, and nothing is written; a fuzz test of the architecture
parser and the search-space validation."""
import importlib.util
import json
import math
import os
import random
import string

import pytest
import torch

from nasbnn_mm.space import Architecture, ArchitectureError, LayerChoice, SearchSpace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.environ.get('NASBNN_DATA', os.path.join(ROOT, '..', 'shared', 'data'))
SUPERNET_CFG = 'configs/cifar10/nasbnn-supernet_cifar-small_cifar10.py'
SEARCH_CFG = 'configs/cifar10/nasbnn-search_cifar-small_cifar10.py'
needs_data = pytest.mark.skipif(
    not os.path.isfile(os.path.join(DATA, 'cifar10_jpg.tar.gz')),
    reason=f'shared data missing at {DATA} (set NASBNN_DATA)')


def _tool(name):
    spec = importlib.util.spec_from_file_location(f'tool_{name}', os.path.join(ROOT, 'tools', f'{name}.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run_tool(name, argv, capsys):
    """Run a tool's main as the command line does (run_cli); (exit code, stderr)."""
    from nasbnn_mm.apis import run_cli
    mod = _tool(name)
    code = 0
    try:
        run_cli(lambda: mod.main(argv))
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err.strip()


@pytest.fixture(scope='module')
def bad_files(tmp_path_factory):
    """Checkpoints that must be refused: broken files, not-a-checkpoint pickles, a folder, weights of
    another search space, an empty state dict, non-finite weights."""
    from test_search import publish_random_supernet
    d = tmp_path_factory.mktemp('bad')
    good = publish_random_supernet(d / 'good.pth', seed=0)
    raw = open(good, 'rb').read()
    files = {}
    (d / 'empty.pth').write_bytes(b'')
    files['empty'] = ('empty file', d / 'empty.pth')
    (d / 'truncated.pth').write_bytes(raw[:len(raw) // 3])
    files['truncated'] = ('not a readable checkpoint', d / 'truncated.pth')
    (d / 'garbage.pth').write_bytes(bytes(random.Random(0).randrange(256) for _ in range(4096)))
    files['garbage'] = ('not a readable checkpoint', d / 'garbage.pth')
    torch.save([1, 2, 3], d / 'list.pth')
    files['list'] = ('not a checkpoint dict', d / 'list.pth')
    (d / 'folder.pth').mkdir()
    files['folder'] = ('a folder', d / 'folder.pth')
    ckpt = torch.load(good, weights_only=True)
    table1 = {k.replace('stages.4.1', 'stages.4.9'): v for k, v in ckpt['state_dict'].items()}  # another space
    torch.save({'state_dict': table1, 'meta': {}}, d / 'other_space.pth')
    files['other_space'] = ('does not fit', d / 'other_space.pth')
    torch.save({'state_dict': {}, 'meta': {}}, d / 'empty_sd.pth')
    files['empty_sd'] = ('state_dict', d / 'empty_sd.pth')
    nan = {k: (v.clone().fill_(math.nan) if v.is_floating_point() else v) for k, v in ckpt['state_dict'].items()}
    torch.save({'state_dict': nan, 'meta': ckpt['meta']}, d / 'nan.pth')
    files['nan'] = ('non-finite', d / 'nan.pth')
    return files


def _assert_refused(code, err, needle):
    assert code == 2, err
    assert err.startswith('error: ') and '\n' not in err, err
    assert needle in err, err


@pytest.mark.parametrize('which', ['empty', 'truncated', 'garbage', 'list', 'folder', 'other_space', 'empty_sd', 'nan'])
def test_export_refuses_bad_checkpoints(bad_files, which, tmp_path, capsys):
    needle, path = bad_files[which]
    out = tmp_path / 'out'
    code, err = _run_tool(
        'export_subnet',
        [SUPERNET_CFG, str(path), '--arch', 'largest', '--out-dir',
         str(out), '--calib-batches', '0'], capsys)
    _assert_refused(code, err, needle)
    assert not out.exists()


@needs_data
@pytest.mark.parametrize('which', ['garbage', 'other_space', 'nan'])
def test_test_and_search_tools_refuse_bad_checkpoints(bad_files, which, tmp_path, capsys):
    needle, path = bad_files[which]
    code, err = _run_tool('test', [SUPERNET_CFG, str(path), '--work-dir', str(tmp_path / 't')], capsys)
    _assert_refused(code, err, needle)
    code, err = _run_tool('search', [SEARCH_CFG, str(path), '--work-dir', str(tmp_path / 's')], capsys)
    _assert_refused(code, err, needle)
    assert not (tmp_path / 's' / 'pareto.json').exists()


def test_detector_inheritance_refuses_non_finite_supernet(bad_files):
    from nasbnn_mm.det import NASBNNDetBackbone
    from nasbnn_mm.utils import CheckpointMismatchError
    bb = NASBNNDetBackbone(
        'largest',
        'configs/_base_/search_spaces/cifar_small.py',
        strides=(2, 1, 2, 2, 2, 2),
        init_cfg=dict(type='nasbnn.InheritFromSupernet', checkpoint=str(bad_files['nan'][1])))
    with pytest.raises(CheckpointMismatchError, match='non-finite'):
        bb.init_weights()


def test_trust_flag_reaches_the_detectors_initializer(tmp_path):
    from argparse import Namespace

    from nasbnn_mm.apis import load_tool_config
    args = Namespace(cfg_options=None, work_dir=str(tmp_path), trust_checkpoint=True, launcher='none', local_rank=0)
    cfg = load_tool_config(args, 'configs/coco/faster-rcnn_nasbnn-cifar-small_fpn_coco-small.py')
    assert cfg.trust_checkpoint and cfg.model.backbone.init_cfg.trusted is True


def test_pareto_choice_by_cfg_options_replaces_the_configs_arch(tmp_path):
    from argparse import Namespace

    from nasbnn_mm.apis import load_tool_config
    from nasbnn_mm.space import SearchSpace
    sp = SearchSpace.build('configs/_base_/search_spaces/cifar_small.py')
    pareto = tmp_path / 'pareto.json'
    pareto.write_text(
        json.dumps(
            dict(front=[dict(bin=0.1, arch=sp.smallest().to_text(), ops=0.1, acc=1.0)], search_space=sp.to_dict())))
    args = Namespace(
        cfg_options={
            'model.backbone.pareto': str(pareto),
            'model.backbone.ops': 0.1
        },
        work_dir=None,
        trust_checkpoint=False,
        launcher='none',
        local_rank=0)
    cfg = load_tool_config(args, 'configs/coco/faster-rcnn_nasbnn-cifar-small_fpn_coco-small.py')
    assert cfg.model.backbone.arch is None
    assert cfg.model.neck.in_channels == list(sp.smallest().stage_out_channels[1:])


@pytest.mark.parametrize('argv,needle', [
    (['A', '--img-size', '0'], 'img_size'),
    (['A', '--img-size', '-5'], 'img_size'),
    (['A', '--img-size', '32x-1'], 'img_size'),
    (['A', '--num-classes', '-5'], 'num_classes'),
    (['--space', 'missing.py'], 'no such config file'),
    (['c24_k3_g1 | c48_k3_g1 x100000000'], 'layers'),
])
def test_count_ops_bad_values(argv, needle, capsys):
    mod = _tool('count_ops')
    assert mod.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('error: ') and '\n' not in err and needle in err, err


def test_count_ops_on_another_space_shows_its_extremes(capsys):
    mod = _tool('count_ops')
    assert mod.main(['--space', 'configs/_base_/search_spaces/cifar_small.py', '--img-size', '32']) == 0
    out = capsys.readouterr().out
    assert '== largest' in out and '== smallest' in out and 'NAS-BNN-A' not in out


# ----------------------------------------------------------------------------- strict parsing
@pytest.mark.parametrize('bad,needle', [
    (dict(width=16.9, kernel=3, groups=1), 'width 16.9'),
    (dict(width=16, kernel=3.99, groups=1), 'kernel 3.99'),
    (dict(width=16, kernel=3, groups=True), 'groups True'),
    (dict(width='16', kernel=3, groups=1), "width '16'"),
    (dict(width=10**5000, kernel=3, groups=1), 'width'),
    (dict(width=16, kernel=3, groups=1, extra=1), 'keys'),
])
def test_architecture_dict_values_are_never_coerced(bad, needle):
    d = SearchSpace.build('configs/_base_/search_spaces/cifar_small.py').smallest().to_dict()
    d['stages'][0][0] = bad
    with pytest.raises(ArchitectureError) as e:
        Architecture.from_dict(d)
    assert needle in str(e.value) and '\n' not in str(e.value) and len(str(e.value)) < 300


@pytest.mark.parametrize('text,needle', [
    ('{"stem": {"width": Infinity, "kernel": 3, "groups": 1}, "stages": [[]]}', 'Infinity'),
    ('{"stem": {"width": NaN, "kernel": 3, "groups": 1}, "stages": [[]]}', 'NaN'),
    ('[' * 100000 + ']' * 100000, 'JSON'),
    ('{"stem": {"width": ' + '9' * 5000 + ', "kernel": 3, "groups": 1}, "stages": [[]]}', 'JSON'),
])
def test_architecture_json_edge_cases(text, needle):
    with pytest.raises(ArchitectureError) as e:
        Architecture.coerce(text if text.startswith('{') else '{' + text)
    assert needle in str(e.value) and '\n' not in str(e.value)


def test_repeat_count_is_bounded_by_the_space():
    sp = SearchSpace.table1()
    with pytest.raises(ArchitectureError, match=r'stage 4: repeat .* gives more than 9 layers'):
        sp.validate('c24_k3_g1 | c48_k3_g1 x2 | c96_k3_g2 x2 | c192_k3_g4 x2 | c384_k3_g8 x100000000 | c768_k3_g16 x2')
    with pytest.raises(ArchitectureError, match=r'more than 1024 layers'):
        Architecture.from_text('c24_k3_g1 | c48_k3_g1 x100000000')


@pytest.mark.parametrize('space,needle', [
    (dict(stem=dict(widths=[8], kernel=4), stages=[dict(depths=[1], widths=[8], kernels=[3], groups=[1])
                                                   ]), 'stem.kernel 4 not allowed'),
    (dict(stem=dict(widths=[8], stride=0), stages=[dict(depths=[1], widths=[8], kernels=[3], groups=[1])
                                                   ]), 'stem.stride 0 not allowed'),
    (dict(stages=[dict(depths=[1], widths=[8], kernels=[3], groups=[1])]), 'stem'),
    (dict(stem=dict(widths=[8]), stages=[None]), 'stage 1'),
    (dict(stem=dict(widths=[8]), stages=[dict(depths=[1], widths=[8], kernels=[3], groups=[1])], extra=1), 'extra'),
])
def test_bad_search_spaces_are_one_line_errors(space, needle):
    with pytest.raises(ArchitectureError) as e:
        SearchSpace.build(space)
    assert needle in str(e.value) and '\n' not in str(e.value)


def test_config_without_search_space_and_missing_file(tmp_path):
    cfg = tmp_path / 'c.py'
    cfg.write_text('x = 1\n')
    with pytest.raises(ArchitectureError, match="has no 'search_space'"):
        SearchSpace.build(str(cfg))
    with pytest.raises(FileNotFoundError, match='no such config file'):
        SearchSpace.build(str(tmp_path / 'missing.py'))


@pytest.mark.parametrize('entry,ops,needle', [
    (dict(bin=0.1, arch=None, ops=0.1, acc=1), 0.1, 'front[0].arch None'),
    (dict(bin=None, arch='x', ops=0.1, acc=1), 0.1, 'front[0].bin None'),
    (dict(bin=0.1, arch='c8_k3_g1 | c16_k3_g1', ops=0.1, acc=1), float('nan'), 'ops: nan not allowed'),
    (dict(bin=0.1, arch='c8_k3_g1 | c16_k3_g1', ops=0.1, acc=1), float('inf'), 'ops: inf not allowed'),
])
def test_pareto_entries_are_validated(tmp_path, entry, ops, needle):
    from nasbnn_mm.space.pareto import pareto_entry
    path = tmp_path / 'pareto.json'
    path.write_text(json.dumps(dict(front=[entry])))
    with pytest.raises(ArchitectureError) as e:
        pareto_entry(str(path), ops)
    assert needle in str(e.value) and '\n' not in str(e.value)


# ----------------------------------------------------------------------------- fuzzing
_TOKENS = [
    'c8_k3_g1', 'c16_k3_g1', 'c24_k5_g2', 'c32_k3_g4', 'c48_k5_g4', 'c64_k3_g8', 'c96_k5_g8', 'c128_k3_g16', '|', 'x2',
    'x3', '*2', ',', ' ', 'c', '_k', '_g', '3', '-1', '0', 'c0_k3_g1', 'c99999999_k3_g1', '{', '}', 'A', 'nasbnn-b',
    'x0', 'x99999999', '\n', '\t', 'é', '\x00'
]


def _random_text(rng):
    return ''.join(rng.choice(_TOKENS + [rng.choice(string.printable)]) for _ in range(rng.randint(0, 30)))


def _random_value(rng, depth=0):
    kinds = ['int', 'neg', 'float', 'bool', 'str', 'none', 'big', 'list', 'dict', 'nan']
    k = rng.choice(kinds if depth < 3 else kinds[:7])
    return {
        'int': lambda: rng.choice([1, 3, 5, 8, 16, 24, 32]),
        'neg': lambda: -rng.randint(0, 9),
        'float': lambda: rng.choice([3.0, 16.9, 0.5]),
        'bool': lambda: rng.random() < 0.5,
        'str': lambda: rng.choice(['16', 'c16_k3_g1', '', 'x']),
        'none': lambda: None,
        'big': lambda: 10**rng.randint(7, 40),
        'nan': lambda: rng.choice([math.nan, math.inf]),
        'list': lambda: [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))],
        'dict': lambda: {
            rng.choice(['width', 'kernel', 'groups', 'stem', 'stages', 'x']): _random_value(rng, depth + 1)
            for _ in range(rng.randint(0, 4))
        }
    }[k]()


def _random_arch_dict(rng, sp):
    d = sp.sample(rng).to_dict()
    if rng.random() < 0.15:  # some valid ones, which must come back unchanged
        return d
    for _ in range(rng.randint(1, 3)):  # corrupt a few layers (or leave them valid: a valid value)
        if rng.random() < 0.3:
            d['stem'][rng.choice(['width', 'kernel', 'groups'])] = _random_value(rng)
        else:
            layer = rng.choice(rng.choice(d['stages']))
            layer[rng.choice(['width', 'kernel', 'groups', 'extra'])] = _random_value(rng)
    if rng.random() < 0.2:  # then maybe the top level
        d[rng.choice(['stem', 'stages', 'extra'])] = _random_value(rng)
    return d


def test_fuzz_parser_and_validation_only_one_line_errors_never_coercion():
    """Random strings and corrupted dicts: either a valid architecture whose every value is exactly
    what was given, or a one-line ArchitectureError -- never another exception."""
    rng = random.Random(0)
    sp = SearchSpace.build('configs/_base_/search_spaces/cifar_small.py')
    accepted = rejected = 0
    for i in range(3000):
        x = _random_text(rng) if i % 2 else _random_arch_dict(rng, sp)
        try:
            arch = sp.validate(x)
        except ArchitectureError as e:
            msg = str(e)
            assert msg and '\n' not in msg and len(msg) < 400, (x, msg)
            rejected += 1
            continue
        accepted += 1
        if isinstance(x, dict):  # accepted values are the given ones, untouched (tokens are a valid form)

            def canon(layer):
                return LayerChoice.from_text(layer).__dict__ if isinstance(layer, str) else layer

            given = dict(stem=canon(x['stem']), stages=[[canon(la) for la in st] for st in x['stages']])
            assert arch.to_dict() == given, x
        else:
            assert sp.validate(arch.to_text()) == arch
    assert rejected > 1000 and accepted > 50, (accepted, rejected)
