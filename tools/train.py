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

from nasbnn_mm.apis import add_common_args, load_tool_config, run_cli, run_train


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Train a NAS-BNN model')
    p.add_argument('config', help='train config file path')
    p.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from the given checkpoint, or from the latest one in the work dir if omitted')
    p.add_argument('--load-from', help='initialise the model from this checkpoint (safe loading)')
    add_common_args(p)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    return run_train(load_tool_config(args, args.config), args.resume, args.load_from)


if __name__ == '__main__':
    run_cli(main)
