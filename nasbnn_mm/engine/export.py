"""Export one subnet of a trained supernet as a standalone static model (``tools/export_subnet.py``).

Like mmrazor's ``convert_supernet2subnet``: the supernet classifier is built from its config and
loaded from a published checkpoint, the subnet is selected (preset, architecture text or a
``pareto.json`` entry), its BN statistics are recalibrated on the same seeded calibration batches
the search scored it with, and the static classifier's weights
(:func:`nasbnn_mm.models.subnet_classifier_state`, i.e. ``get_active_subnet``) are published with
ready-made test (pipeline 1) and finetune (pipeline 2) configs, optionally with the packed 1-bit form.
"""
from __future__ import annotations
import os
import os.path as osp
from typing import Optional

from ..models import BACKBONE_SETTINGS, subnet_classifier_state
from ..models.packed import pack_subnet, save_packed
from ..space import ArchitectureError, profile_arch
from ..space.pareto import pareto_entry
from ..utils.checkpoint import (CheckpointMismatchError, atomic_write_text, check_finite, load_checkpoint_file,
                                publish_checkpoint)
from .bn_recalibration import recalibrate_bn
from .search_loop import reseed

__all__ = [
    'export_subnet', 'resolve_export_arch', 'search_settings', 'load_supernet_classifier', 'data_preprocessor_meta'
]


def resolve_export_arch(arch: str, ops=None):
    """(architecture-like, name of the export) from a preset, an architecture text or a
    ``pareto.json`` path with ``ops`` (its OPs bin)."""
    if not isinstance(arch, str) or not arch.strip():
        raise ArchitectureError('--arch: empty (allowed: a preset A..F, an architecture text or a pareto.json)')
    if arch.endswith('.json'):
        entry = pareto_entry(arch, ops)  # one-line ArchitectureError naming `ops` and the bins
        return entry['arch'], f"ops{float(entry['bin']):g}"
    if ops is not None:
        raise ArchitectureError(f'--ops: {ops!r} given without a pareto.json (--ops selects a Pareto entry)')
    name = arch if len(arch) <= 12 and '|' not in arch else 'subnet'
    return arch, name.replace('/', '_').replace(' ', '_')


def search_settings(cfg) -> dict:
    """The calibration settings of a search config (its ``train_cfg`` search loop), else defaults."""
    loop = cfg.get('train_cfg') or {}
    if 'EvolutionParetoSearchLoop' not in str(loop.get('type', '')):
        loop = {}
    return dict(
        calib_dataloader=loop.get('calib_dataloader') or cfg.get('calib_dataloader') or cfg.train_dataloader,
        calib_batches=loop.get('calib_batches', 10),
        seed=loop.get('seed', 0),
        img_size=loop.get('img_size', (cfg.get('val_cfg') or {}).get('ops_img_size', 224)))


def load_supernet_classifier(cfg, checkpoint: str, trusted: bool = False):
    """The config's supernet classifier with the weights of ``checkpoint`` (every tensor must fit,
    all finite; the checkpoint's recorded backbone settings must be the model's)."""
    from mmengine.registry import DefaultScope

    from ..models import check_backbone_settings
    from ..registry import MODELS
    DefaultScope.get_instance(f'export-{os.getpid()}', scope_name=cfg.get('default_scope', 'mmpretrain'))
    model = MODELS.build(cfg.model)
    ckpt = load_checkpoint_file(checkpoint, trusted=trusted)
    if not isinstance(ckpt, dict):
        raise CheckpointMismatchError(f'checkpoint {checkpoint}: a {type(ckpt).__name__}, not a checkpoint dict')
    sd = ckpt.get('state_dict', ckpt)
    if not isinstance(sd, dict) or not sd:
        raise CheckpointMismatchError(f'checkpoint {checkpoint}: no state_dict of tensors')
    check_backbone_settings(model.backbone, ckpt.get('meta'), checkpoint)
    check_finite(sd, checkpoint)
    want = model.state_dict()
    missing = [k for k in want if k not in sd]
    unexpected = [k for k in sd if k not in want]
    shapes = [k for k in want if k in sd and tuple(sd[k].shape) != tuple(want[k].shape)]
    if missing or unexpected or shapes:
        what = (f'missing {missing[:3]}' if missing else f'unexpected {unexpected[:3]}'
                if unexpected else f'shape of {shapes[:3]} differs (another search space?)')
        raise CheckpointMismatchError(f'checkpoint {checkpoint}: does not fit the config\'s model: {what}')
    model.load_state_dict(sd, strict=True)
    return model


def data_preprocessor_meta(cfg) -> Optional[dict]:
    """The config's classification data preprocessor, reduced to what inference needs (type, mean, std,
    channel order, num_classes) in plain values; None where the config has none."""
    dp = (cfg.get('model') or {}).get('data_preprocessor') or cfg.get('data_preprocessor')
    if not dp:
        return None
    keep = ('type', 'mean', 'std', 'to_rgb', 'bgr_to_rgb', 'rgb_to_bgr', 'num_classes')
    return {k: (list(dp[k]) if isinstance(dp[k], (list, tuple)) else dp[k]) for k in keep if k in dp}


