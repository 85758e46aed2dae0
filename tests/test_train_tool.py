"""tools/train.py on the CPU supernet config: trains, is killed, resumes from its checkpoint."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

DATA = os.environ.get('NASBNN_DATA', os.path.join('..', 'shared', 'data'))
CONFIG = 'configs/cifar10/nasbnn-supernet_cifar-small_cifar10.py'
FAST = [
    'train_dataloader.dataset.indices=256', 'train_dataloader.batch_size=16', 'train_dataloader.num_workers=0',
    'train_dataloader.persistent_workers=False', 'default_hooks.checkpoint.interval=2',
    'default_hooks.logger.interval=1', 'train_cfg.val_interval=100000'
]

pytestmark = pytest.mark.skipif(
    not os.path.isfile(os.path.join(DATA, 'cifar10_jpg.tar.gz')),
    reason=f'shared data missing at {DATA} (set NASBNN_DATA)')


def _train(work_dir, *extra):
    return [sys.executable, 'tools/train.py', CONFIG, '--work-dir', str(work_dir), *extra]


def test_train_kill_resume(tmp_path):
    work = tmp_path / 'run'
    proc = subprocess.Popen(
        _train(work, '--cfg-options', *FAST, 'train_cfg.max_iters=1000'),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 900  # generous: a loaded 2-core machine starts slowly
        while not (work / 'iter_4.pth').exists():
            assert proc.poll() is None, 'training died before its first checkpoints'
            assert time.time() < deadline, "no checkpoint after 900 s"
            time.sleep(0.2)
        time.sleep(0.5)  # let the rename finish; the kill may land mid-iteration
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    latest = (work / 'last_checkpoint').read_text().strip()
    done = int(os.path.basename(latest)[len('iter_'):-len('.pth')])
    assert done >= 4
    # resume: the run's own checkpoint is fully unpickled (it lies in the work dir)
    out = subprocess.run(
        _train(work, '--resume', '--cfg-options', *FAST, f'train_cfg.max_iters={done + 2}'),
        capture_output=True,
        text=True,
        timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    log = out.stdout + out.stderr
    assert 'resumed' in log.lower() and f'iter_{done}.pth' in log
    # mmengine right-aligns the iteration to the width of max_iters ("[ 9/10]")
    for it in (done + 1, done + 2):
        assert re.search(rf'Iter\(train\) \[ *{it}/{done + 2}\]', log), f'iteration {it} not logged'
    assert 'loss_teacher' in log and 'loss_smallest' in log and 'loss_random0' in log
    assert (work / f'iter_{done + 2}.pth').exists()
    ckpt = torch.load(work / f'iter_{done + 2}.pth', weights_only=False)
    assert ckpt['meta']['iter'] == done + 2


def test_test_tool_evaluates_each_subnet_after_recalibration(tmp_path):
    work = tmp_path / 'run'
    subprocess.run(
        _train(work, '--cfg-options', *FAST, 'train_cfg.max_iters=2'), check=True, capture_output=True, timeout=600)
    out_json = tmp_path / 'metrics.json'
    small_test = [
        'test_dataloader.dataset.indices=64', 'test_dataloader.batch_size=32', 'test_dataloader.num_workers=0',
        'test_dataloader.persistent_workers=False', 'test_cfg.calib_batches=2',
        "test_cfg.subnets=['largest','smallest','A','random:1']", 'train_dataloader.dataset.indices=64',
        'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False'
    ]
    out = subprocess.run([
        sys.executable, 'tools/test.py', CONFIG,
        str(work / 'published.pth'), '--work-dir',
        str(tmp_path / 'test'), '--out',
        str(out_json), '--cfg-options', *small_test
    ],
                         capture_output=True,
                         text=True,
                         timeout=600)
    assert out.returncode == 2  # preset 'A' belongs to Table 1, not to the reduced space
    assert out.stderr.startswith('error: stem: width 24 not allowed') and out.stderr.count('\n') == 1
    # a training checkpoint from another run's work dir is refused (it pickles the message hub)
    out = subprocess.run([
        sys.executable, 'tools/test.py', CONFIG,
        str(work / 'iter_2.pth'), '--work-dir',
        str(tmp_path / 'test'), '--cfg-options', *small_test
    ],
                         capture_output=True,
                         text=True,
                         timeout=600)
    assert out.returncode == 2 and 'refused by safe loading' in out.stderr and '--trust-checkpoint' in out.stderr
    small_test[5] = "test_cfg.subnets=['largest','smallest','random:1']"
    out = subprocess.run([
        sys.executable, 'tools/test.py', CONFIG,
        str(work / 'published.pth'), '--work-dir',
        str(tmp_path / 'test'), '--out',
        str(out_json), '--cfg-options', *small_test
    ],
                         capture_output=True,
                         text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    import json
    metrics = json.loads(out_json.read_text())
    for name in ('largest', 'smallest', 'random0'):
        assert 0 <= metrics[f'{name}/accuracy/top1'] <= metrics[f'{name}/accuracy/top5'] <= 100
        assert f'subnet {name} (' in out.stdout + out.stderr


def test_weight_decay_only_on_conv_and_linear_weights():
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import MODELS, DefaultScope

    import nasbnn_mm  # noqa: F401
    cfg = Config.fromfile(CONFIG)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model)
        wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = set()
    for group in wrapper.optimizer.param_groups:
        for p in group['params']:
            if group['weight_decay'] > 0:
                decayed.add(names[id(p)])
    expected = {
        n
        for n in names.values()
        if n.endswith(('stem.conv.weight', 'conv_kxk.weight', 'conv_1x1.weight', 'head.fc.weight'))
    }
    assert decayed == expected
