#!/usr/bin/env python
"""How much the fast default path differs from the authors' float32 order on a *trained* supernet.

The default path computes in channels_last (oneDNN's faster layout); ``exact_parity=True`` computes
in NCHW with the authors' order of operations (bit-identical to their release, see
tests/test_parity.py). Both are correct float32 computations of the same network, but their
rounding differs by ~1e-7 relative, and a binary network turns a rounding difference next to a
threshold into a flipped activation that may spread. This script measures that on real data:
for each subnet, BN is recalibrated once (exact path, seeded batches), then the test set runs
through both paths with identical weights and statistics, and it counts

  * flipped binary activations: RSign outputs that differ, over all RSign layers and images,
    and per layer (the first layers show the seeds, the last ones the spread);
  * images whose predicted class differs, and top-1 of each path.

    python benchmarks/parity_drift.py configs/cifar10/nasbnn-supernet_cifar-small_cifar10.py \
        work_dirs/demo/supernet/published.pth --subnets smallest largest random:2
"""
from __future__ import annotations
import argparse
import json
import os
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('config', help='supernet config (its test dataloader is used)')
    p.add_argument('checkpoint', help='published supernet checkpoint (weights-only)')
    p.add_argument(
        '--subnets',
        nargs='+',
        default=['smallest', 'largest', 'random:2'],
        help="'largest', 'smallest', preset names, architecture texts, 'random:N'")
    p.add_argument('--calib-batches', type=int, default=10)
    p.add_argument('--seed', type=int, default=0, help='seed of the random subnets and the calibration batches')
    p.add_argument('--max-batches', type=int, default=None, help='limit the test batches (default: all)')
    p.add_argument('--out', help='also write the results as JSON')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import torch
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmengine.runner import Runner

    import nasbnn_mm  # noqa: F401
    from nasbnn_mm.engine.bn_recalibration import recalibrate_bn
    from nasbnn_mm.engine.subnet_loops import resolve_subnets
    from nasbnn_mm.ops import BINARY, RSign
    from nasbnn_mm.registry import MODELS
    from nasbnn_mm.space import count_ops
    from nasbnn_mm.utils.checkpoint import load_checkpoint_file

    cfg = Config.fromfile(args.config)
    DefaultScope.get_instance(f'parity-drift-{os.getpid()}', scope_name=cfg.get('default_scope', 'mmpretrain'))
    model = MODELS.build(cfg.model)
    ckpt = load_checkpoint_file(args.checkpoint)
    model.load_state_dict(ckpt.get('state_dict', ckpt), strict=True)
    model.eval()
    test_loader = Runner.build_dataloader(cfg.test_dataloader, seed=args.seed)
    calib_loader = Runner.build_dataloader(cfg.train_dataloader, seed=args.seed)
    signs = [m for m in model.backbone.modules() if isinstance(m, RSign)]
    captured = []

    def grab(module, inputs, output):
        captured.append(output.detach().contiguous())

    results = []
    for name, arch in resolve_subnets(model.space, args.subnets, args.seed):
        model.set_subnet(arch, BINARY)
        model.backbone.exact_parity = True
        torch.manual_seed(args.seed)
        recalibrate_bn(model, calib_loader, args.calib_batches)
        model.eval()
        n_layers = 2 * sum(len(s) for s in arch.stages)
        flips = [0] * n_layers
        totals = [0] * n_layers
        correct = {'exact': 0, 'fast': 0}
        differ = images = 0
        max_rel = 0.0
        handles = [m.register_forward_hook(grab) for m in signs]
        try:
            with torch.no_grad():
                for bi, batch in enumerate(test_loader):
                    if args.max_batches is not None and bi >= args.max_batches:
                        break
                    data = model.data_preprocessor(batch, False)
                    labels = torch.cat([s.gt_label for s in data['data_samples']])
                    out = {}
                    for path, exact in (('exact', True), ('fast', False)):
                        model.backbone.exact_parity = exact
                        captured.clear()
                        logits = model(data['inputs'], mode='tensor')
                        out[path] = (logits, list(captured))
                        correct[path] += int((logits.argmax(1) == labels).sum())
                    (le, se), (lf, sf) = out['exact'], out['fast']
                    assert len(se) == len(sf) == n_layers
                    for i, (a, b) in enumerate(zip(se, sf)):
                        flips[i] += int((a != b).sum())
                        totals[i] += a.numel()
                    differ += int((le.argmax(1) != lf.argmax(1)).sum())
                    images += len(labels)
                    max_rel = max(max_rel, float((le - lf).abs().max() / le.abs().max()))
        finally:
            for h in handles:
                h.remove()
            model.backbone.exact_parity = False
        num_classes = getattr(model.head, 'num_classes', 1000)
        ops = count_ops(arch, 32, num_classes, space=model.space) / 1e6
        res = dict(
            subnet=name,
            arch=arch.to_text(),
            ops_m=ops,
            images=images,
            top1_exact=100.0 * correct['exact'] / images,
            top1_fast=100.0 * correct['fast'] / images,
            predictions_differ=differ,
            flipped=sum(flips),
            activations=sum(totals),
            flipped_per_layer=flips,
            max_rel_logit_diff=max_rel)
        results.append(res)
        first = next((i for i, f in enumerate(flips) if f), None)
        print(
            f"{name:>9} ({ops:.3f}M OPs): top-1 exact {res['top1_exact']:.2f} / fast {res['top1_fast']:.2f} "
            f"(diff {res['top1_fast'] - res['top1_exact']:+.2f}), {differ} of {images} predictions differ; "
            f"flipped activations {res['flipped']:,} of {res['activations']:,} "
            f"({100.0 * res['flipped'] / max(1, res['activations']):.4f} %), first in RSign layer "
            f"{first if first is not None else '-'} of {n_layers}, per layer {flips}; "
            f"max |logit diff| / max |logit| {max_rel:.2e}",
            flush=True)
    if args.out:
        from nasbnn_mm.utils.checkpoint import atomic_write_text
        atomic_write_text(args.out, json.dumps(results, indent=1))
    return results


if __name__ == '__main__':
    main()
