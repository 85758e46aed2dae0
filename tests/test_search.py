"""tools/search.py: bookkeeping of the evolutionary loop, resume equality, kill + resume."""
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict

import pytest
import torch

from nasbnn_mm.engine.search_loop import _bin
from nasbnn_mm.space import SearchSpace, count_ops

DATA = os.environ.get('NASBNN_DATA', os.path.join('..', 'shared', 'data'))
CONFIG = 'configs/cifar10/nasbnn-search_cifar-small_cifar10.py'
pytestmark = pytest.mark.skipif(
    not os.path.isfile(os.path.join(DATA, 'cifar10_jpg.tar.gz')),
    reason=f'shared data missing at {DATA} (set NASBNN_DATA)')
HELDOUT = '[' + ','.join(str(i) for i in range(0, 500, 10)) + ']'  # 5 images of each class
SMALL = [
    'train_cfg.population_size=5', 'train_cfg.num_mutation=2', 'train_cfg.num_crossover=2', 'train_cfg.calib_batches=1',
    f'train_dataloader.dataset.indices={HELDOUT}', 'train_dataloader.num_workers=0',
    'train_dataloader.persistent_workers=False', 'train_cfg.calib_dataloader.num_workers=0',
    'train_cfg.calib_dataloader.batch_size=16'
]


def publish_random_supernet(path, seed: int) -> str:
    """A published supernet of the search config with trained-looking (non-degenerate) random
    weights. (The held-out split the search reads is written by the session fixture.)"""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    import nasbnn_mm  # noqa: F401
    from nasbnn_mm.registry import MODELS
    from nasbnn_mm.utils import publish_checkpoint
    torch.manual_seed(seed)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(Config.fromfile(CONFIG).model)
    with torch.no_grad():  # spread the accuracies a little: non-trivial classifier
        model.head.fc.weight.normal_(0, 0.5)
    publish_checkpoint(model.state_dict(), str(path), dict(search_space=model.backbone.space.to_dict()))
    return str(path)


@pytest.fixture(scope='module')
def supernet_ckpt(tmp_path_factory):
    return publish_random_supernet(tmp_path_factory.mktemp('supernet') / 'published.pth', seed=0)


def _search(ckpt, work, gens, *extra, wait=True):
    cmd = [
        sys.executable, 'tools/search.py', CONFIG, ckpt, '--work-dir',
        str(work), *extra, '--cfg-options', *SMALL, f'train_cfg.max_generations={gens}'
    ]
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def _front(work):
    with open(work / 'pareto.json') as f:
        return json.load(f)['front']


def test_bin_is_nearest_multiple():
    assert _bin(0.051462, 0.02) == 0.06 and _bin(0.049, 0.02) == 0.04
    assert _bin(21.0, 2) == 22 and _bin(20.99, 2) == 20 and _bin(179.9, 2) == 180


