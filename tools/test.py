#!/usr/bin/env python
"""Evaluate a checkpoint with a config's test loop (mmpretrain / mmdet style).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out metrics.json] [--cfg-options k=v ...]
    python tools/test.py DET_CONFIG CHECKPOINT --show-dir DIR [--show-num 4] [--show-score-thr 0.3]
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from nasbnn_mm.apis import add_common_args, load_tool_config, run_cli, run_test


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Test a NAS-BNN model')
    p.add_argument('config')
    p.add_argument('checkpoint')
    p.add_argument('--out', help='dump the metrics to this JSON file')
    p.add_argument(
        '--exact-parity',
        action='store_true',
        help="compute in the authors' float32 order of operations (model.backbone.exact_parity=True; "
        'slower, bit-identical to their release on converted checkpoints)')
    p.add_argument('--show-dir', help='detectors: draw test images with ground truth and predictions here')
    p.add_argument('--show-num', type=int, default=4, help='how many test images --show-dir draws (default 4)')
    p.add_argument('--show-score-thr', type=float, default=0.3, help='score threshold of drawn predictions')
    add_common_args(p)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    return run_test(
        load_tool_config(args, args.config), args.checkpoint, args.out, args.exact_parity, args.show_dir, args.show_num,
        args.show_score_thr)


if __name__ == '__main__':
    run_cli(main)
