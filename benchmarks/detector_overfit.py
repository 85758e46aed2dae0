#!/usr/bin/env python
"""Can the detector learn? Overfit a fixed set of coco_small training images and evaluate on them.

For each variant (the float-head detector of configs/coco/faster-rcnn_nasbnn-cifar-small_fpn_coco-small.py
and the paper's binary detector of ..._binary-fpn_coco-small.py), with and without weight inheritance from
a supernet, train on ``--images`` training images that contain a person (the CPU configs' class) and run
mmdet's COCO evaluation on the same images every ``--eval-interval`` iterations. Prints bbox mAP@50 and
mAP per evaluation, and per variant the first iteration (and wall time) at which mAP@50 reached
``--target``. Each evaluation line also gives the mean training losses (and the gradient norm before
clipping) since the previous one; ``--bn-check`` adds an evaluation with the backbone's BN layers on batch
statistics; ``--stop-at`` ends a run early with the schedule of ``--iters`` (for short diagnoses).

    python benchmarks/detector_overfit.py --supernet work_dirs/demo/supernet/published.pth
    python benchmarks/detector_overfit.py --variants binary --inherit yes --iters 400
    # the same neck, heads, data and schedule with a float mmdet ResNet-18 of the same widths (16..128):
    python benchmarks/detector_overfit.py --variants float --inherit no --iters 300 --cfg-options \
        "model.backbone=dict(_delete_=True, type='mmdet.ResNet', depth=18, base_channels=16, num_stages=4, \
        out_indices=(0,1,2,3), frozen_stages=-1, norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False, \
        style='pytorch', init_cfg=None)" "model.neck.in_channels=[16,32,64,128]"
"""
from __future__ import annotations
import argparse
import json
import os
import os.path as osp
import sys
import tempfile
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
CONFIGS = dict(
    float='configs/coco/faster-rcnn_nasbnn-cifar-small_fpn_coco-small.py',
    binary='configs/coco/faster-rcnn_nasbnn-cifar-small_binary-fpn_coco-small.py')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', default=os.environ.get('NASBNN_DATA', osp.join(ROOT, '..', 'shared', 'data')))
    p.add_argument('--supernet', help='published CIFAR supernet for inheritance (needed by --inherit yes/both)')
    p.add_argument('--variants', default='float,binary', help='comma list of: float, binary')
    p.add_argument('--inherit', choices=['yes', 'no', 'both'], default='both')
    p.add_argument('--images', type=int, default=8)
    p.add_argument('--iters', type=int, default=600)
    p.add_argument('--eval-interval', type=int, default=100)
    p.add_argument(
        '--stop-at',
        type=int,
        default=None,
        help='end each run after the evaluation at this iteration (the schedule stays that of --iters)')
    p.add_argument('--lr', type=float, default=None, help='AdamW lr (default: the config\'s)')
    p.add_argument('--warmup', type=int, default=None, help='linear warm-up iterations (default: the config\'s)')
    p.add_argument(
        '--bn-check',
        action='store_true',
        help='after each evaluation, evaluate again with the backbone\'s BN layers on batch statistics '
        '(running statistics unchanged): a large gap points at the running statistics')
    p.add_argument('--target', type=float, default=0.5, help='mAP@50 to reach')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out', help='write the results as JSON')
    p.add_argument('--cfg-options', nargs='+', default=[], help='extra key=value overrides for every run')
    return p.parse_args(argv)


def subset_annotations(coco_root: str, n: int, out: str, short_side: int = 320, min_size: int = 32) -> list:
    """The first ``n`` training images (by id) with a person, every person of which is at least ``min_size``
    pixels (square root of its box area) at the detector's scale (short side ``short_side``): the
    smallest anchor of the configs is 32 px (stride 4 x scale 8), so smaller persons test the anchors,
    not whether the network learns. All their annotations are kept, as a COCO file."""
    with open(osp.join(coco_root, 'annotations', 'instances_train2017.json')) as f:
        ann = json.load(f)
    sizes = {im['id']: short_side / min(im['width'], im['height']) for im in ann['images']}
    persons = {}
    for a in ann['annotations']:
        if a['category_id'] == 1:
            persons.setdefault(a['image_id'], []).append(a)
    ok = [
        i for i, ps in sorted(persons.items())
        if all(not p['iscrowd'] and (p['bbox'][2] * p['bbox'][3])**0.5 * sizes[i] >= min_size for p in ps)
    ]
    keep = set(ok[:n])
    sub = dict(
        ann,
        images=[im for im in ann['images'] if im['id'] in keep],
        annotations=[a for a in ann['annotations'] if a['image_id'] in keep])
    with open(out, 'w') as f:
        json.dump(sub, f)
    return sorted(keep)


class _Stop(Exception):
    """Ends a run early (--stop-at)."""


