"""Checkpoint policy: NASBNNRunner save/resume, safe loading, publishing, atomic writes."""
import enum
import math
import os
import pickle
import uuid

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry
from mmengine.runner import Runner
from mmengine.runner import load_checkpoint as mmengine_load_checkpoint
from torch.utils.data import Dataset

from nasbnn_mm.engine import NASBNNRunner
from nasbnn_mm.utils.checkpoint import (CheckpointMismatchError, UntrustedCheckpointError, load_checkpoint_file,
                                        publish_checkpoint, save_checkpoint_file)

# test-local registries (children of mmengine's roots), so configs can say type='nasbnn_test.X'
TEST_SCOPE = 'nasbnn_test'
TEST_MODELS = Registry('model', parent=MMENGINE_MODELS, scope=TEST_SCOPE)
TEST_DATASETS = Registry('dataset', parent=MMENGINE_DATASETS, scope=TEST_SCOPE)


@TEST_MODELS.register_module()
class ToyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)
        with torch.no_grad():  # deterministic init: the runner seeds only after the model is built
            self.linear.weight.copy_(torch.tensor([[0.3, -0.2]]))
            self.linear.bias.fill_(0.1)

    def forward(self, inputs, targets=None, mode='tensor'):
        out = self.linear(inputs).squeeze(1)
        if mode == 'loss':
            return dict(loss=((out - targets)**2).mean())
        return out


@TEST_DATASETS.register_module()
class ToyDataset(Dataset):
    """8 fixed samples, returned as dicts (batched by ``default_collate``)."""

    def __len__(self):
        return 8

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return dict(inputs=torch.randn(2, generator=g), targets=torch.tensor(float(i % 3)))


class Evil:
    """A local class: safe loading must refuse to unpickle it."""

    def __init__(self, x=1):
        self.x = x


class StateRecorder(Hook):
    """Records what the runner looks like when training (re)starts, and which iters ran."""

    def __init__(self):
        self.start = None
        self.iters = []

    def before_train(self, runner):
        model = runner.model
        self.start = dict(
            iter=runner.iter,
            hub_iter=runner.message_hub.get_info('iter'),
            hub_scalars=set(runner.message_hub.log_scalars),
            state_dict={
                k: v.detach().clone()
                for k, v in model.state_dict().items()
            },
            optim_state=pickle.loads(pickle.dumps(runner.optim_wrapper.optimizer.state_dict())))

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.iters.append(runner.iter)


def _runner_kwargs(work_dir, max_iters, resume=False, **kw):
    kwargs = dict(
        model=ToyModel(),
        work_dir=str(work_dir),
        experiment_name=f'test_ckpt_{uuid.uuid4().hex}',  # MessageHub/Logger instances are global by name
        train_dataloader=dict(
            dataset=ToyDataset(),
            sampler=dict(type='DefaultSampler', shuffle=False),
            batch_size=2,
            num_workers=0,
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters, val_interval=1000),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
            logger=dict(type='LoggerHook', interval=1)),
        default_scope='mmengine',
        randomness=dict(seed=0),
        resume=resume,
        log_level='WARNING')
    kwargs.update(kw)
    return kwargs


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_state_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=f'{k} differs')


# --------------------------------------------------------------------------- 1. save -> resume


@pytest.fixture(scope='module')
def trained_run(tmp_path_factory):
    """Train 4 iters (checkpoint every 2) in a work dir; returns (work_dir, final weights, files then).

    The resume test later adds iter_6.pth to this work dir, so the files are listed here."""
    work_dir = tmp_path_factory.mktemp('run') / 'work_dir'
    runner = NASBNNRunner(**_runner_kwargs(work_dir, max_iters=4))
    runner.train()
    assert runner.iter == 4
    with open(work_dir / 'last_checkpoint') as f:
        last = f.read().strip()
    return work_dir, _state(runner.model), dict(names=set(os.listdir(work_dir)), last_checkpoint=last)


