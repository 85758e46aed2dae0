#!/usr/bin/env python
"""Evolutionary search of the accuracy/OPs Pareto front of a trained supernet.

    python tools/search.py CONFIG SUPERNET_CKPT [--work-dir DIR] [--resume] [--cfg-options k=v ...]
    torchrun --nproc-per-node 8 tools/search.py CONFIG SUPERNET_CKPT --launcher pytorch

CONFIG holds the supernet ``model`` and ``search_cfg`` (a ``nasbnn.EvolutionParetoSearchLoop``
with its held-out and calibration dataloaders). Outputs in the work dir: pareto.json,
candidates.json, pareto.png, search_state.json (resumable after every generation) and the log.
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.registry import RUNNERS  # noqa: E402

_RUNNER_ONLY = ('train_dataloader', 'train_cfg', 'optim_wrapper', 'param_scheduler', 'val_dataloader', 'val_cfg',
                'val_evaluator', 'test_dataloader', 'test_cfg', 'test_evaluator', 'auto_scale_lr', 'custom_hooks')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='NAS-BNN evolutionary Pareto search')
    p.add_argument('config')
    p.add_argument('checkpoint', help='supernet checkpoint (published, weights-only)')
    p.add_argument('--work-dir')
    p.add_argument('--resume', action='store_true', help='continue from work_dir/search_state.json')
    p.add_argument('--trust-checkpoint', action='store_true',
                   help='allow full unpickling of the checkpoint (only for trusted files)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction)
    p.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    p.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = p.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def main(argv=None):
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if 'search_cfg' not in cfg:
        raise KeyError(f'{args.config}: no search_cfg (expected dict(type="nasbnn.EvolutionParetoSearchLoop", ...))')
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    search_cfg = cfg.pop('search_cfg')
    for k in _RUNNER_ONLY:  # the search loop builds its own dataloaders
        cfg.pop(k, None)
    cfg.load_from, cfg.resume = None, False
    if args.trust_checkpoint:
        cfg.trust_checkpoint = True
    cfg.setdefault('runner_type', 'nasbnn.NASBNNRunner')
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
    try:
        main()
    except Exception as e:  # one-line message for bad input; anything else keeps its traceback
        from nasbnn_mm.space import ArchitectureError
        from nasbnn_mm.utils import UntrustedCheckpointError
        if isinstance(e, (ArchitectureError, UntrustedCheckpointError, FileNotFoundError, KeyError, ValueError)):
            print(f'error: {e}', file=sys.stderr)
            sys.exit(2)
        raise
