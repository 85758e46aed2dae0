#!/usr/bin/env python
"""Whole-network speed of the 1-bit runtime (nasbnn_mm.deploy.BinaryRuntime) against the float deployed model.

For each preset (default NAS-BNN-A..F) at 224 px, each batch size (default 1 and 8) and each thread count
(default 1 and 2): the float deployed classifier (ImageClassifier(NASBNNDeployedSubnet), torch float32,
channels_last: the packed file as ``load_packed`` rebuilds it, binary convs as float convolutions on ±1
data) and the runtime built from it (binary convs on 1-bit kernels, backend 'auto' unless --backend) on
the same random normalized images. Both are warmed up (the runtime's 'auto' times its backends then),
then called alternately, ``--repeats`` times each (the order swaps every repetition), wall clock; reported:
medians, their ratio, whether the logits are bitwise equal, the weights held in memory against the packed
payload, and an Amdahl table of the runtime's time (``BinaryRuntime.time_parts``: an unfused run split into
stem, RSign packing, binary convs, glue = folded BN + shortcuts + RPReLU, head).

The machine may be shared: the script prints the load average and every other process that used more than
5 % of a CPU during the run (from /proc).

The weights are random (``nasbnn_mm.deploy.testing.random_deployed_classifier``): the speed of both models
does not depend on the values.

Usage::

    python benchmarks/benchmark_deploy.py                          # A..F, batch 1 and 8, 1 and 2 threads
    python benchmarks/benchmark_deploy.py --quick                  # NAS-BNN-A, batch 1, 1 thread only
    python benchmarks/benchmark_deploy.py --presets A D --batch 1 --threads 1 --json out.json

The last line (for scripts): ``NAS-BNN-A batch 1, 1 thread: runtime <ms> ms, float <ms> ms, <ratio>x,
logits equal``.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from benchmark_deploy_layers import cpu_snapshot, other_load  # noqa: E402

import nasbnn_mm  # noqa: E402,F401
from nasbnn_mm.deploy import BinaryRuntime, bitconv_ops, bn_mode, cpu_model, dispatch_path  # noqa: E402
from nasbnn_mm.deploy.testing import random_deployed_classifier  # noqa: E402
from nasbnn_mm.models.packed import packed_layout  # noqa: E402
from nasbnn_mm.space import get_preset, profile_arch  # noqa: E402
from nasbnn_mm.utils.checkpoint import atomic_write_text  # noqa: E402

PARTS = ('stem', 'rsign', 'binary convs', 'glue', 'head')


def packed_payload(arch, num_classes: int) -> int:
    """Bytes of the packed file's tensors: 1 bit per binary weight (each conv padded to a byte), int8 stem,
    float32 vectors and head."""
    return sum(-(-s.numel // 8) if s.kind == 'bits' else s.numel * (1 if s.kind == 'int8' else 4)
               for s in packed_layout(arch, num_classes))


def float_model_bytes(model) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def measure(model, rt, x, repeats: int):
    """Alternate calls of the float model and the runtime (the order swaps every repetition). Returns
    {'float': ([wall s], [cpu s]), 'runtime': (...)}: wall clock, and this process's CPU time (all its
    threads; robust to other load, = the latency at 1 thread on an idle machine)."""
    times = {'float': ([], []), 'runtime': ([], [])}
    calls = {'float': lambda: model(x, mode='tensor'), 'runtime': lambda: rt(x)}
    with torch.no_grad():
        for _ in range(2):  # warm-up: oneDNN primitives, the runtime's autotune for this shape
            calls['float']()
            calls['runtime']()
        for r in range(repeats):
            for which in (('float', 'runtime') if r % 2 == 0 else ('runtime', 'float')):
                c0, t0 = time.process_time(), time.perf_counter()
                calls[which]()
                t1, c1 = time.perf_counter(), time.process_time()
                times[which][0].append(t1 - t0)
                times[which][1].append(c1 - c0)
    return times


def fmt_ms(s: float) -> str:
    return f'{s * 1e3:.2f}'


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--presets', nargs='+', default=list('ABCDEF'))
    p.add_argument('--batch', type=int, nargs='+', default=[1, 8])
    p.add_argument('--threads', type=int, nargs='+', default=[1, 2])
    p.add_argument('--img-size', type=int, default=224)
    p.add_argument('--repeats', type=int, default=20, help='timed calls of each model (>= 20 for the README)')
    p.add_argument('--backend', default='auto', help="the runtime's backend (default 'auto')")
    p.add_argument('--num-classes', type=int, default=1000)
    p.add_argument('--quick', action='store_true', help='NAS-BNN-A, batch 1, 1 thread only (the last line)')
    p.add_argument('--no-amdahl', action='store_true', help='skip the time breakdown')
    p.add_argument('--json', help='write every number here')
    args = p.parse_args(argv)
    if args.quick:
        args.presets, args.batch, args.threads = ['A'], [1], [1]
    if 'A' not in args.presets or 1 not in args.batch or 1 not in args.threads:
        p.error('the last line reports NAS-BNN-A at batch 1 and 1 thread: include A, --batch 1 and --threads 1')

    if 'NASBNN_BITCONV_CACHE' not in os.environ:  # 'auto' tunes afresh in this run, under its conditions
        os.environ['NASBNN_BITCONV_CACHE'] = os.path.join(tempfile.mkdtemp(prefix='nasbnn_bench_'), 'autotune.json')
    isa = dispatch_path() if bitconv_ops() is not None else None
    print(f'CPU: {cpu_model()} ({os.cpu_count()} logical CPUs); torch {torch.__version__}; popcount path: {isa}; '
          f"PyTorch BN rounds as: {bn_mode() or 'ATen glue'}")
    print(f'load average at start: {tuple(round(v, 2) for v in os.getloadavg())}')
    print(f'{args.img_size} px, {args.repeats} alternating timed calls per model after 2 warm-up calls, wall-clock '
          f"medians; runtime backend '{args.backend}' (autotune cache {os.environ['NASBNN_BITCONV_CACHE']}); "
          'random weights')
    t_start, snap = time.perf_counter(), cpu_snapshot()
    result = dict(
        cpu=cpu_model(),
        torch=torch.__version__,
        isa=isa,
        img_size=args.img_size,
        repeats=args.repeats,
        backend=args.backend,
        load_start=os.getloadavg(),
        runs=[],
        memory={},
        amdahl={})
    old_threads = torch.get_num_threads()
    headline = None
    rows = []
    for preset in args.presets:
        arch = get_preset(preset)
        model = random_deployed_classifier(arch, num_classes=args.num_classes, seed=0)
        rt = BinaryRuntime.from_deployed(model, backend=args.backend)
        rep = profile_arch(arch, args.img_size, args.num_classes)
        for threads in args.threads:
            torch.set_num_threads(threads)
            for batch in args.batch:
                x = torch.randn(batch, 3, args.img_size, args.img_size, generator=torch.Generator().manual_seed(1))
                times = measure(model, rt, x, args.repeats)
                (tf, cf), (tr, cr) = times['float'], times['runtime']
                with torch.no_grad():
                    ref = model(x, mode='tensor')
                out = rt(x)
                equal = bool(torch.equal(out, ref))
                rel = float((out - ref).abs().max() / ref.abs().max())
                mf, mr = statistics.median(tf), statistics.median(tr)
                cpu_f, cpu_r = statistics.median(cf), statistics.median(cr)
                backends = sorted(set(rt.backends().values()))
                run = dict(
                    preset=preset,
                    threads=threads,
                    batch=batch,
                    float_ms=mf * 1e3,
                    runtime_ms=mr * 1e3,
                    ratio=mf / mr,
                    float_cpu_ms=cpu_f * 1e3,
                    runtime_cpu_ms=cpu_r * 1e3,
                    cpu_ratio=cpu_f / cpu_r,
                    float_times_ms=[t * 1e3 for t in tf],
                    runtime_times_ms=[t * 1e3 for t in tr],
                    logits_equal=equal,
                    max_rel_diff=rel,
                    backends=backends,
                    ops_m=rep.ops / 1e6)
                result['runs'].append(run)
                rows.append(run)
                print(
                    f'NAS-BNN-{preset} batch {batch}, {threads} thread(s): runtime {fmt_ms(mr)} ms, float '
                    f'{fmt_ms(mf)} ms, {mf / mr:.2f}x, logits {"equal" if equal else f"DIFFER (rel {rel:.2g})"} '
                    f'[CPU time {fmt_ms(cpu_r)} / {fmt_ms(cpu_f)} ms, {cpu_f / cpu_r:.2f}x; backends: '
                    f'{", ".join(backends)}]',
                    flush=True)
                if preset == 'A' and batch == 1 and threads == 1:
                    headline = run
                if not args.no_amdahl and batch == 1:
                    clock = time.process_time if threads == 1 else time.perf_counter
                    parts = rt.time_parts(x, repeats=max(5, args.repeats // 2), clock=clock)
                    result['amdahl'][f'{preset} b{batch} t{threads}'] = dict(
                        parts, float_ms=(cpu_f if threads == 1 else mf) * 1e3)
        result['memory'][preset] = dict(
            runtime_bytes=rt.nbytes,
            packed_payload_bytes=packed_payload(arch, args.num_classes),
            counted_bytes=rep.size_bytes,
            float_deployed_bytes=float_model_bytes(model))
        del model, rt
    torch.set_num_threads(old_threads)

    # ------------------------------------------------------------------ tables
    print('\n== latency (ms, medians) and speed-up of the runtime over the float deployed model ==')
    print(f'{"preset":7s} {"OPs (M)":>8s} {"thr":>3s} {"batch":>5s} {"float":>9s} {"runtime":>9s} {"speed-up":>8s} '
          f'{"logits":>7s} | {"CPU-time: float":>15s} {"runtime":>9s} {"ratio":>7s}')
    for r in rows:
        print(f'{r["preset"]:7s} {r["ops_m"]:8.1f} {r["threads"]:3d} {r["batch"]:5d} {r["float_ms"]:9.2f} '
              f'{r["runtime_ms"]:9.2f} {r["ratio"]:7.2f}x {"equal" if r["logits_equal"] else "DIFFER":>7s} | '
              f'{r["float_cpu_ms"]:15.2f} {r["runtime_cpu_ms"]:9.2f} {r["cpu_ratio"]:6.2f}x')
    print('(wall-clock medians; CPU time: this process, all threads, medians)')
    print('\n== weights in memory (MiB) ==')
    print(f'{"preset":7s} {"runtime":>9s} {"packed payload":>15s} {"counted":>8s} {"float deployed":>15s}')
    for preset, m in result['memory'].items():
        print(f'{preset:7s} {m["runtime_bytes"] / 2**20:9.2f} {m["packed_payload_bytes"] / 2**20:15.2f} '
              f'{m["counted_bytes"] / 2**20:8.2f} {m["float_deployed_bytes"] / 2**20:15.2f}')
    if result['amdahl']:
        print("\n== where the runtime's time goes (batch 1; ms of an unfused run, % of its total; 1 thread: CPU time, "
              '2 threads: wall clock) ==')
        print(f'{"run":10s} ' + ' '.join(f'{p:>15s}' for p in PARTS) +
              f' {"unfused":>8s} {"fused":>8s} {"float":>8s} {"bound":>6s}')
        for key, a in result['amdahl'].items():
            cells = ' '.join(f'{a[p]:7.2f} ({100 * a[p] / a["total"]:3.0f}%)' for p in PARTS)
            # Amdahl: the speed-up over float if the binary convs (and their packing) took no time
            bound = a['float_ms'] / max(1e-9, a['fused total'] - a['binary convs'] - a['rsign'])
            print(f'{key:10s} {cells} {a["total"]:8.2f} {a["fused total"]:8.2f} {a["float_ms"]:8.2f} {bound:5.1f}x')
        print('(rsign = sign(x + b) and bit packing; glue = folded BN + shortcuts + RPReLU, fused into the conv '
              'calls in a normal (fused) run; bound = float / (fused - binary convs - rsign): the speed-up if the '
              'binary convs were free)')
    result['load_end'] = os.getloadavg()
    result['other_processes'] = other_load(snap, time.perf_counter() - t_start)
    print(f'\nload average at end: {tuple(round(v, 2) for v in result["load_end"])}; other processes using CPU '
          f'during the run: {"; ".join(result["other_processes"]) or "none"}')
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=1))
    h = headline
    print(f'NAS-BNN-A batch 1, 1 thread: runtime {h["runtime_ms"]:.2f} ms, float {h["float_ms"]:.2f} ms, '
          f'{h["ratio"]:.2f}x, logits {"equal" if h["logits_equal"] else "DIFFER"}')


if __name__ == '__main__':
    main()
