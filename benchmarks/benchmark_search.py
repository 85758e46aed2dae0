#!/usr/bin/env python
"""Candidates evaluated per minute by the search: BN recalibration + held-out top-1 per candidate.

    python benchmarks/benchmark_search.py [--config configs/cifar10/nasbnn-search_cifar-small_cifar10.py]
        [--heldout 500] [--calib-batches 10] [--calib-batch-size 64] [--candidates 8]

Uses the config's supernet (random weights: speed does not depend on them), its held-out and
calibration dataloaders, and random candidates of its space; prints the settings and, last,
`<N> candidates/min (held-out <H> images, recalibration <B> x <S> images)`.
"""
import argparse
import os.path as osp
import random
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--config', default='configs/cifar10/nasbnn-search_cifar-small_cifar10.py')
    p.add_argument('--heldout', type=int, default=500, help='held-out images per candidate')
    p.add_argument('--calib-batches', type=int, default=10)
    p.add_argument('--calib-batch-size', type=int, default=64)
    p.add_argument('--candidates', type=int, default=8)
    args = p.parse_args()

    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmengine.runner import Runner

    import nasbnn_mm  # noqa: F401
    from nasbnn_mm.engine.search_loop import evaluate_subnet
    from nasbnn_mm.registry import MODELS
    cfg = Config.fromfile(args.config)
    s = cfg.train_cfg  # the search loop
    cfg.train_dataloader.dataset.indices = args.heldout
    s.calib_dataloader.batch_size = args.calib_batch_size
    DefaultScope.get_instance('benchmark_search', scope_name=cfg.default_scope)
    model = MODELS.build(cfg.model).eval()
    heldout = Runner.build_dataloader(cfg.train_dataloader)
    calib = Runner.build_dataloader(s.calib_dataloader, seed=0)
    from mmengine.registry import EVALUATOR
    evaluator = EVALUATOR.build(dict(type='Evaluator', metrics=s.evaluator))
    rng = random.Random(0)
    archs = [model.space.sample(rng) for _ in range(args.candidates + 1)]
    evaluate_subnet(model, archs[0], heldout, evaluator, calib, args.calib_batches)  # warm-up
    t0 = time.perf_counter()
    for a in archs[1:]:
        evaluate_subnet(model, a, heldout, evaluator, calib, args.calib_batches)
    dt = time.perf_counter() - t0
    print(f'{args.candidates} candidates in {dt:.1f} s ({dt / args.candidates:.2f} s each); '
          f'space {s.get("img_size")} px, config {args.config}')
    print(f'{60 * args.candidates / dt:.1f} candidates/min (held-out {len(heldout.dataset)} images, recalibration '
          f'{args.calib_batches} x {args.calib_batch_size} images)')


if __name__ == '__main__':
    main()
