"""The code's structure: one-way imports, a pure-Python space package, and the three forms
(dynamic -> static -> deployed) of every module of a NAS-BNN layer."""
import ast
import os
import subprocess
import sys

import pytest
import torch

from nasbnn_mm.ops import (BINARY, TEACHER, DeployedBinaryConv2d, LSQConv2d, RPReLU, RSign, SharedBinaryConv2d,
                           SlicedBatchNorm2d)
from nasbnn_mm.space import LayerChoice

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, 'nasbnn_mm')
# space <- ops <- models <- engine, det <- apis (utils and registry sit below ops; space uses neither)
LAYERS = {
    'space': 0,
    'utils': 1,
    'registry': 1,
    'ops': 2,
    'models': 3,
    'datasets': 3,
    'engine': 4,
    'det': 4,
    'deploy': 4,
    'apis': 5
}


def _imports(path):
    """The nasbnn_mm subpackages a source file imports (relative and absolute imports)."""
    pkg = os.path.relpath(path, PKG).split(os.sep)
    tree = ast.parse(open(path, encoding='utf-8').read())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[:len(pkg) - node.level]
                parts = base + (node.module.split('.') if node.module else [])
                if not parts:  # `from .. import x`
                    parts = [a.name for a in node.names]
                yield parts[0]
            elif node.module and node.module.startswith('nasbnn_mm.'):
                yield node.module.split('.')[1]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith('nasbnn_mm.'):
                    yield a.name.split('.')[1]


def test_imports_point_one_way():
    bad = []
    for dirpath, _, files in os.walk(PKG):
        for f in files:
            if not f.endswith('.py'):
                continue
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, PKG).split(os.sep)
            me = rel[0][:-3] if len(rel) == 1 else rel[0]
            if me == '__init__':
                continue
            for target in _imports(path):
                target = target[:-3] if target.endswith('.py') else target
                if target in LAYERS and target != me and (LAYERS[target] >= LAYERS[me] or
                                                          (me == 'space' and target != 'space')):
                    bad.append(f'{"/".join(rel)} imports nasbnn_mm.{target}')
    assert not bad, bad


def _run(code):
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_space_package_and_count_ops_load_neither_torch_nor_mmdet():
    out = _run('import sys; import nasbnn_mm.space as s; s.count_ops(s.get_preset("A")); '
               'print("torch" in sys.modules, "mmdet" in sys.modules, "mmpretrain" in sys.modules)')
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ['False', 'False', 'False']
    out = _run('import runpy, sys; sys.argv = ["count_ops.py", "A", "--per-layer"]\n'
               'try:\n    runpy.run_path("tools/count_ops.py", run_name="__main__")\n'
               'except SystemExit:\n    pass\n'
               'print("MODULES", "torch" in sys.modules, "mmdet" in sys.modules)')
    assert out.returncode == 0, out.stderr
    assert 'OPs        20.77M' in out.stdout and 'MODULES False False' in out.stdout


