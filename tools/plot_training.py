#!/usr/bin/env python
"""Training curves of several runs side by side (the paper's Fig. 3d: the students' training accuracy).

    python tools/plot_training.py work_dirs/base work_dirs/bwba --labels FWBA BWBA --key acc_students \
        --out train_acc.png

Reads each run's mmengine log scalars (``<work dir>/<timestamp>/vis_data/scalars.json``), smooths
them with a running mean and prints the last smoothed value per run.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from nasbnn_mm.apis import run_cli


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('runs', nargs='+', help='work dirs of training runs')
    p.add_argument('--labels', nargs='+')
    p.add_argument('--key', default='acc_students', help='logged scalar (default acc_students)')
    p.add_argument('--smooth', type=int, default=50, help='running-mean window in logged points')
    p.add_argument('--out', default='training_curves.png')
    args = p.parse_args(argv)
    from nasbnn_mm.engine.sampling import training_curves
    last = training_curves(args.runs, args.out, args.key, args.labels, args.smooth)
    for label, v in last.items():
        print(f'{label:<24} last {args.key} (smoothed): {v:.2f}')
    print(f'plot: {args.out}')
    return last


if __name__ == '__main__':
    run_cli(main)
