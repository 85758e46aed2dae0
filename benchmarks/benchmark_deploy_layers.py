#!/usr/bin/env python
"""Per-layer speed of the exact binary conv backends (nasbnn_mm/deploy) against a float32 conv.

For every distinct binary conv shape of the given presets (default NAS-BNN-A and -F) at 224 px,
batch 1, and each thread count: the float32 baseline ``F.conv2d(s, w) * alpha`` on ±1 float data
(oneDNN; the faster of NCHW and channels_last; s = sign(x + b) precomputed, NOT timed) against each
exact backend of :class:`nasbnn_mm.deploy.BinaryConvKernel` timed from the float32 input x
(channels_last) INCLUDING the fused RSign ``sign(x + b)`` and the ``* alpha`` epilogue, output
channels_last. All contenders of a layer are timed interleaved (round robin, rotated each round)
in one process; reported: medians.

Counted: a binary MAC = one weight bit XNORed with one activation bit and popcounted; per layer
``MACs = cout * (cin / g) * k * k * Ho * Wo``; GOPS = 2 * MACs / time (XNOR + popcount-add = 2
ops, the usual BOPs convention). The micro-benchmark measures the popcount kernel's inner loop
(4 pixels x 32 channels register tile) on L1-resident data: the peak binary MAC rate of this CPU.

Usage: python benchmarks/benchmark_deploy_layers.py [--threads 1 2] [--repeats 15] [--json out.json]
"""
import argparse
import json
import os
import statistics
import sys
import time
import types

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# import nasbnn_mm.space / nasbnn_mm.deploy without nasbnn_mm/__init__ (which imports mmdet / mmpretrain)
if 'nasbnn_mm' not in sys.modules:
    _pkg = types.ModuleType('nasbnn_mm')
    _pkg.__path__ = [os.path.join(_ROOT, 'nasbnn_mm')]
    sys.modules['nasbnn_mm'] = _pkg

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from nasbnn_mm.deploy import bitconv as bc  # noqa: E402
from nasbnn_mm.space import get_preset, profile_arch  # noqa: E402


def layer_shapes(presets, img_size):
    """Distinct binary conv shapes: (cin, cout, k, groups, stride, h_in, w_in) -> {preset: count}."""
    shapes = {}
    for name in presets:
        rep = profile_arch(get_preset(name), img_size)
        for layer in rep.layers:
            if layer.kind != 'binary':
                continue
            ho, wo = layer.out_hw
            key = (layer.in_channels, layer.out_channels, layer.kernel, layer.groups, layer.stride, ho * layer.stride,
                   wo * layer.stride)
            shapes.setdefault(key, {})
            shapes[key][name] = shapes[key].get(name, 0) + 1
    return dict(sorted(shapes.items(), key=lambda kv: (kv[0][5], kv[0][0], kv[0][2], kv[0][1])))


def cpu_snapshot():
    """{pid: (cpu seconds so far, command)} of every other process (from /proc; empty where unavailable)."""
    snap, me, tick = {}, os.getpid(), os.sysconf('SC_CLK_TCK') if hasattr(os, 'sysconf') else 100
    for pid in os.listdir('/proc') if os.path.isdir('/proc') else []:
        if not pid.isdigit() or int(pid) == me:
            continue
        try:
            with open(f'/proc/{pid}/stat') as f:
                fields = f.read().rsplit(')', 1)[1].split()
            with open(f'/proc/{pid}/cmdline', 'rb') as f:
                cmd = f.read().replace(b'\0', b' ').decode(errors='replace').strip()
            snap[int(pid)] = ((int(fields[11]) + int(fields[12])) / tick, cmd[:90])
        except (OSError, IndexError, ValueError):
            continue
    return snap


def other_load(before, seconds):
    """Other processes that used > 5 % of a CPU between the snapshot ``before`` and now: ['cmd (x% CPU)']."""
    after = cpu_snapshot()
    out = []
    for pid, (t, cmd) in after.items():
        used = t - before.get(pid, (0.0, ''))[0]
        if used > 0.05 * seconds:
            out.append(f'{cmd or pid} ({100 * used / seconds:.0f}% CPU)')
    return out