def run_variant(args, variant: str, inherit: bool, ann: str, work: str) -> dict:
    from mmengine.config import Config
    from mmengine.hooks import Hook
    from mmengine.runner import Runner
    from torch.nn.modules.batchnorm import _BatchNorm

    cfg = Config.fromfile(CONFIGS[variant])
    coco = osp.join(args.data, 'coco_small') + '/'
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key].dataset.update(data_root=coco, ann_file=ann, data_prefix=dict(img='train2017/'))
        cfg[key].num_workers = 0
        cfg[key].persistent_workers = False
    cfg.val_evaluator.ann_file = ann
    cfg.test_evaluator.ann_file = ann
    cfg.train_cfg.update(max_iters=args.iters, val_interval=args.eval_interval)
    for s in cfg.param_scheduler:
        if s.type == 'CosineAnnealingLR':
            s.update(T_max=args.iters, end=args.iters)
        if s.type == 'LinearLR' and args.warmup is not None:
            s.end = args.warmup
    if args.lr is not None:
        cfg.optim_wrapper.optimizer.lr = args.lr
    cfg.model.backbone.init_cfg = (
        dict(type='nasbnn.InheritFromSupernet', checkpoint=args.supernet) if inherit else None)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=10**9)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=50)
    cfg.custom_hooks = []
    cfg.randomness = dict(seed=args.seed)
    cfg.work_dir = work
    cfg.log_level = 'WARNING'
    for item in args.cfg_options:
        k, v = item.split('=', 1)
        cfg.merge_from_dict({k: eval(v, {})})
    history = []
    t0 = time.time()

    losses = {}

    class Record(Hook):
        priority = 'LOWEST'

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            for k, v in (outputs or {}).items():
                losses.setdefault(k, []).append(float(v.detach() if hasattr(v, 'detach') else v))
            if 'train/grad_norm' in runner.message_hub.log_scalars:  # with clip_grad
                losses.setdefault('grad_norm', []).append(runner.message_hub.get_scalar('train/grad_norm').current())

        inner = False

        def after_val_epoch(self, runner, metrics=None):
            m = {k.split('/')[-1]: float(v) for k, v in (metrics or {}).items()}
            if self.inner:
                history[-1].update(bn_batch_map50=m.get('bbox_mAP_50', -1.0), bn_batch_map=m.get('bbox_mAP', -1.0))
                return
            history.append(
                dict(
                    iter=runner.iter,
                    seconds=time.time() - t0,
                    map50=m.get('bbox_mAP_50', -1.0),
                    map=m.get('bbox_mAP', -1.0),
                    loss={
                        k: sum(v) / len(v)
                        for k, v in losses.items()
                    }))
            losses.clear()
            if args.bn_check:
                self.eval_on_batch_stats(runner)
            self.print_last()
            if args.stop_at is not None and runner.iter >= args.stop_at:
                raise _Stop

        def eval_on_batch_stats(self, runner):
            model = runner.model.module if hasattr(runner.model, 'module') else runner.model
            bns = [m for m in model.backbone.modules() if isinstance(m, _BatchNorm)]
            saved = [m.momentum for m in bns]
            for bn in bns:
                bn.momentum = 0.0  # in train mode: the batch's statistics, the running ones unchanged

            def batch_stats(module, inputs):  # the val loop puts the model in eval mode first
                for bn in bns:
                    bn.train()

            handle = model.backbone.register_forward_pre_hook(batch_stats)
            self.inner = True
            try:
                runner.val_loop.run()
            finally:
                self.inner = False
                handle.remove()
                for bn, mom in zip(bns, saved):
                    bn.momentum = mom

        def print_last(self):
            h = history[-1]
            if 'bn_batch_map50' in h:
                print(
                    f'  BN on batch statistics at test: mAP@50 {h["bn_batch_map50"]:.3f}, mAP {h["bn_batch_map"]:.3f}')
            losses_text = ', '.join(f'{k} {v:.3f}' for k, v in h['loss'].items())
            print(
                f'  [{variant}, inherit={"yes" if inherit else "no"}] iter {h["iter"]}: mAP@50 {h["map50"]:.3f}, '
                f'mAP {h["map"]:.3f} ({h["seconds"]:.0f} s); mean train losses since the last evaluation: '
                f'{losses_text}',
                flush=True)

    runner = Runner.from_cfg(cfg)
    runner.register_hook(Record())
    try:
        runner.train()
    except _Stop:
        pass
    hit = next((h for h in history if h['map50'] >= args.target), None)
    return dict(
        variant=variant,
        inherit=inherit,
        history=history,
        reached_at=hit and hit['iter'],
        reached_seconds=hit and hit['seconds'],
        final_map50=history[-1]['map50'] if history else None)


def main(argv=None):
    args = parse_args(argv)
    variants = [v.strip() for v in args.variants.split(',') if v.strip()]
    for v in variants:
        if v not in CONFIGS:
            raise SystemExit(f'--variants: {v!r} not allowed (allowed: {", ".join(CONFIGS)})')
    inherits = dict(yes=[True], no=[False], both=[False, True])[args.inherit]
    if any(inherits) and not (args.supernet and osp.isfile(args.supernet)):
        raise SystemExit('--supernet: a published CIFAR supernet is needed for inheritance (or --inherit no)')
    import nasbnn_mm.det  # noqa: F401
    import nasbnn_mm.engine  # noqa: F401
    results = []
    with tempfile.TemporaryDirectory(prefix='nasbnn_overfit_') as tmp:
        ann = osp.join(tmp, 'overfit.json')
        ids = subset_annotations(osp.join(args.data, 'coco_small'), args.images, ann)
        print(f'{len(ids)} training images whose persons are all >= 32 px at 320 px: ids {ids}', flush=True)
        for v in variants:
            for inh in inherits:
                results.append(run_variant(args, v, inh, ann, osp.join(tmp, f'{v}_{inh}')))
    print(f'\n{"variant":<8}{"inherit":<9}{f"first iter at mAP@50 >= {args.target}":>34}{"wall":>9}'
          f'{"final mAP@50":>14}')
    for r in results:
        hit = f"{r['reached_at']}" if r['reached_at'] is not None else 'not reached'
        wall = f"{r['reached_seconds']:.0f} s" if r['reached_seconds'] is not None else '-'
        print(f"{r['variant']:<8}{'yes' if r['inherit'] else 'no':<9}{hit:>34}{wall:>9}{r['final_map50']:>14.3f}")
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == '__main__':
    main()