def test_runner_saves_checkpoints(trained_run):
    work_dir, final, files = trained_run
    assert {'iter_2.pth', 'iter_4.pth', 'last_checkpoint'} <= files['names']
    assert not any(n.startswith('iter_') and n not in ('iter_2.pth', 'iter_4.pth') for n in files['names'])
    assert os.path.realpath(files['last_checkpoint']) == os.path.realpath(work_dir / 'iter_4.pth')
    ckpt = torch.load(work_dir / 'iter_4.pth', map_location='cpu', weights_only=False)
    assert ckpt['meta']['iter'] == 4
    _assert_state_equal(dict(ckpt['state_dict']), final)
    # the weights actually moved during training
    ckpt2 = torch.load(work_dir / 'iter_2.pth', map_location='cpu', weights_only=False)
    assert not torch.equal(ckpt2['state_dict']['linear.weight'], final['linear.weight'])


def test_stock_runner_cannot_load_its_own_checkpoint(trained_run):
    """Why NASBNNRunner exists: with torch >= 2.6 (weights_only=True by default) mmengine 0.10.7's
    Runner.load_checkpoint refuses mmengine's own training checkpoints."""
    work_dir, _, _ = trained_run
    runner = Runner(**_runner_kwargs(work_dir, max_iters=4))
    with pytest.raises(pickle.UnpicklingError, match='Weights only load failed'):
        runner.load_checkpoint(str(work_dir / 'iter_4.pth'))
    # ... and so does our own safe loader, with our error type
    with pytest.raises(UntrustedCheckpointError):
        load_checkpoint_file(str(work_dir / 'iter_4.pth'))


def test_runner_resume_continues_from_saved_iter(trained_run, tmp_path):
    work_dir, final, _ = trained_run
    saved = torch.load(work_dir / 'iter_4.pth', map_location='cpu', weights_only=False)

    recorder = StateRecorder()
    runner = NASBNNRunner(**_runner_kwargs(work_dir, max_iters=6, resume=True, custom_hooks=[recorder]))
    runner.train()

    start = recorder.start
    assert start['iter'] == 4
    assert runner.message_hub.get_info('iter') is not None
    assert start['hub_iter'] == 4
    assert 'train/loss' in start['hub_scalars']  # message hub history came back too
    _assert_state_equal(start['state_dict'], final)
    _assert_state_equal(start['state_dict'], dict(saved['state_dict']))
    # SGD momentum buffers were restored from the checkpoint
    bufs = [s['momentum_buffer'] for s in start['optim_state']['state'].values()]
    saved_bufs = [s['momentum_buffer'] for s in saved['optimizer']['state'].values()]
    assert len(bufs) == len(saved_bufs) == 2
    for b, s in zip(bufs, saved_bufs):
        torch.testing.assert_close(b, s, rtol=0, atol=0)

    assert recorder.iters == [4, 5]  # only the two remaining iterations ran
    assert runner.iter == 6
    assert (work_dir / 'iter_6.pth').is_file()
    assert torch.load(work_dir / 'iter_6.pth', map_location='cpu', weights_only=False)['meta']['iter'] == 6

    # 4 iters + resume + 2 iters == 6 uninterrupted iters
    straight = NASBNNRunner(**_runner_kwargs(tmp_path / 'straight', max_iters=6))
    straight.train()
    resumed, uninterrupted = _state(runner.model), _state(straight.model)
    for k in uninterrupted:
        torch.testing.assert_close(resumed[k], uninterrupted[k])


# --------------------------------------------------------------------------- 2. untrusted files


def _evil_checkpoint(path, model=None):
    model = model or ToyModel()
    sd = {k: v.detach().clone() + 1.0 for k, v in model.state_dict().items()}
    torch.save({'state_dict': sd, 'meta': {'obj': Evil(3), 'fn': math.sqrt}}, path)
    return sd


def _assert_refusal_message(err, path, offending):
    msg = str(err)
    assert '\n' not in msg and '\r' not in msg, msg
    assert str(path) in msg
    assert offending in msg
    assert '--trust-checkpoint' in msg
    assert 'trust_checkpoint=True' in msg
    assert err.__suppress_context__  # torch's long multi-line message is not chained into the traceback


