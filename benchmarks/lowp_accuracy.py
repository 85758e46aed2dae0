#!/usr/bin/env python
"""Accuracy of the binary convolutions' bfloat16 paths (``nasbnn_mm.ops.lowp``) on a supernet.

From the same weights and batch, every student subnet of a sandwich step (smallest + random, binary
mode, soft CE to the float32 teacher's probabilities) runs forward and backward with

* ``fp32``                  the float32 path (reference);
* ``bf16 / grad fp32``      exact forward, float32 backward;
* ``bf16 / grad bf16x2``    exact forward, incoming gradient in 2 bfloat16 parts;
* ``bf16 / grad bf16x3``    ... in 3 parts,

with every bfloat16 operand rounded in Python (``lowp.EMULATE_BF16_ROUNDING``), so that this
machine computes what a bfloat16 machine computes even where the hardware ignores the bfloat16
mode. Printed per subnet and path: the loss's relative difference and, over all parameter
tensors with a gradient, the largest relative norm-wise difference ``||g - g_ref|| / ||g_ref||``
against two references: the float32 path, and the same path's exact forward with a float32
backward (which isolates the backward's rounding from the forward's; the forwards differ by the
float32 path's rounding, which can flip a sign activation downstream).

Example (full Table-1 space, 224 px, batch 8 -- the training benchmark's setting)::

    python benchmarks/lowp_accuracy.py --batch 8 --img-size 224
"""
from __future__ import annotations
import argparse
import copy
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PATHS = (('fp32', 'fp32'), ('bf16', 'fp32'), ('bf16', 'bf16x2'), ('bf16', 'bf16x3'))


def build(space, seed: int, num_classes: int):
    import nasbnn_mm  # noqa: F401
    from nasbnn_mm.registry import MODELS
    torch.manual_seed(seed)
    return MODELS.build(
        dict(
            type='nasbnn.SandwichClassifier',
            backbone=dict(type='nasbnn.NASBNNSupernet', search_space=space.to_dict(), binary_conv_precision='fp32'),
            neck=dict(type='mmpretrain.GlobalAveragePooling'),
            head=dict(
                type='nasbnn.SlicedLinearClsHead', num_classes=num_classes, in_channels=max(space.stages[-1].widths)),
            num_random=2,
            sample_seed=0)).train()


def grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    d = (a.double() - b.double()).norm().item()
    n = b.double().norm().item()
    return d / n if n > 0 else (0.0 if d == 0 else float('inf'))


def worst(g: dict, ref: dict):
    """(largest per-tensor relative difference, its tensor name) over tensors with a nonzero reference."""
    out = (0.0, '-')
    for k, r in ref.items():
        if r.abs().max() > 0:
            e = rel(g[k], r)
            if e > out[0]:
                out = (e, k)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--img-size', type=int, default=224)
    p.add_argument('--space', default=None, help='search-space config (default: Table 1)')
    p.add_argument('--iter', type=int, default=0, help='sandwich iteration whose random subnets are used')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--num-classes', type=int, default=1000)
    args = p.parse_args(argv)

    from nasbnn_mm.models.classifier import sandwich_students
    from nasbnn_mm.ops import BINARY, TEACHER, lowp
    from nasbnn_mm.space import SearchSpace
    lowp.EMULATE_BF16_ROUNDING = True
    space = SearchSpace.build(args.space)
    base = build(space, args.seed, args.num_classes)
    g = torch.Generator().manual_seed(args.seed)
    x = torch.rand(args.batch, 3, args.img_size, args.img_size, generator=g) * 2 - 1
    with torch.no_grad():
        soft = F.softmax(base(x, mode='tensor', arch=space.largest(), weight_mode=TEACHER), dim=1)
    print(f'space {args.space or "Table 1"}, {args.img_size} px, batch {args.batch}, sandwich iteration {args.iter}; '
          'bfloat16 operands rounded in Python (EMULATE_BF16_ROUNDING)')
    overall = {}
    for name, arch in sandwich_students(space, args.iter, 0, 2):
        print(f'\n{name}: {arch.to_text()}')
        res = {}
        for fwd, bwd in PATHS:
            model = copy.deepcopy(base)
            lowp.set_binary_conv_precision(model, fwd, bwd)
            logits = model(x, mode='tensor', arch=arch, weight_mode=BINARY)
            loss = -(soft * F.log_softmax(logits, dim=1)).sum(1).mean()
            loss.backward()
            res[(fwd, bwd)] = (loss.item(), grads(model))
            del model
        ref_loss, ref = res[('fp32', 'fp32')]
        same_fwd = res[('bf16', 'fp32')][1]
        for key in PATHS[1:]:
            loss, gr = res[key]
            e_ref, k_ref = worst(gr, ref)
            e_fwd, k_fwd = worst(gr, same_fwd)
            label = f'{key[0]} / grad {key[1]}'
            print(f'  {label:<20} loss rel diff {abs(loss - ref_loss) / abs(ref_loss):.2e}; gradients, largest '
                  f'per-tensor rel diff vs fp32 path {e_ref:.2e} ({k_ref}), vs the same forward with fp32 grad '
                  f'{e_fwd:.2e} ({k_fwd})')
            o = overall.setdefault(label, [0.0, 0.0])
            o[0], o[1] = max(o[0], e_ref), max(o[1], e_fwd)
    print('\nlargest over the subnets: ' + '; '.join(f'{k}: vs fp32 {a:.2e}, vs same forward {b:.2e}'
                                                     for k, (a, b) in overall.items()))


if __name__ == '__main__':
    main()
