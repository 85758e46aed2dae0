#!/usr/bin/env python
"""Evaluate a checkpoint with a config's test loop (mmpretrain / mmdet style).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--cfg-options k=v ...]
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.registry import RUNNERS  # noqa: E402

from nasbnn_mm.utils.cli import add_common_args, load_tool_config, run_cli  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Test a NAS-BNN model')
    p.add_argument('config')
    p.add_argument('checkpoint')
    p.add_argument('--out', help='dump the metrics to this JSON file')
    p.add_argument('--exact-parity', action='store_true',
                   help="compute in the authors' float32 order of operations (model.backbone.exact_parity=True; "
                        'slower, bit-identical to their release on converted checkpoints)')
    add_common_args(p)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_tool_config(args, args.config)
    cfg.load_from = args.checkpoint
    cfg.resume = False
    if args.exact_parity:
        cfg.model.backbone.exact_parity = True
    if cfg.get('train_cfg') is None or cfg.get('optim_wrapper') is None:
        # mmengine wants the train triple all or nothing; a test-only config keeps none of it
        for k in ('train_dataloader', 'train_cfg', 'optim_wrapper', 'param_scheduler'):
            cfg.pop(k, None)
    import nasbnn_mm  # noqa: F401
    from nasbnn_mm.engine import init_cpu_dist_if_needed
    init_cpu_dist_if_needed(args.launcher, cfg)
    runner = RUNNERS.build(cfg)
    metrics = runner.test()
    if args.out:
        import json

        from nasbnn_mm.utils.checkpoint import atomic_write_text
        atomic_write_text(args.out, json.dumps(metrics, indent=2, default=float))
    return metrics


if __name__ == '__main__':
    run_cli(main)
