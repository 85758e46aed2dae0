import itertools
import json
import random

import pytest
import yaml
from mmengine.config import Config

from nasbnn_mm.space import (PRESET_NAMES, TABLE1_SPACE, Architecture, ArchitectureError, LayerChoice, SearchSpace,
                             crossover, get_preset, mutate)

TINY = dict(
    stem=dict(widths=[4, 8]),
    stages=[
        dict(depths=[1, 2], widths=[4, 8, 12], kernels=[3], groups=[1, 2], stride=1),
        dict(depths=[1, 2], widths=[8, 12, 16], kernels=[3, 5], groups=[2, 4], stride=2),
    ])


@pytest.fixture(scope='module')
def table1():
    return SearchSpace.table1()


def test_table1_config_file_matches_default(table1):
    cfg = Config.fromfile('configs/_base_/search_spaces/table1.py')
    assert SearchSpace.build(cfg) == table1
    assert SearchSpace.build('configs/_base_/search_spaces/table1.py').to_dict() == SearchSpace(
        **TABLE1_SPACE).to_dict()


def test_reduced_space_config_builds():
    sp = SearchSpace.build('configs/_base_/search_spaces/cifar_small.py')
    assert sp.num_stages == 5
    for a in sp.sample_many(200, seed=1):
        sp.validate(a)


@pytest.mark.parametrize('name', PRESET_NAMES)
def test_presets_valid_and_round_trip(table1, name):
    arch = table1.validate(get_preset(name))
    assert Architecture.from_text(arch.to_text()) == arch
    assert Architecture.from_dict(arch.to_dict()) == arch
    assert Architecture.from_json(arch.to_json()) == arch
    assert Architecture.from_dict(yaml.safe_load(yaml.safe_dump(arch.to_dict()))) == arch
    for alias in (name.lower(), f'nasbnn-{name.lower()}', f'NAS-BNN-{name}'):
        assert Architecture.coerce(alias) == arch


def test_random_round_trips(table1):
    for a in table1.sample_many(500, seed=0):
        table1.validate(a)
        assert Architecture.from_text(a.to_text()) == a
        assert Architecture.coerce(a.to_text()) == a
        assert Architecture.coerce(json.loads(json.dumps(a.to_dict()))) == a
        assert Architecture.from_dict(yaml.safe_load(yaml.safe_dump(a.to_dict()))) == a


def test_repeat_shorthand_and_layer_dict_form():
    a = get_preset('A')
    assert a.stages[3] == (LayerChoice(384, 3, 8), ) * 8
    d = a.to_dict()
    d['stages'] = [[l_.to_text() for l_ in s] for s in a.stages]  # string layers allowed too
    assert Architecture.from_dict(d) == a


def test_largest_smallest(table1):
    big, small = table1.largest(), table1.smallest()
    assert big.depths == (3, 3, 3, 9, 3) and small.depths == (2, 2, 2, 8, 2)
    assert big.stem.width == 48 and small.stem.width == 24
    assert all(l.kernel == 5 for si, _, l in big.layers() if si > 0)
    assert [s[0].groups for s in big.stages] == [1, 1, 2, 4, 8]
    assert [s[0].groups for s in small.stages] == [1, 2, 4, 8, 16]
    assert big.stage_out_channels == (96, 192, 384, 768, 1536)
    assert small.stage_out_channels == (48, 96, 192, 384, 768)


def test_sampling_is_seeded(table1):
    assert table1.sample_many(20, seed=3) == table1.sample_many(20, seed=3)
    assert table1.sample_many(20, seed=3) != table1.sample_many(20, seed=4)
    depths = {a.depths for a in table1.sample_many(300, seed=0)}
    assert len(depths) > 10  # depths really vary


def _brute_force(space_cfg, nd):
    sp = SearchSpace(**space_cfg)
    n = 0
    stage_opts = []
    for s in sp.stages:
        per_layer = [LayerChoice(w, k, g) for w in s.widths for k in s.kernels for g in s.groups]
        stage_opts.append([p for d in s.depths for p in itertools.product(per_layer, repeat=d)])
    for stem_w in sp.stem.widths:
        for stages in itertools.product(*stage_opts):
            prev, ok = stem_w, True
            for stage in stages:
                for l in stage:
                    if prev % l.groups or (nd and l.width < prev):
                        ok = False
                        break
                    prev = l.width
                if not ok:
                    break
            n += ok
    return n


@pytest.mark.parametrize('nd', [True, False])
def test_cardinality_matches_brute_force(nd):
    expected = _brute_force(TINY, nd)
    assert expected > 100
    assert SearchSpace(**TINY).cardinality(nd=nd) == expected


def test_table1_cardinality_exact(table1):
    assert table1.cardinality(nd=True) == 332353674695147520
    assert table1.cardinality(nd=False) == 3960359488725851308032
    assert isinstance(table1.cardinality(), int)


