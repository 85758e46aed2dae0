#!/usr/bin/env python
"""Train a model from a config (mmpretrain / mmdet style).

    python tools/train.py configs/cifar10/nasbnn-supernet_cifar-small_cifar10.py
    python tools/train.py CONFIG --work-dir work_dirs/x --resume            # continue after a kill
    torchrun --nproc-per-node 8 tools/train.py CONFIG --launcher pytorch   # distributed (gloo on CPU)
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.registry import RUNNERS  # noqa: E402

from nasbnn_mm.utils.cli import add_common_args, load_tool_config, run_cli  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Train a NAS-BNN model')
    p.add_argument('config', help='train config file path')
    p.add_argument('--resume', nargs='?', type=str, const='auto',
                   help='resume from the given checkpoint, or from the latest one in the work dir if omitted')
    p.add_argument('--load-from', help='initialise the model from this checkpoint (safe loading)')
    add_common_args(p)
    return p.parse_args(argv)


def build_cfg(args):
    cfg = load_tool_config(args, args.config)
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    if args.load_from:
        cfg.load_from = args.load_from
    return cfg


def main(argv=None):
    args = parse_args(argv)
    cfg = build_cfg(args)
    import nasbnn_mm  # noqa: F401  (registers the nasbnn scope)
    from nasbnn_mm.engine import init_cpu_dist_if_needed
    init_cpu_dist_if_needed(args.launcher, cfg)
    runner = RUNNERS.build(cfg)
    runner.train()


if __name__ == '__main__':
    run_cli(main)
