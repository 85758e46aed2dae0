"""The paper's ablations as switches and tools (#11): each switch changes exactly what it names,
the search space without ND, the sandwich teacher / distillation choices, the statistics, and the
Fig. 3 tools end to end on a small supernet."""
import json
import math
import os
import random
import subprocess
import sys

import pytest
import torch
from mmengine.optim import OptimWrapper
from mmpretrain.structures import DataSample
from test_models import SMALL_SPACE, build_classifier

import nasbnn_mm  # noqa: F401
from nasbnn_mm.engine.sampling import draw_subnets
from nasbnn_mm.models import NASBNNSupernet
from nasbnn_mm.ops import BINARY, FULL, TEACHER, RSign, SharedBinaryConv2d, normalize_binarize_weight
from nasbnn_mm.space import ArchitectureError, SearchSpace
from nasbnn_mm.utils.stats import bootstrap_ci, kendall_tau, paired_difference, rank_correlation, spearman_rho

DATA = os.environ.get('NASBNN_DATA', os.path.join('..', 'shared', 'data'))


@pytest.fixture(scope='module')
def table1():
    return SearchSpace.build(None)


# ---------------------------------------------------------------- binary conv switches
def _conv(**kw):
    torch.manual_seed(0)
    return SharedBinaryConv2d(6, 8, (3, 5), (1, ), **kw).double()


def test_weight_norm_off_binarizes_the_raw_weight():
    """weight_norm=False: alpha * sign(W) of the raw latent weight (alpha = mean |W| per output channel),
    teacher = W itself; with it on, the weight is normalized first (the paper)."""
    conv = _conv(weight_norm=False, bi_transform=False)
    w = conv.weight.detach()
    alpha = w.abs().mean(dim=(1, 2, 3), keepdim=True)
    eff = conv.effective_weight(6, 8, 5, 1, BINARY).detach()
    assert torch.equal(eff, torch.where(w > 0, 1.0, -1.0).double() * alpha)
    assert torch.equal(conv.effective_weight(6, 8, 5, 1, TEACHER).detach(), w)
    on = _conv(bi_transform=False)
    assert torch.equal(on.weight, conv.weight)
    assert torch.equal(on.effective_weight(6, 8, 5, 1, BINARY).detach(), normalize_binarize_weight(w, 1e-5).detach())
    # normalization changes alpha (and the signs where a channel's mean crosses a weight)
    assert not torch.equal(on.effective_weight(6, 8, 5, 1, BINARY), eff)
    # the deployed form stores the same effective weight
    static = conv.to_static(6, 8, 5, 1, BINARY)
    dep = static.to_deployed()
    assert torch.equal(dep.sign * dep.alpha.view(-1, 1, 1, 1), eff)


def test_kernel_and_bi_transform_switches_remove_exactly_their_parameters():
    names = {n for n, _ in _conv().named_parameters()}
    assert names == {'weight', 'bi_transform', 'kernel_transforms.k3'}
    assert {n for n, _ in _conv(bi_transform=False).named_parameters()} == names - {'bi_transform'}
    assert {n for n, _ in _conv(kernel_transform=False).named_parameters()} == names - {'kernel_transforms.k3'}
    # without both: the 5x5 kernel is the latent weight, the 3x3 its centre crop
    plain = _conv(bi_transform=False, kernel_transform=False)
    w = plain.weight.detach()
    assert torch.equal(plain.latent_weight(6, 8, 5, 1).detach(), w)
    assert torch.equal(plain.latent_weight(6, 8, 3, 1).detach(), w[:, :, 1:4, 1:4])
    # with the (identity-initialized) transforms the same holds until they are trained
    full = _conv()
    assert torch.equal(full.latent_weight(6, 8, 3, 1).detach(), w[:, :, 1:4, 1:4])
    with torch.no_grad():
        full.kernel_transforms['k3'].mul_(2)
    assert torch.equal(full.latent_weight(6, 8, 3, 1).detach(), 2 * w[:, :, 1:4, 1:4])


def test_rsign_full_precision_pass_is_the_shifted_input():
    s = RSign(3)
    with torch.no_grad():
        s.bias.copy_(torch.tensor([0.5, -1.0, 0.0]))
    x = torch.randn(2, 3, 4, 4)
    assert torch.equal(s(x, binary=False), x + s.bias.view(1, 3, 1, 1))
    assert set(s(x).unique().tolist()) <= {-1.0, 1.0}


