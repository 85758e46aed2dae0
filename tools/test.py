#!/usr/bin/env python
"""Evaluate a checkpoint with a config's test loop (mmpretrain / mmdet style).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--cfg-options k=v ...]
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.registry import RUNNERS  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Test a NAS-BNN model')
    p.add_argument('config')
    p.add_argument('checkpoint')
    p.add_argument('--work-dir')
    p.add_argument('--out', help='dump the metrics to this JSON file')
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
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    cfg.resume = False
    if cfg.get('train_cfg') is None or cfg.get('optim_wrapper') is None:
        # mmengine wants the train triple all or nothing; a test-only config keeps none of it
        for k in ('train_dataloader', 'train_cfg', 'optim_wrapper', 'param_scheduler'):
            cfg.pop(k, None)
    if args.trust_checkpoint:
        cfg.trust_checkpoint = True
    cfg.setdefault('runner_type', 'nasbnn.NASBNNRunner')
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
    try:
        main()
    except Exception as e:  # one-line message for bad input; anything else keeps its traceback
        from nasbnn_mm.space import ArchitectureError
        from nasbnn_mm.utils import CheckpointMismatchError, UntrustedCheckpointError
        if isinstance(e, (ArchitectureError, UntrustedCheckpointError, CheckpointMismatchError, FileNotFoundError)):
            print(f'error: {e}', file=sys.stderr)
            sys.exit(2)
        raise