def test_load_checkpoint_file_refuses_local_class(tmp_path):
    path = tmp_path / 'evil.pth'
    _evil_checkpoint(path)
    with pytest.raises(UntrustedCheckpointError) as ei:
        load_checkpoint_file(str(path))
    _assert_refusal_message(ei.value, path, f'{Evil.__module__}.Evil')
    assert isinstance(ei.value, pickle.UnpicklingError)  # callers catching torch's error still work

    ckpt = load_checkpoint_file(str(path), trusted=True)
    assert isinstance(ckpt['meta']['obj'], Evil) and ckpt['meta']['obj'].x == 3
    assert ckpt['meta']['fn'] is math.sqrt


def test_load_checkpoint_file_refuses_function_reference(tmp_path):
    path = tmp_path / 'fn.pth'
    torch.save({'state_dict': {}, 'hook': math.sqrt}, path)
    with pytest.raises(UntrustedCheckpointError) as ei:
        load_checkpoint_file(str(path))
    _assert_refusal_message(ei.value, path, 'math.sqrt')
    assert load_checkpoint_file(str(path), trusted=True)['hook'] is math.sqrt


def test_load_checkpoint_file_missing(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint_file(str(tmp_path / 'nope.pth'))


def test_runner_refuses_untrusted_file_outside_work_dir(tmp_path):
    outside = tmp_path / 'downloads'
    outside.mkdir()
    path = outside / 'evil.pth'
    _evil_checkpoint(path)

    runner = NASBNNRunner(**_runner_kwargs(tmp_path / 'work_dir', max_iters=1))
    before = _state(runner.model)
    with pytest.raises(UntrustedCheckpointError) as ei:
        runner.load_checkpoint(str(path))
    _assert_refusal_message(ei.value, path, f'{Evil.__module__}.Evil')
    _assert_state_equal(_state(runner.model), before)  # nothing was loaded

    # a sibling folder whose name merely starts with the work dir's name is not "inside"
    sibling = tmp_path / 'work_dir_evil'
    sibling.mkdir()
    _evil_checkpoint(sibling / 'evil.pth')
    with pytest.raises(UntrustedCheckpointError):
        runner.load_checkpoint(str(sibling / 'evil.pth'))

    # a symlink inside the work dir pointing outside is judged by its target
    link = tmp_path / 'work_dir' / 'link.pth'
    os.symlink(path, link)
    with pytest.raises(UntrustedCheckpointError):
        runner.load_checkpoint(str(link))


class _System:
    """Pickles as a call of os.system (what an attacker's file does on full unpickling)."""

    def __reduce__(self):
        return (os.system, ('true', ))


def test_runner_trusts_provenance_not_location(tmp_path):
    """A file merely placed in the work dir (even as published.pth) is loaded safely and refused
    when it pickles code; only checkpoints this work dir's runs saved, unchanged, are unpickled fully."""
    work_dir = tmp_path / 'work_dir'
    runner = NASBNNRunner(**_runner_kwargs(work_dir, max_iters=1))
    before = _state(runner.model)
    for rel in ('sub/evil.pth', 'published.pth'):
        path = work_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        _evil_checkpoint(path, runner.model)
        with pytest.raises(UntrustedCheckpointError) as ei:
            runner.load_checkpoint(str(path))
        _assert_refusal_message(ei.value, path, f'{Evil.__module__}.Evil')
    payload = work_dir / 'system.pth'
    torch.save({'state_dict': {}, 'meta': {'x': _System()}}, payload)
    with pytest.raises(UntrustedCheckpointError) as ei:
        runner.load_checkpoint(str(payload))
    _assert_refusal_message(ei.value, payload, 'posix.system')
    _assert_state_equal(_state(runner.model), before)  # nothing was loaded
    # a forged record in the manifest does not help without the key
    import json

    from nasbnn_mm.engine.runner import TRUST_MANIFEST, _sha256
    digest = _sha256(str(work_dir / 'published.pth'))
    (work_dir / TRUST_MANIFEST).write_text(
        json.dumps({os.path.realpath(work_dir / 'published.pth'): dict(sha256=digest, mac='0' * 64)}))
    assert not runner.written_by_this_run(str(work_dir / 'published.pth'))
    with pytest.raises(UntrustedCheckpointError):
        runner.load_checkpoint(str(work_dir / 'published.pth'))


def test_runner_own_checkpoints_are_trusted_until_changed(trained_run, tmp_path):
    import shutil
    work_dir, _, _ = trained_run
    copy = tmp_path / 'run'
    shutil.copytree(work_dir, copy)  # the records name the original paths: a copy is not "own"
    runner = NASBNNRunner(**_runner_kwargs(work_dir, max_iters=4))
    assert runner.written_by_this_run(str(work_dir / 'iter_4.pth'))
    assert not NASBNNRunner(**_runner_kwargs(copy, max_iters=4)).written_by_this_run(str(copy / 'iter_4.pth'))
    runner.load_checkpoint(str(work_dir / 'iter_2.pth'))  # pickled message hub etc.: full unpickling
    with open(work_dir / 'iter_2.pth', 'ab') as f:  # changed after saving: no longer trusted
        f.write(b'\0')
    assert not runner.written_by_this_run(str(work_dir / 'iter_2.pth'))
    with pytest.raises((UntrustedCheckpointError, CheckpointMismatchError)):
        runner.load_checkpoint(str(work_dir / 'iter_2.pth'))
    assert not [f for f in os.listdir(work_dir) if f.endswith('.tmp')]  # written atomically


def _cfg_runner(tmp_path, **extra):
    cfg = Config(
        dict(
            model=dict(type=f'{TEST_SCOPE}.ToyModel'),
            work_dir=str(tmp_path / 'cfg_work_dir'),
            experiment_name=f'test_ckpt_cfg_{uuid.uuid4().hex}',
            default_scope='mmengine',
            log_level='WARNING',
            **extra))
    return NASBNNRunner.from_cfg(cfg)


def test_runner_trust_checkpoint_cfg(tmp_path):
    path = tmp_path / 'evil.pth'
    _evil_checkpoint(path)

    runner = _cfg_runner(tmp_path)
    assert isinstance(runner, NASBNNRunner) and not runner.trust_checkpoint
    with pytest.raises(UntrustedCheckpointError):
        runner.load_checkpoint(str(path))

    runner = _cfg_runner(tmp_path, trust_checkpoint=True)
    assert runner.trust_checkpoint
    expected = {k: v for k, v in torch.load(path, weights_only=False)['state_dict'].items()}
    ckpt = runner.load_checkpoint(str(path))
    assert isinstance(ckpt['meta']['obj'], Evil)
    _assert_state_equal(_state(runner.model), expected)


def test_runner_loads_safe_file_outside_work_dir(tmp_path):
    """A published (tensors + plain values) checkpoint loads without any trust flag."""
    src = ToyModel()
    with torch.no_grad():
        src.linear.weight.fill_(0.25)
        src.linear.bias.fill_(-1.5)
    path = publish_checkpoint(src.state_dict(), str(tmp_path / 'pub' / 'model.pth'), meta=dict(step=3))
    runner = _cfg_runner(tmp_path)
    ckpt = runner.load_checkpoint(path)
    assert ckpt['meta'] == {'step': 3}
    _assert_state_equal(_state(runner.model), _state(src))


# --------------------------------------------------------------------------- 3. publish_checkpoint


class Stage(enum.IntEnum):
    SEARCH = 2


def test_publish_checkpoint_plain_and_loadable(tmp_path):
    src = ToyModel()
    with torch.no_grad():
        src.linear.weight.mul_(-3.0)
        src.linear.bias.add_(0.7)
    meta = dict(
        epoch=np.int64(7),
        acc=np.float32(0.5),
        flag=np.bool_(True),
        zero_d=np.array(2.5),
        arch=(1, (2, 3), [np.int32(4)]),
        nested={1: (np.float64(0.25), 'x')},  # np.float64 is a float subclass: must still be reduced
        best_acc=np.float64(71.5),
        name=np.str_('nasbnn'),
        arch_vec=np.array([[1, 2], [3, 4]], dtype=np.int64),
        stage=Stage.SEARCH,
        none=None,
        tensor=torch.arange(3))
    path = tmp_path / 'published.pth'
    ret = publish_checkpoint(src.state_dict(), str(path), meta=meta)
    assert os.path.samefile(ret, path)

    ckpt = torch.load(path, map_location='cpu', weights_only=True)
    assert set(ckpt) == {'meta', 'state_dict'}
    m = ckpt['meta']
    assert m['epoch'] == 7 and type(m['epoch']) is int
    assert m['acc'] == 0.5 and type(m['acc']) is float
    assert m['flag'] is True
    assert m['zero_d'] == 2.5 and type(m['zero_d']) is float
    assert m['arch'] == [1, [2, 3], [4]] and type(m['arch'][2][0]) is int
    assert m['nested'] == {'1': [0.25, 'x']} and type(m['nested']['1'][0]) is float
    assert m['best_acc'] == 71.5 and type(m['best_acc']) is float
    assert m['name'] == 'nasbnn' and type(m['name']) is str
    assert m['arch_vec'] == [[1, 2], [3, 4]] and type(m['arch_vec'][0][0]) is int
    assert m['stage'] == 2 and type(m['stage']) is int
    assert m['none'] is None
    assert torch.equal(m['tensor'], torch.arange(3))
    _assert_state_equal(dict(ckpt['state_dict']), _state(src))

    # stock mmengine loader (torch's default weights_only=True) into a fresh model
    dst = ToyModel()
    assert not torch.equal(dst.linear.weight, src.linear.weight)
    out = mmengine_load_checkpoint(dst, str(path), map_location='cpu', strict=True)
    assert out['meta']['epoch'] == 7
    _assert_state_equal(_state(dst), _state(src))


def test_publish_checkpoint_detaches_and_defaults_meta(tmp_path):
    model = ToyModel()
    model.linear.weight.requires_grad_(True)
    path = publish_checkpoint(model.state_dict(keep_vars=True), str(tmp_path / 'a' / 'b.pth'))
    ckpt = torch.load(path, weights_only=True)
    assert ckpt['meta'] == {}
    assert not any(v.requires_grad for v in ckpt['state_dict'].values())


def test_published_file_permissions_follow_umask(tmp_path):
    """Published files are for others: same mode as a plain torch.save (not mkstemp's 0600)."""
    ref = tmp_path / 'ref.pth'
    torch.save({}, ref)
    path = publish_checkpoint({}, str(tmp_path / 'pub.pth'))
    assert os.stat(path).st_mode & 0o777 == os.stat(ref).st_mode & 0o777


# --------------------------------------------------------------------------- 4. atomic writes


def _failing_save(exc):

    def fake_save(obj, f, *args, **kwargs):
        f.write(b'PK\x03\x04 half a checkpoint')
        raise exc

    return fake_save


@pytest.mark.parametrize('exc', [OSError(28, 'No space left on device'), KeyboardInterrupt()])
def test_save_checkpoint_file_atomic_new_target(tmp_path, monkeypatch, exc):
    target = tmp_path / 'ckpt.pth'
    monkeypatch.setattr(torch, 'save', _failing_save(exc))
    with pytest.raises(type(exc)):
        save_checkpoint_file({'a': torch.ones(3)}, str(target))
    assert not target.exists()
    assert os.listdir(tmp_path) == []  # no temp file left behind


def test_save_checkpoint_file_atomic_existing_target(tmp_path, monkeypatch):
    target = tmp_path / 'ckpt.pth'
    save_checkpoint_file({'a': torch.ones(3)}, str(target))
    original = target.read_bytes()

    monkeypatch.setattr(torch, 'save', _failing_save(RuntimeError('boom')))
    with pytest.raises(RuntimeError, match='boom'):
        save_checkpoint_file({'a': torch.zeros(3)}, str(target))
    monkeypatch.undo()

    assert os.listdir(tmp_path) == ['ckpt.pth']
    assert target.read_bytes() == original
    assert torch.equal(torch.load(target, weights_only=True)['a'], torch.ones(3))


def test_save_checkpoint_file_success(tmp_path):
    target = tmp_path / 'new' / 'dir' / 'ckpt.pth'
    ret = save_checkpoint_file({'a': torch.arange(4)}, str(target))
    assert ret == os.path.abspath(target)
    assert os.listdir(target.parent) == ['ckpt.pth']
    assert torch.equal(torch.load(target, weights_only=True)['a'], torch.arange(4))
    # overwrite replaces the content
    save_checkpoint_file({'a': torch.arange(2)}, str(target))
    assert os.listdir(target.parent) == ['ckpt.pth']
    assert torch.equal(torch.load(target, weights_only=True)['a'], torch.arange(2))
