#!/usr/bin/env python
"""The paper's ablations (Fig. 3) at CPU scale: train the CIFAR-10 supernet with each training
strategy switched off, 2 seeds each, then evaluate the same random subnets of every supernet with
inherited weights (tools/sample_subnets.py) and compare with the baseline.

Runs (``--runs``): baseline; no_nd (sandwich students drawn without the Non-Decreasing constraint);
no_wn (no channel-wise weight normalization); no_bt (no Bi-Transformation); fwfa and bwba (the teacher
with full-precision weights and activations / binary weights and activations instead of the Bi-Teacher
FWBA); no_distill (students on the labels). Each stage is skipped when its outputs exist, so the
script resumes. At the end: a table (per run and pooled over seeds: mean top-1 with a bootstrap 95 %
interval, the paired difference to the baseline of the same seed), the Fig. 3 plots and the
students' training accuracy curves, in ``--work-dir``.

    nice -n 19 python benchmarks/ablations.py --iters 1000 --num 200 --seeds 0 1
"""
from __future__ import annotations
import argparse
import json
import os
import os.path as osp
import statistics
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
SUPERNET_CFG = 'configs/cifar10/nasbnn-supernet_cifar-small_cifar10.py'
SEARCH_CFG = 'configs/cifar10/nasbnn-search_cifar-small_cifar10.py'
# run -> (training overrides, overrides the evaluation needs too)
RUNS = {
    'baseline': ([], []),
    'no_nd': (['model.backbone.search_space.nd=False'], []),
    'no_wn': ([], ['model.backbone.weight_norm=False']),
    'no_bt': ([], ['model.backbone.bi_transform=False']),
    'fwfa': (['model.teacher=FWFA'], []),
    'bwba': (['model.teacher=BWBA'], []),
    'no_distill': (['model.distill=False'], []),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--work-dir', default='work_dirs/ablations')
    p.add_argument('--runs', nargs='+', default=list(RUNS), choices=list(RUNS))
    p.add_argument('--seeds', nargs='+', type=int, default=[0, 1])
    p.add_argument('--iters', type=int, default=1000, help='supernet iterations (the demo: 1000)')
    p.add_argument('--num', type=int, default=200, help='random subnets evaluated per supernet')
    p.add_argument('--report-only', action='store_true', help='only compare what is there')
    return p.parse_args(argv)


def _run(cmd, log):
    t0 = time.time()
    with open(log, 'w') as f:
        rc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise SystemExit(f'[ablations] failed ({rc}): {" ".join(cmd)}; see {log}')
    return time.time() - t0


def train(args, run, seed, wd):
    ckpt = osp.join(wd, 'published.pth')
    if osp.isfile(ckpt):
        return ckpt
    train_opts, eval_opts = RUNS[run]
    it = args.iters
    opts = [
        f'train_cfg.max_iters={it}', f'train_cfg.val_interval={it}', f'param_scheduler.0.T_max={it}',
        f'param_scheduler.0.end={it}', 'default_hooks.checkpoint.interval=500', f'randomness.seed={seed}',
        f'model.sample_seed={seed}', *train_opts, *eval_opts
    ]
    cmd = [sys.executable, 'tools/train.py', SUPERNET_CFG, '--work-dir', wd, '--cfg-options', *opts]
    if osp.isfile(osp.join(wd, 'last_checkpoint')):
        cmd.insert(3, '--resume')
    os.makedirs(wd, exist_ok=True)
    dt = _run(cmd, osp.join(wd, 'train_driver.log'))
    print(f'[ablations] {run} seed {seed}: trained in {dt / 60:.1f} min', flush=True)
    return ckpt


def sample(args, run, seed, wd, ckpt):
    out = osp.join(wd, 'samples', 'samples.json')
    state = osp.join(wd, 'samples', 'samples_state.json')
    if osp.isfile(out) and len(json.load(open(out))['samples']) >= args.num:
        return out
    _, eval_opts = RUNS[run]
    cmd = [
        sys.executable, 'tools/sample_subnets.py', SEARCH_CFG, ckpt, '--num',
        str(args.num), '--seed', '0', '--work-dir',
        osp.join(wd, 'samples'), *(['--resume'] if osp.isfile(state) else [])
    ]
    if eval_opts:
        cmd += ['--cfg-options', *eval_opts]
    dt = _run(cmd, osp.join(wd, 'sample_driver.log'))
    print(f'[ablations] {run} seed {seed}: {args.num} subnets evaluated in {dt / 60:.1f} min', flush=True)
    return out


def run_dir(args, run, seed):
    """The work directory of one (run, seed): its supernet, log and ``samples/samples.json``."""
    return osp.join(args.work_dir, f'{run}_s{seed}')


def report(args):
    from nasbnn_mm.engine.sampling import load_samples, plot_samples, training_curves
    from nasbnn_mm.utils.stats import bootstrap_ci, paired_difference
    rows, paths, labels = [], [], []
    base = {}
    for seed in args.seeds:
        p = osp.join(run_dir(args, 'baseline', seed), 'samples', 'samples.json')
        if osp.isfile(p):
            base[seed] = {r['arch']: r['acc'] for r in load_samples(p)['samples']}
    for run in args.runs:
        accs_all, diffs_all = [], []
        for seed in args.seeds:
            p = osp.join(run_dir(args, run, seed), 'samples', 'samples.json')
            if not osp.isfile(p):
                continue
            res = {r['arch']: r['acc'] for r in load_samples(p)['samples']}
            paths.append(p)
            labels.append(f'{run} s{seed}')
            accs = list(res.values())
            lo, hi = bootstrap_ci(accs)
            row = dict(run=run, seed=seed, n=len(accs), mean=statistics.fmean(accs), ci=[lo, hi])
            if run != 'baseline' and seed in base:
                common = [a for a in res if a in base[seed]]
                d = paired_difference([base[seed][a] for a in common], [res[a] for a in common])
                row['diff'] = d
                diffs_all += [res[a] - base[seed][a] for a in common]
            rows.append(row)
            accs_all += accs
        if accs_all:
            lo, hi = bootstrap_ci(accs_all)
            pooled = dict(run=run, seed='all', n=len(accs_all), mean=statistics.fmean(accs_all), ci=[lo, hi])
            if diffs_all:
                dlo, dhi = bootstrap_ci(diffs_all)
                pooled['diff'] = dict(mean=statistics.fmean(diffs_all), ci=(dlo, dhi), n=len(diffs_all))
            rows.append(pooled)
    print(f'\n{"run":<12}{"seed":>5}{"n":>5}{"mean top-1":>12}{"95% CI":>18}{"diff to baseline [95% CI]":>32}')
    for r in rows:
        d = r.get('diff')
        diff = f'{d["mean"]:+.2f} [{d["ci"][0]:+.2f}, {d["ci"][1]:+.2f}]' if d else '-'
        print(f'{r["run"]:<12}{str(r["seed"]):>5}{r["n"]:>5}{r["mean"]:>12.2f}   [{r["ci"][0]:6.2f}, '
              f'{r["ci"][1]:6.2f}]{diff:>32}')
    from nasbnn_mm.utils.checkpoint import atomic_write_text
    atomic_write_text(osp.join(args.work_dir, 'ablations.json'), json.dumps(rows, indent=1, default=list))
    if paths:
        for seed in args.seeds:
            sel = [(p, lab) for p, lab in zip(paths, labels) if lab.endswith(f's{seed}')]
            if sel:
                plot_samples([p for p, _ in sel], osp.join(args.work_dir, f'fig3_seed{seed}.png'),
                             [lab for _, lab in sel], f'Random subnets with inherited weights (seed {seed})')
            dirs = [(run_dir(args, r, seed), r) for r in args.runs
                    if osp.isfile(osp.join(run_dir(args, r, seed), 'published.pth'))]
            if dirs:
                last = training_curves([d for d, _ in dirs], osp.join(args.work_dir, f'train_acc_seed{seed}.png'),
                                       'acc_students', [r for _, r in dirs])
                print(f'students\' training accuracy at the end (smoothed), seed {seed}: ' +
                      ', '.join(f'{k} {v:.2f}' for k, v in last.items()))
    return rows


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.work_dir, exist_ok=True)
    if not args.report_only:
        for seed in args.seeds:
            for run in args.runs:
                wd = run_dir(args, run, seed)
                ckpt = train(args, run, seed, wd)
                sample(args, run, seed, wd, ckpt)
    return report(args)


if __name__ == '__main__':
    main()