def test_full_mode_feeds_real_valued_activations_to_every_conv():
    """FWFA: every binary conv's input is real-valued; FWBA (teacher) and the binary student feed
    signs (+-1) to every conv."""
    torch.manual_seed(0)
    net = NASBNNSupernet(SMALL_SPACE).eval()
    # an untrained LSQ stem rounds its weights to 0: give the blocks a real-valued input
    noise = torch.randn(2, 16, 32, 32)
    net.stem.register_forward_hook(lambda m, i, out: out + noise[:, :out.shape[1]])
    seen = []
    for m in net.modules():
        if isinstance(m, SharedBinaryConv2d):
            m.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for mode in (BINARY, TEACHER, FULL):
            net.set_subnet('largest', mode)
            seen.clear()
            net(x)
            assert len(seen) == 2 * sum(len(s) for s in net.arch.stages)
            signs = [bool(((t == 1) | (t == -1)).all()) for t in seen]
            assert all(signs) if mode != FULL else not any(signs), mode


def test_supernet_switches_name_their_keys_and_inheritance_follows_them(tmp_path):
    from nasbnn_mm.det import NASBNNDetBackbone
    from nasbnn_mm.utils import publish_checkpoint
    torch.manual_seed(0)
    plain = NASBNNSupernet(SMALL_SPACE, weight_norm=False, bi_transform=False, kernel_transform=False)
    keys = set(plain.state_dict())
    full_keys = set(NASBNNSupernet(SMALL_SPACE).state_dict())
    extra = full_keys - keys
    assert extra and all('bi_transform' in k or 'kernel_transforms' in k for k in extra)
    assert keys <= full_keys
    assert plain.settings()['weight_norm'] is False
    sd = {f'backbone.{k}': v for k, v in plain.state_dict().items()}
    path = publish_checkpoint(sd, str(tmp_path / 'p.pth'),
                              dict(search_space=plain.space.to_dict(), backbone_settings=plain.settings()))
    det = NASBNNDetBackbone(
        arch='largest',
        search_space=SMALL_SPACE,
        weight_norm=False,
        init_cfg=dict(type='nasbnn.InheritFromSupernet', checkpoint=path))
    det.init_weights()
    ref = plain.get_active_subnet('largest', BINARY)
    x = torch.randn(1, 3, 32, 32)
    det.eval(), ref.eval()
    with torch.no_grad():
        torch.testing.assert_close(det(x)[-1], ref(x)[-1], rtol=0, atol=0)
    with pytest.raises(ValueError, match='weight_norm'):
        NASBNNSupernet(SMALL_SPACE, weight_norm='no')


# ---------------------------------------------------------------- search space without ND
def test_no_nd_space_samples_decreasing_widths_and_validates_them(table1):
    free = table1.with_nd(False)
    assert free.nd is False and table1.nd is True
    assert free.cardinality() == 3960359488725851308032 == table1.cardinality(nd=False)
    assert table1.cardinality() == 332353674695147520
    rng = random.Random(0)
    decreasing = 0
    for _ in range(50):
        a = free.sample(rng)
        free.validate(a)
        widths = [a.stem.width] + [layer.width for s in a.stages for layer in s]
        if any(b < p for p, b in zip(widths, widths[1:])):
            decreasing += 1
            with pytest.raises(ArchitectureError):
                table1.validate(a)
    assert decreasing > 40  # nearly every free draw breaks ND somewhere in 20 layers
    for _ in range(50):
        a = table1.sample(rng)
        widths = [a.stem.width] + [layer.width for s in a.stages for layer in s]
        assert all(b >= p for p, b in zip(widths, widths[1:]))
    # the config form records the switch only when off, and round-trips
    assert 'nd' not in table1.to_dict() and free.to_dict()['nd'] is False
    assert SearchSpace.build(free.to_dict()) == free != table1
    with pytest.raises(ArchitectureError, match='nd'):
        SearchSpace.build(dict(table1.to_dict(), nd='no'))


# ---------------------------------------------------------------- sandwich teacher / distillation
def _batch(n=4, classes=10):
    torch.manual_seed(1)
    return dict(
        inputs=[torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8) for _ in range(n)],
        data_samples=[DataSample().set_gt_label(i % classes) for i in range(n)])


