#!/usr/bin/env python
"""Train a model from a config (mmpretrain / mmdet style).

    python tools/train.py configs/cifar10/nasbnn-supernet_cifar-small_cifar10.py
    python tools/train.py CONFIG --work-dir work_dirs/x --resume            # continue after a kill
    torchrun --nproc-per-node 8 tools/train.py CONFIG --launcher pytorch   # distributed (gloo on CPU)
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.registry import RUNNERS  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Train a NAS-BNN model')
    p.add_argument('config', help='train config file path')
    p.add_argument('--work-dir', help='the dir to save logs and models')
    p.add_argument('--resume', nargs='?', type=str, const='auto',
                   help='resume from the given checkpoint, or from the latest one in the work dir if omitted')
    p.add_argument('--load-from', help='initialise the model from this checkpoint (safe loading)')
    p.add_argument('--trust-checkpoint', action='store_true',
                   help='allow full unpickling of checkpoints from outside the work dir (only for trusted files)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings, key=value')
    p.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    p.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = p.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def build_cfg(args):
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    if args.load_from:
        cfg.load_from = args.load_from
    if args.trust_checkpoint:
        cfg.trust_checkpoint = True
    cfg.setdefault('runner_type', 'nasbnn.NASBNNRunner')
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
    try:
        main()
    except Exception as e:  # one-line message for bad input; anything else keeps its traceback
        from nasbnn_mm.space import ArchitectureError
        from nasbnn_mm.utils import CheckpointMismatchError, UntrustedCheckpointError
        if isinstance(e, (ArchitectureError, UntrustedCheckpointError, CheckpointMismatchError, FileNotFoundError)):
            print(f'error: {e}', file=sys.stderr)
            sys.exit(2)
        raise
