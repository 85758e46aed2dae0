#!/usr/bin/env python
"""Kill -9 at random moments, resume, and compare with an uninterrupted run (training and search).

Training: tools/train.py on the CPU supernet config (a small subset, a few dozen iterations,
checkpoints every few) runs twice uninterrupted (the first may build the native kernels; the two must
end identical); then each trial starts the same run, sends SIGKILL at a random moment (uniform
between the first and the last logged iteration of the second uninterrupted run), resumes with
``--resume`` (again and again if a kill landed before the first checkpoint), and compares the final
published weights with the uninterrupted ones (bitwise, and the largest difference).
Search: tools/search.py on a published random supernet the same way (kills while candidates are
scored), comparing ``pareto.json``'s front (architectures and scores).

    python benchmarks/kill_resume.py --trials 5 --seed 0

Prints one line per trial and a summary; exit code 1 if any trial differs.
"""
from __future__ import annotations
import argparse
import json
import os
import os.path as osp
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.join(ROOT, 'tests'))

SUPERNET_CFG = 'configs/cifar10/nasbnn-supernet_cifar-small_cifar10.py'
SEARCH_CFG = 'configs/cifar10/nasbnn-search_cifar-small_cifar10.py'


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--trials', type=int, default=5)
    p.add_argument('--seed', type=int, default=0, help='seed of the kill moments')
    p.add_argument('--iters', type=int, default=48, help='training iterations')
    p.add_argument('--generations', type=int, default=6, help='search generations')
    p.add_argument('--what', choices=['train', 'search', 'both'], default='both')
    p.add_argument('--work-dir', default=None, help='default: a temporary folder (removed)')
    return p.parse_args(argv)


def _train_cmd(work, iters, resume=False):
    opts = [
        'train_dataloader.dataset.indices=256', 'train_dataloader.batch_size=16', 'train_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False', 'default_hooks.checkpoint.interval=4',
        'default_hooks.logger.interval=1', 'train_cfg.val_interval=100000', 'train_cfg.val_begin=1000000000',
        f'train_cfg.max_iters={iters}', f'param_scheduler.0.T_max={iters}', f'param_scheduler.0.end={iters}'
    ]
    return [
        sys.executable, 'tools/train.py', SUPERNET_CFG, '--work-dir', work, *(['--resume'] if resume else []),
        '--cfg-options', *opts
    ]


def _search_cmd(work, ckpt, gens, resume=False):
    heldout = '[' + ','.join(str(i) for i in range(0, 500, 10)) + ']'
    opts = [
        'train_cfg.population_size=5', 'train_cfg.num_mutation=2', 'train_cfg.num_crossover=2',
        'train_cfg.calib_batches=1', f'train_dataloader.dataset.indices={heldout}', 'train_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False', 'train_cfg.calib_dataloader.num_workers=0',
        'train_cfg.calib_dataloader.batch_size=16', f'train_cfg.max_generations={gens}'
    ]
    return [
        sys.executable, 'tools/search.py', SEARCH_CFG, ckpt, '--work-dir', work, *(['--resume'] if resume else []),
        '--cfg-options', *opts
    ]


def _run(cmd, progress=None):
    """Run ``cmd``; returns its duration, or (first, last): the seconds of the first and the last output line
    matching ``progress`` -- the working phase, without start-up (imports, data, model) and wind-down, where a
    kill moment is worth drawing."""
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first = last = None
    tail = []
    for line in proc.stdout:
        if progress is not None and re.search(progress, line):
            last = time.time() - t0
            first = last if first is None else first
        tail = (tail + [line])[-40:]
    if proc.wait() != 0:
        raise SystemExit(f'failed: {" ".join(cmd)}\n{"".join(tail)[-2000:]}')
    duration = time.time() - t0
    if progress is None:
        return duration
    if first is None:
        raise SystemExit(f'no output line matched {progress!r}: {" ".join(cmd)}')
    return first, last


def _kill_at(cmd, delay):
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=delay)
        return False  # finished before the kill
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return True


