#!/usr/bin/env python
"""Rate of the pure OPs counter (target: >= 10,000 architectures per second)."""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from nasbnn_mm.space import SearchSpace, count_ops


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('--n', type=int, default=50000)
    p.add_argument('--space', default=None)
    p.add_argument('--img-size', type=int, default=224)
    args = p.parse_args()
    space = SearchSpace.build(args.space)
    archs = space.sample_many(args.n, seed=0)
    t0 = time.perf_counter()
    total = 0.0
    for a in archs:
        total += count_ops(a, args.img_size, space=space)
    dt = time.perf_counter() - t0
    print(f'counted {args.n} random architectures at {args.img_size}px in {dt:.3f} s; '
          f'mean OPs {total / args.n / 1e6:.1f}M')
    print(f'{args.n / dt:,.0f} architectures/s')


if __name__ == '__main__':
    main()
