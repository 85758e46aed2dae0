#!/usr/bin/env python
"""Evolutionary search of the accuracy/OPs Pareto front of a trained supernet.

    python tools/search.py CONFIG SUPERNET_CKPT [--work-dir DIR] [--resume] [--cfg-options k=v ...]
    torchrun --nproc-per-node 8 tools/search.py CONFIG SUPERNET_CKPT --launcher pytorch

CONFIG holds the supernet ``model`` and ``search_cfg`` (a ``nasbnn.EvolutionParetoSearchLoop``
with its held-out and calibration dataloaders). Outputs in the work dir: pareto.json,
candidates.json, pareto.png, search_state.json (resumable after every generation) and the log.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.registry import RUNNERS  # noqa: E402

from nasbnn_mm.utils.cli import add_common_args, load_tool_config, run_cli  # noqa: E402

_RUNNER_ONLY = ('train_dataloader', 'train_cfg', 'optim_wrapper', 'param_scheduler', 'val_dataloader', 'val_cfg',
                'val_evaluator', 'test_dataloader', 'test_cfg', 'test_evaluator', 'auto_scale_lr', 'custom_hooks')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='NAS-BNN evolutionary Pareto search')
    p.add_argument('config')
    p.add_argument('checkpoint', help='supernet checkpoint (published, weights-only)')
    p.add_argument('--resume', action='store_true', help='continue from work_dir/search_state.json')
    add_common_args(p)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_tool_config(args, args.config)
    if 'search_cfg' not in cfg:
        raise KeyError(f'{args.config}: no search_cfg (expected dict(type="nasbnn.EvolutionParetoSearchLoop", ...))')
    search_cfg = cfg.pop('search_cfg')
    for k in _RUNNER_ONLY:  # the search loop builds its own dataloaders
        cfg.pop(k, None)
    cfg.load_from, cfg.resume = None, False
    import nasbnn_mm  # noqa: F401
    from nasbnn_mm.engine import init_cpu_dist_if_needed
    from nasbnn_mm.registry import LOOPS
    init_cpu_dist_if_needed(args.launcher, cfg)
    runner = RUNNERS.build(cfg)
    runner.load_checkpoint(args.checkpoint)
    loop = LOOPS.build(search_cfg, default_args=dict(runner=runner))
    front = loop.run(resume=args.resume)
    runner.logger.info(f'[search] Pareto front written to {osp.join(cfg.work_dir, "pareto.json")}: '
                       f'{len(front)} bins')
    return front


if __name__ == '__main__':
    run_cli(main)
