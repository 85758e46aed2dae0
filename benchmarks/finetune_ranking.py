#!/usr/bin/env python
"""Does the supernet rank subnets as finetuning does? Kendall's tau / Spearman's rho between each random
subnet's accuracy with inherited weights (pipeline 1) and after a short finetune (pipeline 2), both on the
CIFAR-10 test set, through the project's tools:

1. ``tools/sample_subnets.py``: ``--num`` random subnets of the supernet (seeded, ND), scored on the held-out
   split with inherited weights;
2. per subnet: ``tools/export_subnet.py`` (BN recalibrated), ``tools/test.py`` (pipeline 1),
   ``tools/train.py <export>/subnet_finetune.py`` for ``--iters`` iterations, ``tools/test.py`` (pipeline 2);
3. ``tools/rank_correlation.py`` on (pipeline 1, pipeline 2) and (held-out inherited, pipeline 2).

Each step is skipped when its output exists (the script resumes). Writes ``inherited.json``,
``finetuned.json`` and ``ranking.json`` in ``--work-dir``.

    python benchmarks/finetune_ranking.py work_dirs/demo/supernet/published.pth --num 12 --iters 150
"""
from __future__ import annotations
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
SEARCH_CFG = 'configs/cifar10/nasbnn-search_cifar-small_cifar10.py'


def _run(cmd, log):
    with open(log, 'w') as f:
        rc = subprocess.run([sys.executable, *cmd], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise SystemExit(f'[ranking] failed ({rc}): {" ".join(cmd)}; see {log}')


def _top1(cfg, ckpt, out, work):
    if not osp.isfile(out):
        _run(['tools/test.py', cfg, ckpt, '--work-dir', work, '--out', out], out + '.log')
    with open(out) as f:
        return json.load(f)['accuracy/top1']


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('supernet', help='published CIFAR supernet (e.g. the demo\'s)')
    p.add_argument('--num', type=int, default=12)
    p.add_argument('--iters', type=int, default=150, help='finetune iterations per subnet')
    p.add_argument('--work-dir', default='work_dirs/finetune_ranking')
    args = p.parse_args(argv)
    from nasbnn_mm.utils.checkpoint import atomic_write_text
    wd = osp.abspath(args.work_dir)
    os.makedirs(wd, exist_ok=True)
    samples = osp.join(wd, 'samples', 'samples.json')
    if not osp.isfile(samples):
        _run([
            'tools/sample_subnets.py', SEARCH_CFG, args.supernet, '--num',
            str(args.num), '--work-dir',
            osp.join(wd, 'samples')
        ], osp.join(wd, 'samples.log'))
    with open(samples) as f:
        rows = json.load(f)['samples']
    inherited, finetuned = [], []
    t0 = time.time()
    for i, r in enumerate(rows):
        d = osp.join(wd, f'subnet{i:02d}')
        if not osp.isfile(osp.join(d, 'subnet.pth')):
            _run(['tools/export_subnet.py', SEARCH_CFG, args.supernet, '--arch', r['arch'], '--out-dir', d],
                 osp.join(wd, f'export{i:02d}.log'))
        cfg = osp.join(d, 'subnet_test.py')
        p1 = _top1(cfg, osp.join(d, 'subnet.pth'), osp.join(d, 'p1.json'), osp.join(d, 'test_p1'))
        ft = osp.join(d, 'finetune', 'published.pth')
        if not osp.isfile(ft):
            it = args.iters
            _run([
                'tools/train.py',
                osp.join(d, 'subnet_finetune.py'), '--work-dir',
                osp.join(d, 'finetune'), '--cfg-options', f'train_cfg.max_iters={it}',
                f'train_cfg.val_interval={it + 1}', f'param_scheduler.0.T_max={it}', f'param_scheduler.0.end={it}'
            ], osp.join(wd, f'finetune{i:02d}.log'))
        p2 = _top1(cfg, ft, osp.join(d, 'p2.json'), osp.join(d, 'test_p2'))
        inherited.append(dict(arch=r['arch'], ops=r['ops'], acc=p1, heldout_acc=r['acc']))
        finetuned.append(dict(arch=r['arch'], ops=r['ops'], acc=p2))
        print(
            f'[ranking] {i + 1}/{len(rows)} ({(time.time() - t0) / 60:.1f} min): {r["ops"]:.3f} M OPs, held-out '
            f'{r["acc"]:.2f}, pipeline 1 {p1:.2f}, pipeline 2 {p2:.2f}',
            flush=True)
    atomic_write_text(osp.join(wd, 'inherited.json'), json.dumps(inherited, indent=1))
    atomic_write_text(osp.join(wd, 'finetuned.json'), json.dumps(finetuned, indent=1))
    from nasbnn_mm.engine.sampling import correlate
    res = dict(
        pipeline1_vs_pipeline2=correlate({r['arch']: r['acc']
                                          for r in inherited}, {r['arch']: r['acc']
                                                                for r in finetuned}),
        heldout_vs_pipeline2=correlate({r['arch']: r['heldout_acc']
                                        for r in inherited}, {r['arch']: r['acc']
                                                              for r in finetuned}))
    atomic_write_text(osp.join(wd, 'ranking.json'), json.dumps(res, indent=1, default=list))
    for name, c in res.items():
        print(f'{name}: {c["n"]} subnets, Kendall tau {c["kendall_tau"]:.3f} [{c["kendall_ci"][0]:.3f}, '
              f'{c["kendall_ci"][1]:.3f}], Spearman rho {c["spearman_rho"]:.3f} [{c["spearman_ci"][0]:.3f}, '
              f'{c["spearman_ci"][1]:.3f}]')
    return res


if __name__ == '__main__':
    main()
