import subprocess
import sys

import pytest

from nasbnn_mm.space import PRESET_NAMES, SearchSpace, count_ops, get_preset, profile_arch

TINY = dict(
    stem=dict(widths=[4, 8]),
    stages=[
        dict(depths=[1, 2], widths=[4, 8, 12], kernels=[3], groups=[1, 2], stride=1),
        dict(depths=[1, 2], widths=[8, 12, 16], kernels=[3, 5], groups=[2, 4], stride=2),
    ])
ARCH = 'c4_k3_g1 | c8_k3_g2 | c12_k5_g4 c16_k3_g2'


def test_per_layer_ops_by_hand():
    sp = SearchSpace(**TINY)
    arch = sp.validate(ARCH)
    rep = profile_arch(arch, img_size=8, num_classes=10, space=sp)
    macs = {l.name: l.macs for l in rep.layers}
    # stem: 8x8 -> 4x4, 3->4 channels, 3x3: 16 * 3*9 * 4
    assert macs['stem'] == 16 * 27 * 4 == 1728
    # stage 1 (stride 1, 4x4): 3x3 conv on 4 channels in 2 groups, then 1x1 4 -> 8
    assert macs['stage1.0.conv3x3'] == 16 * 4 * 2 * 9 == 1152
    assert macs['stage1.0.conv1x1'] == 16 * 4 * 8 == 512
    # stage 2 (stride 2 -> 2x2): 5x5 on 8 channels in 4 groups; 1x1 8 -> 12; 3x3 on 12 in 2 groups; 1x1 12 -> 16
    assert macs['stage2.0.conv5x5'] == 4 * 8 * 2 * 25 == 1600
    assert macs['stage2.0.conv1x1'] == 4 * 8 * 12 == 384
    assert macs['stage2.1.conv3x3'] == 4 * 12 * 6 * 9 == 2592
    assert macs['stage2.1.conv1x1'] == 4 * 12 * 16 == 768
    assert macs['fc'] == 16 * 10 + 10
    assert rep.bops == 7008 and rep.int8ops == 1728 and rep.flops == 170
    assert rep.ops == pytest.approx(170 + 1728 / 8 + 7008 / 64) == 495.5
    assert count_ops(arch, 8, 10, space=sp) == rep.ops
    # parameters: binary weights, 8-bit stem, fp32 classifier + per-channel vectors
    assert rep.binary_params == 4 * 2 * 9 + 4 * 8 + 8 * 2 * 25 + 8 * 12 + 12 * 6 * 9 + 12 * 16
    assert rep.int8_params == 27 * 4
    fp_vectors = 6 * 4 + (7 * 4 + 4 + 6 * 8) + (7 * 8 + 8 + 6 * 12) + (7 * 12 + 12 + 6 * 16)
    assert rep.fp_params == 16 * 10 + 10 + fp_vectors
    assert rep.size_bytes == rep.binary_params / 8 + rep.int8_params + 4 * rep.fp_params


def test_odd_and_non_square_sizes_round_up():
    sp = SearchSpace(**TINY)
    rep = profile_arch(sp.validate(ARCH), img_size=(7, 9), num_classes=10, space=sp)
    hw = {l.name: l.out_hw for l in rep.layers}
    assert hw['stem'] == (4, 5) and hw['stage2.0.conv1x1'] == (2, 3)
    assert count_ops(sp.validate(ARCH), (7, 9), 10, space=sp) == rep.ops


@pytest.mark.parametrize('name', PRESET_NAMES)
def test_presets_in_paper_range(name):
    # the paper's A..F span roughly 20M .. 195M OPs in increasing order
    ops = [count_ops(get_preset(n)) for n in PRESET_NAMES]
    assert ops == sorted(ops)
    assert 15e6 < count_ops(get_preset(name)) < 200e6
    assert count_ops(get_preset(name)) == pytest.approx(profile_arch(get_preset(name)).ops)


def test_count_ops_tool_outputs():
    out = subprocess.run([sys.executable, 'tools/count_ops.py', 'A', '--per-layer', '--space-size'],
                         capture_output=True,
                         text=True,
                         check=True).stdout
    assert '332,353,674,695,147,520 architectures under ND' in out
    assert 'OPs        20.77M' in out
    assert 'stage4.7.conv1x1' in out and 'deployed' in out
    bad = subprocess.run([sys.executable, 'tools/count_ops.py', 'c24_k3_g1 | c48_k3_g9'],
                         capture_output=True,
                         text=True)
    assert bad.returncode == 2 and bad.stderr.strip().count('\n') == 0
    assert bad.stderr.startswith('error: ')
