#!/usr/bin/env python
"""Per-layer cost of the binary convolutions in float32 and in oneDNN's bfloat16 math mode (CPU).

For representative Table-1 layers (batch 8, channels_last, ±1 operands), the median time of the forward
convolution, the input-gradient and the weight-gradient convolutions with
``torch.backends.mkldnn.conv.fp32_precision`` 'none' (float32) and 'bf16' (what the ``'bf16'`` path of
``nasbnn_mm/ops/lowp.py`` sets), then which oneDNN implementation ran each (``ONEDNN_VERBOSE=1`` in a
child process): on a CPU without AMX the bf16 math mode is accepted (``attr-fpmath:bf16``) but the
float32 kernels (``...:avx512_core``) run it, so there is nothing to gain there.

Example::

    python benchmarks/lowp_conv_layers.py --repeat 5
"""
from __future__ import annotations
import argparse
import os
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

# (c_in, c_out, kernel, groups, stride, size): Table-1 layers of the largest / typical subnets at 224 px
LAYERS = ((96, 96, 3, 1, 1, 112), (64, 96, 1, 1, 1, 112), (192, 192, 5, 2, 1, 56), (384, 384, 3, 4, 1, 28),
          (768, 768, 3, 4, 1, 14), (768, 768, 1, 1, 1, 14), (1536, 1536, 5, 8, 1, 7), (1536, 1536, 1, 1, 1, 7))


def tensors(layer, batch):
    c_in, c_out, k, g, s, size = layer
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 2, (batch, c_in, size, size), generator=gen).float().mul_(2).sub_(1)
    w = torch.randint(0, 2, (c_out, c_in // g, k, k), generator=gen).float().mul_(2).sub_(1)
    x, w = x.contiguous(memory_format=torch.channels_last), w.contiguous(memory_format=torch.channels_last)
    y = F.conv2d(x, w, None, s, k // 2, 1, g)
    return x, w, torch.randn(y.shape, generator=gen).contiguous(memory_format=torch.channels_last)


def calls(layer, x, w, gy):
    c_in, c_out, k, g, s, size = layer
    args = ([s, s], [k // 2] * 2, [1, 1], False, [0, 0], g)
    return dict(
        forward=lambda: F.conv2d(x, w, None, s, k // 2, 1, g),
        grad_input=lambda: torch.ops.aten.convolution_backward(gy, x, w, None, *args, [True, False, False]),
        grad_weight=lambda: torch.ops.aten.convolution_backward(gy, x, w, None, *args, [False, True, False]))


def median_time(fn, repeat):
    fn()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return sorted(ts)[len(ts) // 2]


def verbose_child(batch):
    """Run one forward / backward per mode of the first two layers (ONEDNN_VERBOSE is set by the parent)."""
    for layer in LAYERS[:2]:
        x, w, gy = tensors(layer, batch)
        for mode in ('none', 'bf16'):
            torch.backends.mkldnn.conv.fp32_precision = mode
            for fn in calls(layer, x, w, gy).values():
                fn()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--repeat', type=int, default=5)
    p.add_argument('--verbose-child', action='store_true', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.verbose_child:
        return verbose_child(args.batch)
    mk = torch.backends.mkldnn.conv
    old = mk.fp32_precision
    print(f'batch {args.batch}, channels_last, median of {args.repeat}; ms float32 / ms bf16 math mode (speed-up)')
    try:
        for layer in LAYERS:
            x, w, gy = tensors(layer, args.batch)
            fns = calls(layer, x, w, gy)
            row = []
            for name, fn in fns.items():
                t = {}
                for mode in ('none', 'bf16'):
                    mk.fp32_precision = mode
                    t[mode] = median_time(fn, args.repeat)
                row.append(f"{name} {t['none'] * 1e3:.1f}/{t['bf16'] * 1e3:.1f} (x{t['none'] / t['bf16']:.2f})")
            c_in, c_out, k, g, s, size = layer
            print(f'  {c_in}->{c_out} k{k} g{g} s{s} {size}px: ' + ', '.join(row), flush=True)
    finally:
        mk.fp32_precision = old
    env = dict(os.environ, ONEDNN_VERBOSE='1')
    out = subprocess.run([sys.executable, os.path.abspath(__file__), '--verbose-child', '--batch', '2'],
                         env=env,
                         capture_output=True,
                         text=True).stdout
    impls = set()
    for line in out.splitlines():
        f = line.split(',')
        if len(f) > 9 and f[2] == 'primitive' and f[3] == 'exec' and f[5] == 'convolution':
            impls.add((f[7], f[6], 'attr-fpmath:bf16' in line))
    print('oneDNN convolution implementations (ONEDNN_VERBOSE):')
    for kind, impl, fpmath in sorted(impls):
        print(f"  {kind:<18} {impl:<45} {'bf16 math mode requested' if fpmath else 'float32'}")


if __name__ == '__main__':
    main()