def test_mutation_and_crossover_stay_valid(table1):
    rng = random.Random(0)
    pop = table1.sample_many(50, seed=1) + [table1.largest(), table1.smallest()]
    changed = 0
    for _ in range(3000):
        a, b = rng.choice(pop), rng.choice(pop)
        m = mutate(table1, a, prob=0.3, rng=rng)
        c = crossover(table1, a, b, rng=rng)
        table1.validate(m)
        table1.validate(c)
        changed += (m != a)
        pop.append(m if rng.random() < 0.5 else c)
        pop = pop[-100:]
    assert changed > 2500


def test_mutation_crossover_valid_in_tiny_space_with_group_constraints():
    sp = SearchSpace(**TINY)
    rng = random.Random(1)
    pop = sp.sample_many(20, seed=0)
    for _ in range(3000):
        a, b = rng.choice(pop), rng.choice(pop)
        sp.validate(mutate(sp, a, 0.5, rng))
        sp.validate(crossover(sp, a, b, rng))


def test_crossover_repairs_nd():
    sp = SearchSpace.table1()
    a = get_preset('A')
    b = get_preset('F')
    rng = random.Random(0)
    kids = [crossover(sp, a, b, rng) for _ in range(200)]
    assert len(set(kids)) > 50
    for k in kids:
        sp.validate(k)


@pytest.mark.parametrize('text,msg', [
    ('c24_k3_g1 | c50_k3_g1 c48_k3_g1 | c96_k3_g2 c96_k3_g2 | c192_k3_g4 c192_k3_g4 | c384_k3_g8 x8 | c768_k3_g16 x2',
     'stage 1 layer 1: width 50 not allowed (allowed: 48, 64, 96)'),
    ('c24_k3_g1 | c48_k3_g1 c48_k3_g1 | c96_k7_g2 c96_k3_g2 | c192_k3_g4 c192_k3_g4 | c384_k3_g8 x8 | c768_k3_g16 x2',
     'stage 2 layer 1: kernel 7 not allowed (allowed: 3, 5)'),
    ('c24_k3_g1 | c48_k3_g1 c48_k3_g1 | c96_k3_g4 c96_k3_g2 | c192_k3_g4 c192_k3_g4 | c384_k3_g8 x8 | c768_k3_g16 x2',
     'stage 2 layer 1: groups 4 not allowed (allowed: 1, 2)'),
    ('c24_k3_g1 | c48_k3_g1 | c96_k3_g2 c96_k3_g2 | c192_k3_g4 c192_k3_g4 | c384_k3_g8 x8 | c768_k3_g16 x2',
     'stage 1: depth 1 not allowed (allowed: 2, 3)'),
    ('c24_k3_g1 | c64_k3_g1 c48_k3_g1 | c96_k3_g2 c96_k3_g2 | c192_k3_g4 c192_k3_g4 | c384_k3_g8 x8 | c768_k3_g16 x2',
     'stage 1 layer 2: width 48 < 64 of stage 1 layer 1 (Non-Decreasing'),
    ('c64_k3_g1 | c48_k3_g1 c48_k3_g1 | c96_k3_g2 c96_k3_g2 | c192_k3_g4 c192_k3_g4 | c384_k3_g8 x8 | c768_k3_g16 x2',
     'stem: width 64 not allowed (allowed: 24, 32, 48)'),
    ('c24_k3_g1 | c48_k3_g1 c48_k3_g1 | c96_k3_g2 c96_k3_g2 | c192_k3_g4 c192_k3_g4 | c384_k3_g8 x8',
     'architecture: has 4 stages, the search space has 5'),
    ('c24_k3_g1 | c48-k3-g1 c48_k3_g1 | c96_k3_g2', "stage 1 layer 1: malformed layer token 'c48-k3-g1'"),
    ('c24_k3_g1', 'architecture text: found 1 part(s)'),
    ('Z', "architecture: unknown preset 'Z' (allowed: A, B, C, D, E, F"),
])
def test_validation_errors_are_one_line(table1, text, msg):
    with pytest.raises(ArchitectureError) as e:
        table1.validate(text)
    assert msg in str(e.value)
    assert '\n' not in str(e.value)


def test_groups_must_divide_channels():
    sp = SearchSpace(stem=dict(widths=[6]), stages=[dict(depths=[1], widths=[8], kernels=[3], groups=[1, 4])])
    with pytest.raises(ArchitectureError, match='groups 4 do not divide its 6 input channels'):
        sp.validate('c6_k3_g1 | c8_k3_g4')
    sp.validate('c6_k3_g1 | c8_k3_g1')


def test_bad_space_config_errors():
    with pytest.raises(ArchitectureError, match=r"unknown field\(s\) \['width'\] in stage 1"):
        SearchSpace(stem=dict(widths=[8]), stages=[dict(width=[8], depths=[1], kernels=[3], groups=[1])])
    with pytest.raises(ArchitectureError, match='stage 1 kernels must be odd'):
        SearchSpace(stem=dict(widths=[8]), stages=[dict(widths=[8], depths=[1], kernels=[4], groups=[1])])