@pytest.mark.parametrize('teacher,mode', [('FWBA', TEACHER), ('FWFA', FULL), ('BWBA', BINARY)])
def test_sandwich_teacher_mode_and_distillation_switch(teacher, mode):
    model = build_classifier()
    model.teacher, model.distill = teacher, False
    seen = []
    forward = model.forward

    def record(inputs, data_samples=None, mode='tensor', arch=None, weight_mode=None):
        out = forward(inputs, data_samples, mode, arch, weight_mode)
        seen.append((weight_mode, out))
        return out

    model.forward = record
    opt = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.0))
    logs = model.train_step(_batch(), opt)
    assert seen[0][0] == mode and all(m == BINARY for m, _ in seen[1:])
    labels = torch.tensor([i % 10 for i in range(4)])
    for (_, logits), name in zip(seen[1:], [n for n, _ in model.sandwich_archs(0)]):
        # distill=False: the students learn from the labels with the teacher's loss
        torch.testing.assert_close(logs[f'loss_{name}'], model.teacher_loss(logits, labels).detach())
        assert logs[f'acc_{name}'] == (logits.argmax(1) == labels).float().mean() * 100
    assert {'acc_teacher', 'acc_students'} <= set(logs)


def test_sandwich_arguments_are_checked():
    from nasbnn_mm.models import SandwichClassifier
    sp = SearchSpace.build(SMALL_SPACE)
    kw = dict(
        backbone=dict(type='nasbnn.NASBNNSupernet', search_space=sp.to_dict()),
        head=dict(type='nasbnn.SlicedLinearClsHead', num_classes=10, in_channels=max(sp.stages[-1].widths)))
    with pytest.raises(ValueError, match="teacher: 'FP'.*FWBA, FWFA, BWBA"):
        SandwichClassifier(teacher='FP', **kw)
    with pytest.raises(ValueError, match='distill'):
        SandwichClassifier(distill=1, **kw)
    with pytest.raises(ValueError, match='num_random'):
        SandwichClassifier(num_random=-1, **kw)


# ---------------------------------------------------------------- statistics, by hand
def test_rank_correlations_by_hand():
    x, y = [1, 2, 3, 4], [1, 3, 2, 4]
    # one discordant pair of six: tau = (5 - 1) / 6; sum d^2 = 2: rho = 1 - 6*2 / (4*15)
    assert kendall_tau(x, y) == pytest.approx(4 / 6)
    assert spearman_rho(x, y) == pytest.approx(0.8)
    assert kendall_tau(x, x[::-1]) == pytest.approx(-1) and spearman_rho(x, x[::-1]) == pytest.approx(-1)
    # ties: x = [1, 1, 2], y = [1, 2, 3]: concordant 2, tied in x 1 -> tau-b = 2 / sqrt(3 * 2)
    assert kendall_tau([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6))
    # ranks with ties averaged: [1.5, 1.5, 3] vs [1, 2, 3] -> Pearson = sqrt(3) / 2
    assert spearman_rho([1, 1, 2], [1, 2, 3]) == pytest.approx(math.sqrt(3) / 2)
    res = rank_correlation(list(range(20)), [v + (3 if v % 5 == 0 else 0) for v in range(20)])
    assert res['n'] == 20 and res['kendall_ci'][0] <= res['kendall_tau'] <= res['kendall_ci'][1] <= 1
    with pytest.raises(ValueError, match='at least 3'):
        rank_correlation([1, 2], [1, 2])


def test_bootstrap_and_paired_difference():
    lo, hi = bootstrap_ci([5.0] * 10)
    assert lo == hi == 5.0
    vals = [float(v) for v in range(100)]
    lo, hi = bootstrap_ci(vals)
    assert lo < 49.5 < hi and hi - lo < 25  # sd of the mean ~2.9: the 95 % interval ~ +-5.7
    d = paired_difference([1.0, 2.0, 3.0], [2.0, 3.0, 5.0])
    assert d['mean'] == pytest.approx(4 / 3) and d['median'] == 1.0 and d['n'] == 3
    with pytest.raises(ValueError, match='equal'):
        paired_difference([1.0], [1.0, 2.0])


# ---------------------------------------------------------------- the tools end to end
def _run(*cmd, fails=False):
    """stdout of a tool run that succeeds; with ``fails=True``, the last stderr line of one that fails."""
    out = subprocess.run([sys.executable, *cmd], capture_output=True, text=True, timeout=900)
    if fails:
        assert out.returncode != 0, out.stdout[-2000:]
        return out.stderr.strip().splitlines()[-1]
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out.stdout


@pytest.mark.skipif(
    not os.path.isfile(os.path.join(DATA, 'cifar10_jpg.tar.gz')), reason=f'shared data missing at {DATA}')
