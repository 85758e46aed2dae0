#!/usr/bin/env python
"""Classify images with the 1-bit runtime (logic: nasbnn_mm.deploy.infer).

    python tools/infer.py work_dirs/export/D/subnet_packed.pth cat.jpg
    python tools/infer.py work_dirs/export/D/subnet.pth images/ --topk 3 --threads 2
    python tools/infer.py subnet_packed.pth img.png --backend popcount --img-size 224

Takes a packed subnet (``subnet_packed.pth``) or an exported one (``subnet.pth``; turned into the deployed
form on loading), runs its binary convs as XNOR-popcount (or the fastest exact backend per layer with
``--backend auto``) and prints the top-k classes with softmax scores. Preprocessing: see
nasbnn_mm/deploy/infer.py (the checkpoint's data preprocessor, else mean = std = 127.5 to RGB; resize +
centre crop at >= 64 px, a plain resize below, e.g. 32 x 32 for CIFAR-space models).
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from nasbnn_mm.apis import run_cli

BACKENDS = ('auto', 'popcount', 'int8', 'int8_mm', 'bf16', 'fp32', 'reference')


def parse_size(s: str):
    try:
        parts = [int(p) for p in s.lower().replace('x', ',').split(',')]
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected N or HxW, got {s!r}') from None
    if len(parts) not in (1, 2):
        raise argparse.ArgumentTypeError(f'expected N or HxW, got {s!r}')
    return parts[0] if len(parts) == 1 else tuple(parts)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('checkpoint', help='subnet_packed.pth or an exported subnet.pth')
    p.add_argument('images', help='an image file or a folder of images')
    p.add_argument('--topk', type=int, default=5, help='predictions per image (default 5)')
    p.add_argument('--backend', choices=BACKENDS, default='auto', help='binary conv backend (default auto)')
    p.add_argument('--threads', type=int, help='intra-op threads (default: torch\'s setting)')
    p.add_argument('--img-size', type=parse_size, help='network input N or HxW (default: the checkpoint\'s, else 224)')
    p.add_argument('--batch-size', type=int, default=8, help='images per forward (default 8)')
    p.add_argument(
        '--compare-float',
        action='store_true',
        help='also time the float deployed model on the first batch and check its logits equal')
    p.add_argument('--repeats', type=int, default=20, help='timed calls each for --compare-float (default 20)')
    p.add_argument('--out', help='write predictions (and the comparison) to this JSON file')
    p.add_argument('--trust-checkpoint', action='store_true', help='allow full unpickling (only for trusted files)')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from nasbnn_mm.deploy.infer import run_infer
    if args.batch_size < 1:
        raise ValueError(f'--batch-size: {args.batch_size} not allowed (allowed: a positive integer)')
    return run_infer(
        args.checkpoint,
        args.images,
        args.topk,
        args.backend,
        args.threads,
        args.img_size,
        args.batch_size,
        args.trust_checkpoint,
        compare=args.compare_float,
        repeats=args.repeats,
        out=args.out)


if __name__ == '__main__':
    run_cli(main)