def test_search_bookkeeping_and_resume_equality(supernet_ckpt, tmp_path):
    full = tmp_path / 'full'
    out = _search(supernet_ckpt, full, 2)
    assert '[search] gen 2/2' in out.stdout + out.stderr and 'eta' in out.stdout + out.stderr
    for name in ('pareto.json', 'candidates.json', 'pareto.png', 'search_state.json'):
        assert (full / name).is_file()
    sp = SearchSpace.build(CONFIG)
    cands = json.loads((full / 'candidates.json').read_text())['candidates']
    texts = [c['arch'] for c in cands]
    assert len(texts) == len(set(texts)) == 5 + 2 * (2 + 2)  # cache: nothing evaluated twice
    by_bin = defaultdict(list)
    for c in cands:
        arch = sp.validate(c['arch'])
        assert c['ops'] == pytest.approx(count_ops(arch, 32, 10, space=sp) / 1e6)
        assert 0.05 <= c['ops'] <= 0.5  # window
        by_bin[_bin(c['ops'], 0.02)].append(c)
    assert {c['arch'] for c in cands if c['generation'] == 0} >= {sp.smallest().to_text()}
    front = _front(full)
    assert [r['bin'] for r in front] == sorted(by_bin)  # one entry per occupied bin
    for r in front:
        assert r['bin'] == _bin(r['ops'], 0.02)
        assert r['acc'] == max(c['acc'] for c in by_bin[r['bin']])

    # export the best front subnet; pipeline 1 (tools/test.py on the static model) gives the
    # accuracy the search reported for it: same held-out data, same recalibration batches
    best = max(front, key=lambda r: (r['acc'], -r['ops']))
    export = tmp_path / 'export'
    out = subprocess.run([
        sys.executable, 'tools/export_subnet.py', CONFIG, supernet_ckpt, '--arch',
        str(full / 'pareto.json'), '--ops',
        str(best['bin']), '--out-dir',
        str(export), '--packed', '--cfg-options', *SMALL
    ],
                         capture_output=True,
                         text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    meta = torch.load(export / 'subnet.pth', weights_only=True)['meta']
    assert meta['arch'] == best['arch'] and meta['calib_batches'] == 1
    assert (export / 'subnet_packed.pth').is_file() and (export / 'subnet_finetune.py').is_file()
    heldout_test = [
        'test_dataloader.dataset.split=train', "test_dataloader.dataset.ann_file=meta/heldout.txt",
        f'test_dataloader.dataset.indices={HELDOUT}', 'test_dataloader.num_workers=0',
        'test_dataloader.persistent_workers=False', 'test_evaluator.topk=[1]'
    ]
    out = subprocess.run([
        sys.executable, 'tools/test.py',
        str(export / 'subnet_test.py'),
        str(export / 'subnet.pth'), '--work-dir',
        str(tmp_path / 'p1'), '--out',
        str(tmp_path / 'p1.json'), '--cfg-options', *heldout_test
    ],
                         capture_output=True,
                         text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads((tmp_path / 'p1.json').read_text())['accuracy/top1'] == pytest.approx(best['acc'])
    bad = subprocess.run([
        sys.executable, 'tools/export_subnet.py', CONFIG, supernet_ckpt, '--arch',
        str(full / 'pareto.json'), '--ops', '7.5'
    ],
                         capture_output=True,
                         text=True,
                         timeout=600)
    assert bad.returncode == 2 and 'bin 7.5 not in' in bad.stderr

    # stop after one generation, then resume (more generations): same front as uninterrupted
    part = tmp_path / 'part'
    _search(supernet_ckpt, part, 1)
    assert json.loads((part / 'search_state.json').read_text())['generation'] == 1
    out = _search(supernet_ckpt, part, 2, '--resume')
    assert 'resumed after generation 1' in out.stdout + out.stderr
    assert _front(part) == _front(full)

    # a killed search resumes from its last completed generation and ends with the same front
    killed = tmp_path / 'killed'
    proc = _search(supernet_ckpt, killed, 2, wait=False)
    state = killed / 'search_state.json'
    deadline = time.time() + 600
    try:
        while not state.exists() or json.loads(state.read_text())['generation'] < 1:
            assert proc.poll() is None, 'search ended before it could be killed'
            assert time.time() < deadline
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    _search(supernet_ckpt, killed, 2, '--resume')
    assert _front(killed) == _front(full)

    # changed settings are refused with a one-line error
    out = subprocess.run([
        sys.executable, 'tools/search.py', CONFIG, supernet_ckpt, '--work-dir',
        str(part), '--resume', '--cfg-options', *SMALL, 'train_cfg.max_generations=2', 'train_cfg.ops_step=0.05'
    ],
                         capture_output=True,
                         text=True,
                         timeout=600)
    assert out.returncode == 2 and 'ops_step' in out.stderr and out.stderr.count('\n') == 1


def test_search_is_a_runner_loop_that_calls_hooks_with_the_front(supernet_ckpt, tmp_path):
    """runner.train() runs the search; hooks see every generation start and end, and the front
    after it (a user's hook needs nothing else than the runner)."""
    import ast

    from mmengine.config import Config
    from mmengine.hooks import Hook

    from nasbnn_mm.apis import build_runner
    cfg = Config.fromfile(CONFIG)
    opts = {}
    for item in SMALL:
        k, v = item.split('=', 1)
        try:
            opts[k] = ast.literal_eval(v)
        except ValueError:
            opts[k] = v
    cfg.merge_from_dict(opts)
    cfg.train_cfg.max_generations = 1
    cfg.update(work_dir=str(tmp_path), load_from=supernet_ckpt, launcher='none', runner_type='nasbnn.NASBNNRunner')
    seen = []

    class Recorder(Hook):

        def before_train(self, runner):
            seen.append('before_train')

        def before_train_epoch(self, runner):
            seen.append(f'before generation {runner.train_loop.generation + 1}')

        def after_train_epoch(self, runner):
            loop = runner.train_loop
            front = loop.front_records()
            assert front and all(r['arch'] in loop.cache for r in front.values())
            seen.append(f'after generation {loop.generation}: {len(loop.cache)} evaluated, {len(front)} bins')

        def after_train(self, runner):
            seen.append('after_train')

    runner = build_runner(cfg)
    runner.register_hook(Recorder(), 'LOWEST')
    runner.train()
    assert seen[0] == 'before_train' and seen[-1] == 'after_train'
    assert seen[1] == 'before generation 0' and seen[2].startswith('after generation 0: 5 evaluated')
    assert seen[3] == 'before generation 1' and seen[4].startswith('after generation 1: 9 evaluated')
    assert (tmp_path / 'pareto.json').is_file() and not list(tmp_path.glob('*.pth'))  # no checkpoints written
