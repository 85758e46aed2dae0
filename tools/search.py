#!/usr/bin/env python
"""Evolutionary search of the accuracy/OPs Pareto front of a trained supernet.

    python tools/search.py CONFIG SUPERNET_CKPT [--work-dir DIR] [--resume] [--cfg-options k=v ...]
    torchrun --nproc-per-node 8 tools/search.py CONFIG SUPERNET_CKPT --launcher pytorch

CONFIG is a search config: the supernet ``model``, ``train_cfg=dict(type='nasbnn.EvolutionParetoSearchLoop',
...)`` and the held-out split as ``train_dataloader`` (see configs/cifar10/nasbnn-search_cifar-small_cifar10.py);
the runner's ``train()`` runs the search and calls hooks around every generation. Outputs in the
work dir: pareto.json, candidates.json, pareto.png, search_state.json (resumable after every
generation) and the log.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from nasbnn_mm.apis import add_common_args, load_tool_config, run_cli, run_search


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='NAS-BNN evolutionary Pareto search')
    p.add_argument('config')
    p.add_argument('checkpoint', help='supernet checkpoint (published, weights-only)')
    p.add_argument('--resume', action='store_true', help='continue from work_dir/search_state.json')
    add_common_args(p)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    return run_search(load_tool_config(args, args.config), args.checkpoint, args.resume)


if __name__ == '__main__':
    run_cli(main)