def test_sample_compare_and_correlate_tools(tmp_path):
    from test_search import CONFIG, SMALL, publish_random_supernet
    ckpt = publish_random_supernet(tmp_path / 'published.pth', seed=0)
    runs = {}
    for name, flag in (('nd', []), ('free', ['--no-nd'])):
        work = tmp_path / name
        _run('tools/sample_subnets.py', CONFIG, ckpt, '--num', '4', *flag, '--work-dir', str(work), '--cfg-options',
             *SMALL)
        with open(work / 'samples.json') as f:
            runs[name] = json.load(f)
    sp = SearchSpace.build(runs['nd']['search_space'])
    assert runs['nd']['nd'] is True and runs['free']['nd'] is False
    for name, data in runs.items():
        assert len(data['samples']) == 4 and len({r['arch'] for r in data['samples']}) == 4
        for r in data['samples']:
            assert 0 <= r['acc'] <= 100 and r['ops'] > 0
            sp.with_nd(data['nd']).validate(r['arch'])
    # the same draw for the same seed: a second supernet scores the same subnets
    ckpt2 = publish_random_supernet(tmp_path / 'other.pth', seed=1)
    _run('tools/sample_subnets.py', CONFIG, ckpt2, '--num', '4', '--work-dir', str(tmp_path / 'nd2'), '--cfg-options',
         *SMALL)
    with open(tmp_path / 'nd2' / 'samples.json') as f:
        other = json.load(f)
    assert [r['arch'] for r in other['samples']] == [r['arch'] for r in runs['nd']['samples']]
    # --resume with a larger --num extends the same draw: the saved four kept as they were, two more evaluated
    resume = ('--resume', '--work-dir', str(tmp_path / 'nd2'), '--cfg-options', *SMALL)
    _run('tools/sample_subnets.py', CONFIG, ckpt2, '--num', '6', *resume)
    with open(tmp_path / 'nd2' / 'samples.json') as f:
        extended = json.load(f)
    assert extended['samples'][:4] == other['samples'] and extended['num'] == 6
    assert [r['arch'] for r in extended['samples']] == [a.to_text() for a in draw_subnets(sp, 6, 0)]
    fewer = _run('tools/sample_subnets.py', CONFIG, ckpt2, '--num', '3', *resume, fails=True)
    assert '--num >= 6' in fewer
    out = _run('tools/sample_subnets.py', '--compare', str(tmp_path / 'nd' / 'samples.json'),
               str(tmp_path / 'nd2' / 'samples.json'), '--labels', 'a', 'b', '--out', str(tmp_path / 'fig3.png'))
    assert 'paired difference' in out and os.path.getsize(tmp_path / 'fig3.png') > 10_000
    # rank correlation by hand: ranks 1 2 3 4 vs 1 2 4 3 -> tau (5 - 1) / 6, rho 1 - 6 * 2 / (4 * 15)
    archs = [r['arch'] for r in runs['nd']['samples']]
    for name, accs in (('x', [1, 2, 3, 4]), ('y', [10, 20, 40, 30]), ('tied', [5, 5, 5, 5])):
        with open(tmp_path / f'{name}.json', 'w') as f:
            json.dump([dict(arch=a, acc=v) for a, v in zip(archs, accs)], f)
    out = _run('tools/rank_correlation.py', str(tmp_path / 'x.json'), str(tmp_path / 'y.json'))
    assert '4 subnets: Kendall tau 0.667' in out and 'Spearman rho 0.800' in out
    out = _run('tools/rank_correlation.py', str(tmp_path / 'x.json'), str(tmp_path / 'tied.json'))
    assert 'undefined (every score tied' in out


def test_plot_training_reads_mmengine_scalars(tmp_path):
    for name, slope in (('a', 1.0), ('b', 0.5)):
        d = tmp_path / name / '20260101_000000' / 'vis_data'
        d.mkdir(parents=True)
        with open(d / 'scalars.json', 'w') as f:
            for it in range(1, 21):
                f.write(json.dumps(dict(iter=it, acc_students=slope * it, loss=1.0)) + '\n')
    out = _run('tools/plot_training.py', str(tmp_path / 'a'), str(tmp_path / 'b'), '--smooth', '1', '--out',
               str(tmp_path / 'c.png'))
    assert 'a                        last acc_students (smoothed): 20.00' in out
    assert 'last acc_students (smoothed): 10.00' in out and os.path.isfile(tmp_path / 'c.png')
    bad = subprocess.run([sys.executable, 'tools/plot_training.py',
                          str(tmp_path / 'a'), '--key', 'nope'],
                         capture_output=True,
                         text=True)
    assert bad.returncode != 0 and "no 'nope'" in bad.stderr