def _write_config(path: str, base: str, lines: str) -> None:
    base_rel = osp.relpath(osp.abspath(base), osp.dirname(osp.abspath(path)))
    atomic_write_text(path, f"# generated by tools/export_subnet.py\n_base_ = ['{base_rel}']\n{lines}")


def export_subnet(cfg,
                  checkpoint: str,
                  arch: str,
                  ops=None,
                  out_dir: Optional[str] = None,
                  calib_batches: Optional[int] = None,
                  seed: Optional[int] = None,
                  packed: bool = False,
                  trusted: bool = False,
                  subnet_config: Optional[str] = None,
                  finetune_config: Optional[str] = None,
                  log=print) -> dict:
    """Export ``arch`` of the supernet in ``checkpoint``.

    Args:
        cfg: the supernet (or search) config (an mmengine Config).
        checkpoint: published supernet checkpoint.
        arch: preset, architecture text, or a ``pareto.json`` (then ``ops`` is the bin).
        ops: OPs bin (M) of the pareto entry.
        out_dir: output folder (default ``work_dirs/export/<name>``).
        calib_batches, seed: BN recalibration (default: the search's settings, or 10 and 0).
        packed: also write the packed 1-bit form.
        trusted: allow full unpickling of ``checkpoint``.
        subnet_config, finetune_config: templates of the generated configs (default: the config's
            ``subnet_config`` / ``finetune_config``).
        log: where progress lines go.

    Returns:
        dict with ``checkpoint``, ``packed`` (or None), ``configs``, ``arch``, ``ops_m``, ``calib_images``.
    """
    from mmengine.runner import Runner
    arch_like, name = resolve_export_arch(arch, ops)
    out_dir = out_dir or osp.join('work_dirs', 'export', name)
    settings = search_settings(cfg)
    calib_batches = settings['calib_batches'] if calib_batches is None else calib_batches
    seed = settings['seed'] if seed is None else seed
    if isinstance(calib_batches, bool) or not isinstance(calib_batches, int) or calib_batches < 0:
        raise ValueError(f'--calib-batches: {calib_batches!r} not allowed (allowed: an int >= 0)')
    model = load_supernet_classifier(cfg, checkpoint, trusted)
    arch = model.backbone.set_subnet(arch_like)
    loader = Runner.build_dataloader(settings['calib_dataloader'], seed=seed)
    reseed(seed)  # the same calibration batches as the search scored the candidate with
    seen = recalibrate_bn(model, loader, calib_batches) if calib_batches > 0 else 0
    model.eval()
    sd = subnet_classifier_state(model, arch)
    space, num_classes = model.backbone.space, model.head.num_classes
    rep = profile_arch(arch, settings['img_size'], num_classes, space=space)
    bb_settings = model.backbone.settings()
    meta = dict(
        arch=arch.to_text(),
        search_space=space.to_dict(),
        num_classes=num_classes,
        backbone_settings=bb_settings,
        **{k: bb_settings[k]
           for k in BACKBONE_SETTINGS},
        source=osp.abspath(checkpoint),
        calib_batches=calib_batches,
        calib_images=seen,
        calib_seed=seed,
        ops_m=rep.ops / 1e6,
        img_size=settings['img_size'])
    classes = getattr(getattr(loader, 'dataset', None), 'metainfo', {}).get('classes')
    if classes:
        meta['dataset_meta'] = dict(classes=list(classes))
    preprocessor = data_preprocessor_meta(cfg)
    if preprocessor:  # the normalization, for the packed model and the 1-bit runtime's tools/infer.py
        meta['data_preprocessor'] = preprocessor
    os.makedirs(out_dir, exist_ok=True)
    ckpt_path = publish_checkpoint(sd, osp.join(out_dir, 'subnet.pth'), meta)
    settings_text = ', '.join(f'{k}={v!r}' for k, v in bb_settings.items())
    model_lines = (f"model = dict(backbone=dict(arch={arch.to_text()!r}, search_space={space.to_dict()!r}, "
                   f"{settings_text}), head=dict(in_channels={arch.stage_out_channels[-1]}, "
                   f"num_classes={num_classes}))\n")
    configs = {}
    for kind, base, extra in (('subnet_test', subnet_config or cfg.get('subnet_config'), ''),
                              ('subnet_finetune', finetune_config
                               or cfg.get('finetune_config'), f'load_from = {osp.abspath(ckpt_path)!r}\n')):
        if base:
            configs[kind] = osp.join(out_dir, f'{kind}.py')
            _write_config(configs[kind], base, model_lines + extra)
    log(f'exported {arch.to_text()} ({rep.ops / 1e6:.2f}M OPs, BN recalibrated on {seen} images) to {ckpt_path}')
    packed_path = None
    if packed:
        packed_path = save_packed(pack_subnet(sd, arch, meta), osp.join(out_dir, 'subnet_packed.pth'))
        log(f'packed 1-bit form: {packed_path} ({os.path.getsize(packed_path) / 2 ** 20:.3f} MB on disk, '
            f'{rep.size_bytes / 2 ** 20:.3f} MB counted)')
    return dict(
        checkpoint=ckpt_path,
        packed=packed_path,
        configs=configs,
        arch=arch.to_text(),
        ops_m=rep.ops / 1e6,
        calib_images=seen)
