"""What the command-line tools share: config set-up from common flags and one-line errors."""
from __future__ import annotations
import os
import os.path as osp
import sys
from typing import Callable, Iterable

__all__ = ['add_common_args', 'load_tool_config', 'run_cli', 'user_errors']


def add_common_args(p, launcher: bool = True) -> None:
    """--work-dir, --trust-checkpoint, --cfg-options (and --launcher, --local-rank)."""
    from mmengine.config import DictAction
    p.add_argument('--work-dir', help='the dir to save logs and outputs')
    p.add_argument(
        '--trust-checkpoint',
        action='store_true',
        help='allow full unpickling of the checkpoints this run loads (load_from, the checkpoint '
        'argument, InheritFromSupernet init_cfg); only for files you trust')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings, key=value')
    if launcher:
        p.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
        p.add_argument('--local_rank', '--local-rank', type=int, default=0)


def _config_error(path: str, e: Exception):
    from ..space import ArchitectureError
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return ArchitectureError(f'config {path}: {type(e).__name__}: {text[:200]}')


def _init_cfgs(node) -> Iterable[dict]:
    """Every dict with a type under ``node`` (nested dicts and lists), e.g. init_cfg entries."""
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _init_cfgs(v)
    elif isinstance(node, (list, tuple)):
        for v in node:
            yield from _init_cfgs(v)


def load_tool_config(args, config_path: str):
    """Config with --cfg-options merged, the work dir (default ``work_dirs/<config name>``),
    the launcher, the trust flag and our runner type.

    ``--trust-checkpoint`` also marks the config's ``nasbnn.InheritFromSupernet`` initialisers as
    trusted. A backbone architecture chosen with ``--cfg-options model.backbone.pareto=... ops=...``
    replaces the config's ``arch`` (the user asked for it), and a NAS-BNN detector's neck channels
    follow its backbone (:func:`nasbnn_mm.det.sync_neck_in_channels`)."""
    from mmengine.config import Config
    from mmengine.logging import print_log
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(getattr(args, 'local_rank', 0))
    if not osp.isfile(config_path):
        raise FileNotFoundError(f'config: no such file {config_path!r}')
    try:
        cfg = Config.fromfile(config_path)
    except Exception as e:  # syntax errors and bad _base_ paths in the user's config
        raise _config_error(config_path, e) from None
    options = args.cfg_options or {}
    if options:
        cfg.merge_from_dict(options)
    cfg.launcher = getattr(args, 'launcher', 'none')
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])
    if args.trust_checkpoint:
        cfg.trust_checkpoint = True
        for node in _init_cfgs(cfg.get('model') or {}):
            if str(node.get('type', '')).endswith('InheritFromSupernet'):
                node['trusted'] = True
    cfg.setdefault('runner_type', 'nasbnn.NASBNNRunner')
    backbone = (cfg.get('model') or {}).get('backbone') or {}
    if 'model.backbone.pareto' in options and 'model.backbone.arch' not in options and backbone.get('arch'):
        print_log(
            f"model.backbone.arch {backbone['arch']!r} -> None (--cfg-options chose a pareto entry)", logger='current')
        backbone['arch'] = None
    if str(backbone.get('type', '')).endswith('NASBNNDetBackbone'):
        from ..det import sync_neck_in_channels
        sync_neck_in_channels(cfg, log=lambda msg: print_log(msg, logger='current'))
    return cfg


def user_errors() -> tuple:
    """The exception types that mean bad input (one-line message, exit code 2)."""
    from ..models.official import ConversionError
    from ..ops import PackedFormatError
    from ..space import ArchitectureError
    from ..utils.checkpoint import CheckpointMismatchError, UntrustedCheckpointError
    return (ArchitectureError, UntrustedCheckpointError, CheckpointMismatchError, PackedFormatError, ConversionError,
            FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, ValueError, KeyError)


def run_cli(main: Callable) -> None:
    """Run a tool's ``main``; bad input (a wrong architecture, an untrusted, broken or mismatching
    checkpoint, a missing file, a wrong setting) ends with a one-line ``error: ...`` and exit code 2,
    anything else keeps its traceback."""
    try:
        main()
    except user_errors() as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        text = str(msg).splitlines()[0] if str(msg) else type(e).__name__
        print(f'error: {text}', file=sys.stderr)
        sys.exit(2)
