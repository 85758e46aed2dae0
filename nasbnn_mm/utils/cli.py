"""What the command-line tools share: config set-up from common flags and one-line errors."""
from __future__ import annotations

import os
import os.path as osp
import sys
from typing import Callable

__all__ = ['add_common_args', 'load_tool_config', 'run_cli']


def add_common_args(p, launcher: bool = True) -> None:
    """--work-dir, --trust-checkpoint, --cfg-options (and --launcher, --local-rank)."""
    from mmengine.config import DictAction
    p.add_argument('--work-dir', help='the dir to save logs and outputs')
    p.add_argument('--trust-checkpoint', action='store_true',
                   help='allow full unpickling of checkpoints from outside the work dir (only for trusted files)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings, key=value')
    if launcher:
        p.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
        p.add_argument('--local_rank', '--local-rank', type=int, default=0)


def load_tool_config(args, config_path: str):
    """Config with --cfg-options merged, the work dir (default ``work_dirs/<config name>``),
    the launcher, the trust flag and our runner type."""
    from mmengine.config import Config
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(getattr(args, 'local_rank', 0))
    cfg = Config.fromfile(config_path)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    cfg.launcher = getattr(args, 'launcher', 'none')
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])
    if args.trust_checkpoint:
        cfg.trust_checkpoint = True
    cfg.setdefault('runner_type', 'nasbnn.NASBNNRunner')
    _sync_neck_channels(cfg)
    return cfg


def _sync_neck_channels(cfg) -> None:
    """A NAS-BNN detector's neck ``in_channels`` follow from its backbone's architecture; after
    ``--cfg-options model.backbone.arch=...`` (or ``pareto``/``ops``/``out_indices``) the config's
    values are stale and the first forward would fail on a shape mismatch, so they are recomputed."""
    model = cfg.get('model') or {}
    backbone, neck = model.get('backbone') or {}, model.get('neck')
    if backbone.get('type') != 'nasbnn.NASBNNDetBackbone' or not isinstance(neck, dict) or 'in_channels' not in neck:
        return
    from mmengine.logging import print_log

    from ..det import fpn_in_channels
    want = fpn_in_channels(backbone)
    if list(neck['in_channels']) != want:
        print_log(f"model.neck.in_channels {list(neck['in_channels'])} -> {want} (the backbone's stage widths)",
                  logger='current')
        neck['in_channels'] = want


def _user_errors():
    from ..space import ArchitectureError
    from .checkpoint import UntrustedCheckpointError
    return (ArchitectureError, UntrustedCheckpointError, FileNotFoundError, ValueError, KeyError)



def run_cli(main: Callable) -> None:
    """Run a tool's ``main``; bad input (a wrong architecture, an untrusted or missing file, a
    wrong setting) ends with a one-line ``error: ...`` and exit code 2, anything else keeps its
    traceback."""
    try:
        main()
    except _user_errors() as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f'error: {msg}', file=sys.stderr)
        sys.exit(2)