def time_round_robin(fns, repeats, clock=time.perf_counter):
    """{name: median seconds} of fns {name: callable}, interleaved (the order rotates every round)."""
    names = list(fns)
    for n in names:  # warm-up: weight preparation, oneDNN primitive creation
        fns[n]()
        fns[n]()
    times = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            t0 = clock()
            fns[n]()
            times[n].append(clock() - t0)
    return {n: statistics.median(v) for n, v in times.items()}


def bench_layer(shape, threads, repeats, backends, check=True, seed=0, clock=time.perf_counter):
    cin, cout, k, g, s, h, w = shape
    gen = torch.Generator().manual_seed(seed)
    neg = torch.rand(cout, cin // g, k, k, generator=gen) < 0.5
    sign = 1 - 2 * neg.float()
    alpha = torch.rand(cout, generator=gen) + 0.5
    x = torch.randn(1, cin, h, w, generator=gen).contiguous(memory_format=torch.channels_last)
    b = torch.randn(cin, generator=gen) * 0.1
    s_cl = torch.sign(x + b.view(1, -1, 1, 1))
    s_nchw = s_cl.contiguous()
    w_cl = sign.contiguous(memory_format=torch.channels_last)
    av = alpha.view(1, -1, 1, 1)
    fns = {
        'f32 nchw': lambda: F.conv2d(s_nchw, sign, None, s, k // 2, 1, g) * av,
        'f32 nhwc': lambda: F.conv2d(s_cl, w_cl, None, s, k // 2, 1, g) * av,
    }
    kernels = {}
    for be in backends:
        if be in bc.available_backends(k, g):
            kernels[be] = bc.BinaryConvKernel(sign, alpha, g, s, be)
            fns[be] = (lambda kk: lambda: kk(x, b))(kernels[be])
    if check:
        ref = bc.reference_binary_conv(x, sign, alpha, g, s, b)
        for be, kern in kernels.items():  # every contender exact, here too
            assert torch.equal(kern(x, b), ref), be
    torch.set_num_threads(threads)
    with torch.no_grad():
        med = time_round_robin(fns, repeats, clock)
    return med


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--presets', nargs='+', default=['A', 'F'])
    p.add_argument('--img-size', type=int, default=224)
    p.add_argument('--threads', type=int, nargs='+', default=[1, 2])
    p.add_argument('--repeats', type=int, default=15)
    p.add_argument('--backends', nargs='+', default=list(bc.TUNED_BACKENDS))
    p.add_argument(
        '--clock',
        choices=['wall', 'thread'],
        default='wall',
        help="'thread': the calling thread's CPU time (robust to other load on the machine, "
        'valid for 1 thread only)')
    p.add_argument('--json', default=None, help='write all numbers here')
    args = p.parse_args()

    if args.clock == 'thread' and args.threads != [1]:
        p.error("--clock thread measures one thread's CPU time: use it with --threads 1")
    clock = time.perf_counter if args.clock == 'wall' else time.thread_time
    shapes = layer_shapes(args.presets, args.img_size)
    isa = bc.dispatch_path() if bc.bitconv_ops() is not None else None
    print(f'CPU: {bc.cpu_model()} ({os.cpu_count()} logical CPUs); torch {torch.__version__}; popcount path: {isa}')
    print(f'load average at start: {os.getloadavg()}')
    t_start, snap = time.perf_counter(), cpu_snapshot()
    print(f'{len(shapes)} distinct binary conv shapes of {"+".join(args.presets)} at {args.img_size}px, batch 1; '
          f'{args.repeats} interleaved timed calls per contender, medians of {args.clock}-clock times')
    result = {
        'cpu': bc.cpu_model(),
        'torch': torch.__version__,
        'isa': isa,
        'clock': args.clock,
        'load_start': os.getloadavg(),
        'peak': {},
        'layers': []
    }

    if isa is not None:
        for t in args.threads:
            torch.set_num_threads(t)
            peaks = {i: bc.popcount_peak(i, seconds=0.3) for i in bc.supported_isas()}
            result['peak'][t] = peaks
            print(f'popcount micro-benchmark, {t} thread(s): ' +
                  ', '.join(f'{i} {v / 1e9:,.0f} G binary MAC/s ({2 * v / 1e9:,.0f} GOPS)' for i, v in peaks.items()))

    for t in args.threads:
        print(f'\n== {t} thread(s) ==')
        hdr = (f'{"layer (in>out kxk g s @in)":34s} {"used by":9s} {"f32 base":>9s} ' +
               ' '.join(f'{b:>9s}'
                        for b in args.backends) + f' {"best":>9s} {"speedup":>7s} {"pop GOPS":>8s} {"%peak":>5s}')
        print(hdr)
        print('-' * len(hdr))
        speedups, pop_speedups = [], []
        for shape, users in shapes.items():
            cin, cout, k, g, s, h, w = shape
            med = bench_layer(shape, t, args.repeats, args.backends, check=t == args.threads[0], clock=clock)
            base_name = min(('f32 nchw', 'f32 nhwc'), key=med.get)
            base = med[base_name]
            ours = {b: med[b] for b in args.backends if b in med}
            best = min(ours, key=ours.get)
            ho, wo = -(-h // s), -(-w // s)
            macs = cout * (cin // g) * k * k * ho * wo
            gops = 2 * macs / med['popcount'] / 1e9 if 'popcount' in med else float('nan')
            peak = result['peak'].get(t, {}).get(isa)
            pct = 100 * macs / med['popcount'] / peak if peak and 'popcount' in med else float('nan')
            sp = base / ours[best]
            speedups.append(sp)
            if 'popcount' in med:
                pop_speedups.append(base / med['popcount'])
            name = f'{cin}>{cout} {k}x{k} g{g} s{s} @{h}'
            used = ','.join(f'{p}x{c}' for p, c in users.items())
            cells = ' '.join(f'{ours[b] * 1e3:9.3f}' if b in ours else f'{"-":>9s}' for b in args.backends)
            print(f'{name:34s} {used:9s} {base * 1e3:9.3f} {cells} {best:>9s} {sp:6.1f}x {gops:8.0f} {pct:5.0f}')
            result['layers'].append({
                'threads': t,
                'shape': shape,
                'used_by': users,
                'macs': macs,
                'median_ms': {
                    n: v * 1e3
                    for n, v in med.items()
                },
                'baseline': base_name,
                'best': best,
                'speedup': sp,
                'popcount_gops': gops
            })
        print(f'median per-layer speed-up over float32, {t} thread(s): best exact backend '
              f'{statistics.median(speedups):.1f}x (min {min(speedups):.1f}x, max {max(speedups):.1f}x)' +
              (f'; popcount alone {statistics.median(pop_speedups):.1f}x' if pop_speedups else ''))
        for preset in args.presets:  # whole-network binary conv time (every layer, with its multiplicity)
            rows = [r for r in result['layers'] if r['threads'] == t and preset in r['used_by']]
            tb = sum(r['median_ms'][r['baseline']] * r['used_by'][preset] for r in rows)
            to = sum(r['median_ms'][r['best']] * r['used_by'][preset] for r in rows)
            print(f'  NAS-BNN-{preset}: all binary convs {tb:.2f} ms float32 -> {to:.2f} ms best exact '
                  f'({tb / to:.1f}x)')
        result[f'median_speedup_{t}'] = statistics.median(speedups)
    result['load_end'] = os.getloadavg()
    result['other_processes'] = other_load(snap, time.perf_counter() - t_start)
    print(f'\nload average at end: {result["load_end"]}; other processes using CPU during the run: '
          f'{result["other_processes"] or "none"}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=1)


if __name__ == '__main__':
    main()