def _weights(path):
    import torch
    return torch.load(path, map_location='cpu', weights_only=True)['state_dict']


def _compare_weights(a, b):
    import torch
    same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    diff = max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())
    return same, diff


def train_trials(args, base, rng):
    # twice uninterrupted: the first run may build the native kernels; the second gives the timing (and must
    # equal the first: the run is deterministic)
    _run(_train_cmd(osp.join(base, 'train_warm'), args.iters))
    ref = osp.join(base, 'train_ref')
    start, end = _run(_train_cmd(ref, args.iters), progress=r'Iter\(train\)')
    want = _weights(osp.join(ref, 'published.pth'))
    same, _ = _compare_weights(want, _weights(osp.join(base, 'train_warm', 'published.pth')))
    print(
        f'[train] uninterrupted: iterations 1..{args.iters} logged from {start:.1f} s to {end:.1f} s; two '
        f'uninterrupted runs {"identical" if same else "DIFFER"}',
        flush=True)
    bad = 0 if same else 1
    for t in range(args.trials):
        work = osp.join(base, f'train_{t}')
        delay = rng.uniform(start, end)  # during training
        killed = _kill_at(_train_cmd(work, args.iters), delay)
        last = open(osp.join(work, 'last_checkpoint')).read().strip() if osp.isfile(osp.join(
            work, 'last_checkpoint')) else None
        resumes = 0
        while not osp.isfile(osp.join(work, 'published.pth')):
            _run(_train_cmd(work, args.iters, resume=osp.isfile(osp.join(work, 'last_checkpoint'))))
            resumes += 1
        same, diff = _compare_weights(want, _weights(osp.join(work, 'published.pth')))
        bad += not same
        print(
            f'[train] trial {t}: kill after {delay:.1f} s ({"killed" if killed else "finished first"}), last '
            f'checkpoint {osp.basename(last) if last else "none"}, {resumes} resume(s): final weights '
            f'{"identical" if same else f"DIFFER (max abs {diff:.3g})"}',
            flush=True)
    return bad


def search_trials(args, base, rng):
    from test_search import publish_random_supernet
    ckpt = publish_random_supernet(osp.join(base, 'supernet.pth'), seed=0)
    ref = osp.join(base, 'search_ref')
    start, end = _run(_search_cmd(ref, ckpt, args.generations), progress=r'\[search\] gen ')
    want = json.load(open(osp.join(ref, 'pareto.json')))['front']
    print(
        f'[search] uninterrupted: {args.generations} generations, candidates scored from {start:.1f} s to '
        f'{end:.1f} s',
        flush=True)
    bad = 0
    for t in range(args.trials):
        work = osp.join(base, f'search_{t}')
        delay = rng.uniform(start, end)
        killed = _kill_at(_search_cmd(work, ckpt, args.generations), delay)
        state = osp.join(work, 'search_state.json')
        gen = json.load(open(state))['generation'] if osp.isfile(state) else None
        _run(_search_cmd(work, ckpt, args.generations, resume=osp.isfile(state)))
        got = json.load(open(osp.join(work, 'pareto.json')))['front']
        same = got == want
        bad += not same
        print(
            f'[search] trial {t}: kill after {delay:.1f} s ({"killed" if killed else "finished first"}), '
            f'saved generation {gen}: front {"identical" if same else "DIFFERS"} ({len(got)} bins)',
            flush=True)
    return bad


def main(argv=None):
    args = parse_args(argv)
    rng = random.Random(args.seed)
    base = args.work_dir or tempfile.mkdtemp(prefix='nasbnn_kill_resume_')
    os.makedirs(base, exist_ok=True)
    bad = 0
    try:
        if args.what in ('train', 'both'):
            bad += train_trials(args, base, rng)
        if args.what in ('search', 'both'):
            bad += search_trials(args, base, rng)
    finally:
        if not args.work_dir:
            shutil.rmtree(base, ignore_errors=True)
    print(f'{args.trials} trials each: {"all identical to the uninterrupted run" if not bad else f"{bad} differ"}')
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
