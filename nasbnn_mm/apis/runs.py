"""The runs the tools start, on a config prepared by :func:`nasbnn_mm.apis.load_tool_config`."""
from __future__ import annotations
import json
from typing import Optional

__all__ = ['build_runner', 'run_train', 'run_test', 'run_search', 'run_sampling']


def build_runner(cfg):
    """The config's runner (``nasbnn.NASBNNRunner`` by default), after starting a CPU process group
    when a launcher asks for one on a machine without CUDA."""
    from mmengine.registry import RUNNERS

    from ..engine import init_cpu_dist_if_needed
    init_cpu_dist_if_needed(cfg.get('launcher', 'none'), cfg)
    return RUNNERS.build(cfg)


def run_train(cfg, resume: Optional[str] = None, load_from: Optional[str] = None):
    """Train; ``resume``: 'auto' (the latest checkpoint of the work dir) or a checkpoint path."""
    if resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif resume is not None:
        cfg.resume, cfg.load_from = True, resume
    if load_from:
        cfg.load_from = load_from
    return build_runner(cfg).train()


def run_test(cfg,
             checkpoint: str,
             out: Optional[str] = None,
             exact_parity: bool = False,
             show_dir: Optional[str] = None,
             show_num: int = 4,
             show_score_thr: float = 0.3) -> dict:
    """Evaluate ``checkpoint`` with the config's test loop; ``out``: also write the metrics as JSON;
    ``show_dir`` (detectors): draw the first ``show_num`` test images with ground truth and predictions
    (score >= ``show_score_thr``) there (:class:`~nasbnn_mm.det.DetSamplesVisualizationHook`)."""
    cfg.load_from, cfg.resume = checkpoint, False
    if show_dir:
        if 'Det' not in str(cfg.get('visualizer', {}).get('type', '')):
            raise ValueError('--show-dir: only for detection configs (their visualizer is a DetLocalVisualizer)')
        from ..det.visualization import visualization_hook_cfg
        cfg.default_hooks['visualization'] = visualization_hook_cfg(show_dir, show_num, show_score_thr)
    if exact_parity:
        cfg.model.backbone.exact_parity = True
    if cfg.get('train_cfg') is None or cfg.get('optim_wrapper') is None:
        # mmengine wants the train triple all or nothing; a test-only config keeps none of it
        for k in ('train_dataloader', 'train_cfg', 'optim_wrapper', 'param_scheduler'):
            cfg.pop(k, None)
    metrics = build_runner(cfg).test()
    if out:
        from ..utils.checkpoint import atomic_write_text
        atomic_write_text(out, json.dumps(metrics, indent=2, default=float))
    return metrics


def run_search(cfg, checkpoint: str, resume: bool = False) -> dict:
    """The evolutionary Pareto search of a search config (its ``train_cfg`` is the search loop) on the
    supernet in ``checkpoint``; ``resume`` continues from the work dir's ``search_state.json``."""
    loop = cfg.get('train_cfg') or {}
    if 'EvolutionParetoSearchLoop' not in str(loop.get('type', '')):
        from ..space import ArchitectureError
        raise ArchitectureError(
            "search config: train_cfg must be dict(type='nasbnn.EvolutionParetoSearchLoop', ...) "
            f"(got type {loop.get('type')!r}); see configs/cifar10/nasbnn-search_cifar-small_cifar10.py")
    cfg.load_from, cfg.resume = checkpoint, False
    loop['resume'] = bool(resume)
    runner = build_runner(cfg)
    runner.train()
    return runner.train_loop.front_records()


def run_sampling(cfg, checkpoint: str, num: int = 200, nd: bool = True, seed: int = 0, resume: bool = False) -> dict:
    """The paper's Fig. 3 protocol on a search config: ``num`` random subnets of the supernet in
    ``checkpoint``, each BN-recalibrated (the search's calibration batches) and scored on its
    held-out split; writes ``samples.json`` in the work dir."""
    loop = cfg.get('train_cfg') or {}
    if 'EvolutionParetoSearchLoop' not in str(loop.get('type', '')):
        from ..space import ArchitectureError
        raise ArchitectureError("sample_subnets: CONFIG must be a search config (train_cfg = the search loop: its "
                                'held-out split, calibration batches and metric are used)')
    keep = ('evaluator', 'calib_dataloader', 'calib_batches', 'img_size', 'num_classes', 'score_key')
    cfg.train_cfg = dict(
        type='nasbnn.SubnetSamplingLoop',
        num=num,
        nd=nd,
        seed=seed,
        resume=bool(resume),
        **{k: loop[k]
           for k in keep if k in loop})
    cfg.load_from, cfg.resume = checkpoint, False
    runner = build_runner(cfg)
    runner.train()
    return runner.train_loop.outputs()