# ----------------------------------------------------------------------------- dynamic -> static -> deployed
def _randomize(m, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(m.named_parameters()) + list(m.named_buffers()):
            if t.is_floating_point():
                if 'running_var' in name or name == 'step':
                    t.uniform_(0.5, 2.0, generator=g) if name != 'step' else t.fill_(0.01)
                elif 'transform' in name:
                    t.add_(0.1 * torch.randn(t.shape, generator=g, dtype=t.dtype))
                else:
                    t.copy_(torch.randn(t.shape, generator=g, dtype=t.dtype) * 0.5)
    return m


@pytest.mark.parametrize('cls', [RSign, RPReLU, SlicedBatchNorm2d])
def test_channel_modules_static_and_deployed_forms(cls):
    m = _randomize(cls(8).double()).eval()
    x = torch.randn(2, 5, 4, 4, dtype=torch.float64)
    static = m.to_static(5).eval()
    assert sum(p.numel() for p in static.parameters()) * 8 == sum(p.numel() for p in m.parameters()) * 5
    assert torch.allclose(static(x), m(x), rtol=0, atol=1e-12)
    deployed = static.to_deployed().eval()
    assert torch.allclose(deployed(x), m(x), rtol=1e-12, atol=1e-12)
    names = [f.attr for f in deployed.packed_fields()]
    state = deployed.unpacked_state(deployed.packed_values())
    # the packed form stores float32
    assert names and set(names) <= set(state) and all(
        torch.equal(state[n],
                    getattr(deployed, n).float()) for n in names)


def test_stem_conv_static_and_deployed_forms():
    m = LSQConv2d(3, 8, 3, 2).double()
    _randomize(m)
    m.init_step()
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    static = m.to_static(5)
    assert torch.equal(static(x, 5), m(x, 5))
    deployed = static.to_deployed()
    assert torch.equal(deployed.quantized_weight(5), static.quantized_weight(5))  # the integers survive
    q, step = deployed.packed_values()
    assert q.dtype == torch.int8 and int(q.abs().max()) <= 128
    assert torch.allclose(q.double().view(5, 3, 3, 3) * step.double().view(-1, 1, 1, 1), deployed.weight, rtol=1e-6)


@pytest.mark.parametrize('mode', [BINARY, TEACHER])
@pytest.mark.parametrize('c_in,c_out,k,g', [(8, 8, 3, 2), (6, 6, 5, 1), (8, 12, 1, 1)])
def test_binary_conv_static_and_deployed_forms(mode, c_in, c_out, k, g):
    dyn = _randomize(SharedBinaryConv2d(12, 12, (3, 5) if k > 1 else (1, ), (1, 2, 4) if k > 1 else (1, )).double())
    x = torch.randn(2, c_in, 7, 7, dtype=torch.float64).sign()
    static = dyn.to_static(c_in, c_out, k, g, mode)
    assert static.is_static and static.weight.shape == (c_out, c_in // g, k, k)
    assert torch.allclose(static(x, c_out, k, g, 1, mode), dyn(x, c_out, k, g, 1, mode), rtol=0, atol=1e-12)
    if mode == BINARY:
        deployed = static.to_deployed()
        assert isinstance(deployed, DeployedBinaryConv2d) and not hasattr(deployed, 'weight')
        # the deployed conv computes the integer form conv(x, sign) * alpha (one rounding; what the 1-bit
        # runtime computes), the static one conv(x, alpha * sign): equal up to the static sums' rounding
        exact = torch.nn.functional.conv2d(x, deployed.sign, None, 1, k // 2, 1, g) * deployed.alpha.view(1, -1, 1, 1)
        assert torch.equal(deployed(x, c_out, k, g, 1), exact)
        assert torch.allclose(deployed(x, c_out, k, g, 1), static(x, c_out, k, g, 1), rtol=0, atol=1e-12)
        assert torch.equal(deployed.effective_weight(c_in, c_out, k, g), static.effective_weight(c_in, c_out, k, g))
        assert set(deployed.sign.unique().tolist()) <= {-1.0, 1.0}
        with pytest.raises(ValueError, match='asked for'):
            deployed(x, c_out + 1, k, g, 1)


def test_layer_forms_and_supernet_get_active_subnet():
    from nasbnn_mm.models import NASBNNSupernet, SeparableBinaryLayer
    net = _randomize(NASBNNSupernet('configs/_base_/search_spaces/cifar_small.py').double()).eval()
    layer = net.stages[3][0]
    assert isinstance(layer, SeparableBinaryLayer)
    x = torch.randn(2, 48, 6, 6, dtype=torch.float64)
    choice = LayerChoice(64, 5, 4)
    static = layer.to_static(48, choice, BINARY).eval()
    assert torch.allclose(static(x, 64, 5, 4), layer(x, 64, 5, 4), rtol=0, atol=1e-10)
    deployed = static.to_deployed().eval()
    assert isinstance(deployed.conv_kxk, DeployedBinaryConv2d)
    assert torch.allclose(deployed(x, 64, 5, 4), static(x, 64, 5, 4), rtol=1e-9, atol=1e-9)
    arch = net.space.sample(__import__('random').Random(1))
    sub = net.get_active_subnet(arch)
    assert sub.arch == arch and sub.settings() == net.settings()
    assert not any('transform' in k for k in sub.state_dict())
