"""Multi-process runs on CPU (gloo) through torchrun and mmengine's launcher."""
import json
import os
import socket
import subprocess
import sys

import pytest

DATA = os.environ.get('NASBNN_DATA', os.path.join('..', 'shared', 'data'))
pytestmark = pytest.mark.skipif(
    not os.path.isfile(os.path.join(DATA, 'cifar10_jpg.tar.gz')),
    reason=f'shared data missing at {DATA} (set NASBNN_DATA)')


def _port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return str(s.getsockname()[1])


def _torchrun(nproc, *args, timeout=900):
    cmd = [
        sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node',
        str(nproc), '--master_addr', '127.0.0.1', '--master_port',
        _port(), *args, '--launcher', 'pytorch'
    ]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=dict(os.environ, OMP_NUM_THREADS='1'))


def test_two_process_supernet_training_keeps_ranks_in_lockstep(tmp_path):
    fast = [
        'train_dataloader.dataset.indices=256', 'train_dataloader.batch_size=16', 'train_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False', 'default_hooks.logger.interval=1', 'train_cfg.val_interval=100000',
        'train_cfg.max_iters=3', 'custom_hooks.1.interval=1'
    ]
    out = _torchrun(2, 'tools/train.py', 'configs/cifar10/nasbnn-supernet_cifar-small_cifar10.py', '--work-dir',
                    str(tmp_path), '--cfg-options', *fast)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    # DistSyncCheckHook compared the sandwich subnets of every iteration and the final weights
    assert 'DistSyncCheckHook: weights identical on all 2 ranks' in log
    assert 'Iter(train) [3/3]' in log
    assert (tmp_path / 'published.pth').is_file()


def test_two_process_search_gives_the_single_process_front(tmp_path):
    from test_search import CONFIG, SMALL, publish_random_supernet
    ckpt = publish_random_supernet(tmp_path / 'supernet.pth', seed=1)
    opts = ['--cfg-options', *SMALL, 'train_cfg.max_generations=1']
    one = subprocess.run([sys.executable, 'tools/search.py', CONFIG, ckpt, '--work-dir',
                          str(tmp_path / 'one'), *opts],
                         capture_output=True,
                         text=True,
                         timeout=900)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _torchrun(2, 'tools/search.py', CONFIG, ckpt, '--work-dir', str(tmp_path / 'two'), *opts)
    assert two.returncode == 0, (two.stdout + two.stderr)[-4000:]
    f1 = json.loads((tmp_path / 'one' / 'pareto.json').read_text())['front']
    f2 = json.loads((tmp_path / 'two' / 'pareto.json').read_text())['front']
    assert [r['arch'] for r in f1] == [r['arch'] for r in f2]
    assert [r['acc'] for r in f1] == pytest.approx([r['acc'] for r in f2])


def test_two_process_detector_training_step(tmp_path):
    from test_det import CPU_CONFIG, FAST, _publish_supernet, _randomised_supernet
    coco = os.path.join(DATA, 'coco_small')
    if not os.path.isdir(coco):
        pytest.skip(f'coco_small missing at {coco}')
    ckpt = _publish_supernet(_randomised_supernet(), tmp_path / 'supernet.pth')
    out = _torchrun(2, 'tools/train.py', CPU_CONFIG, '--work-dir', str(tmp_path / 'det'), '--cfg-options',
                    f'model.backbone.init_cfg.checkpoint={ckpt}', *FAST)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    assert 'Iter(train) [2/2]' in log and 'loss_rpn_cls' in log
    assert (tmp_path / 'det' / 'published.pth').is_file()
