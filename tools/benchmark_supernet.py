#!/usr/bin/env python
"""Time one full sandwich training step of the NAS-BNN supernet on synthetic data.

One step = teacher pass (largest subnet, full-precision normalized weights, binary
activations, label-smoothed CE) + smallest subnet + 2 random subnets (binary, soft CE to the
teacher's probabilities), each forward + backward, then one Adam step and zero_grad -- what
``SandwichClassifier.sandwich_step`` does in training.

Step ``i`` always trains the same subnets (``SandwichClassifier.sandwich_archs(i)`` with
``sample_seed=0``), so runs are reproducible and comparable.

With ``--reference /path/to/NAS-BNN`` (a checkout of the authors' code, loaded from that path at
run time; it is never part of this repository) the authors' supernet runs the equivalent step
in the same invocation: same batch, image size, thread count, same images and labels, and the
same subnets converted to their (22, 6) ``cand`` encoding. Their loss classes are replaced by
the equivalent plain formulas (label-smoothed CE for the teacher, soft-target CE for students).

Each implementation runs in its own worker subprocess so that its peak memory is its own. The
two workers take turns step by step (the one going first alternating), so that load changes on
a shared machine affect both alike; ``--no-interleave`` runs them one after the other. The
process CPU time of every step is printed next to its wall time (on a loaded machine OpenMP
threads waiting for a descheduled sibling inflate both).
Memory reported: peak RSS of the worker during the timed steps (Linux VmHWM, reset after the
warm-up; falls back to the whole-process ru_maxrss where the reset is not possible), and the
peak increase over the RSS right before the timed steps.

``--precision`` / ``--grad`` set our backbone's ``binary_conv_precision`` / ``binary_conv_grad``
(the binary convolutions' path, ``nasbnn_mm/ops/lowp.py``; default: the backbone's ``'auto'``);
``--variant`` runs other settings side by side, e.g. ``--variant bf16:binary_conv_precision=bf16``.
``--profile`` profiles one more step of each worker after the timed ones
(``torch.profiler`` key averages by self CPU time, and the share of the convolutions).

The last line printed is ``<N> img/s, peak memory <M> MiB`` for our implementation
(img/s = batch / median step time over the timed steps).

Examples::

    python tools/benchmark_supernet.py
    python tools/benchmark_supernet.py --batch 8 --img-size 224 --steps 3 --warmup 1 \
        --reference /tmp/NAS-BNN
    python tools/benchmark_supernet.py --precision fp32 --variant bf16:binary_conv_precision=bf16 \
        --variant bf16x2:binary_conv_precision=bf16,binary_conv_grad=bf16x2 --profile
"""
from __future__ import annotations
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LR, WEIGHT_DECAY, NUM_CLASSES, LABEL_SMOOTH = 2.5e-3, 5e-6, 1000, 0.1


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--img-size', type=int, default=224)
    p.add_argument('--space', default=None, help='search-space config (default: Table 1)')
    p.add_argument('--steps', type=int, default=3, help='timed steps')
    p.add_argument('--warmup', type=int, default=1, help='untimed steps before the timed ones')
    p.add_argument('--threads', type=int, default=None, help='torch threads (default: torch default)')
    p.add_argument(
        '--reference',
        default=None,
        metavar='PATH',
        help="the authors' NAS-BNN repository (its models/ package is imported from there)")
    p.add_argument('--seed', type=int, default=0, help='seed of the synthetic data and of the weights')
    p.add_argument(
        '--no-interleave',
        dest='interleave',
        action='store_false',
        help='with --reference: run the implementations one after the other instead of '
        'taking turns step by step (both processes then never hold memory at once)')
    p.add_argument(
        '--variant',
        action='append',
        default=[],
        metavar='NAME:KEY=VALUE[,KEY=VALUE]',
        help='also time our supernet with these backbone settings, side by side with the default one '
        "(e.g. --variant exact:exact_parity=True); repeatable")
    p.add_argument(
        '--precision',
        default=None,
        choices=('auto', 'bf16', 'fp32'),
        help="our backbone's binary_conv_precision (default: the backbone's default, 'auto')")
    p.add_argument(
        '--grad',
        default=None,
        choices=('auto', 'fp32', 'bf16x2', 'bf16x3'),
        help="our backbone's binary_conv_grad (default: the backbone's default, 'auto')")
    p.add_argument(
        '--profile',
        nargs='?',
        const=25,
        type=int,
        default=0,
        metavar='ROWS',
        help='profile one extra step of each worker after the timed steps and print the '
        'top ROWS ops by self CPU time (default 25)')
    p.add_argument('--worker', default=None, help=argparse.SUPPRESS)  # internal: path of a job file
    return p.parse_args(argv)


def parse_variant(text: str):
    """'NAME:key=value,key=value' -> (name, {key: python literal})."""
    import ast
    name, sep, rest = text.partition(':')
    if not sep or not name.strip() or not rest.strip():
        raise SystemExit(f'--variant: {text!r} not allowed (allowed: NAME:KEY=VALUE[,KEY=VALUE])')
    opts = {}
    for item in rest.split(','):
        key, eq, value = item.partition('=')
        if not eq or not key.strip():
            raise SystemExit(f'--variant: {item!r} in {text!r} is not KEY=VALUE')
        try:
            opts[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            opts[key.strip()] = value.strip()
    return name.strip(), opts


# ----------------------------------------------------------------------------- memory helpers
def _rss_mib() -> float:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20


def _hwm_mib():
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_hwm() -> bool:
    """Reset the peak-RSS counter (VmHWM) to the current RSS; False where not possible."""
    try:
        before = _hwm_mib()
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        after = _hwm_mib()
        return after is not None and (before is None or after <= before)
    except OSError:
        return False


def _maxrss_mib() -> float:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# ----------------------------------------------------------------------------- subnet plan
def arch_to_cand(arch, space):
    """Our Architecture -> the authors' (rows, 6) cand rows
    ``[stage, block, channels, ks, groups1, groups2]``; stage 0 is the stem, dropped rows are -1."""
    rows = [[0, 0, arch.stem.width, arch.stem.kernel, 1, 1]]
    for si, (stage, s) in enumerate(zip(arch.stages, space.stages)):
        for j in range(s.max_depth):
            if j < len(stage):
                layer = stage[j]
                rows.append([si + 1, j, layer.width, layer.kernel, layer.groups, 1])
            else:  # dropped: values are ignored by their forward; keep them ND-consistent
                rows.append([-1, -1] + rows[-1][2:])
    return rows


def space_to_their_cfg(space):
    """Our SearchSpace -> the authors' cfg list (channels, num_blocks, ks, groups1, groups2, stride)."""
    cfg = [[list(space.stem.widths), [1], [space.stem.kernel], [1], [1], space.stem.stride]]
    for s in space.stages:
        cfg.append([list(s.widths), list(s.depths), list(s.kernels), list(s.groups), [1], s.stride])
    return cfg


def build_plan(space, n_steps: int, sample_seed: int = 0, num_random: int = 2):
    """Per step: teacher arch + student archs, as the SandwichClassifier trains them."""
    from nasbnn_mm.models.classifier import sandwich_students
    plan = []
    largest = space.largest()
    for it in range(n_steps):
        students = [a for _, a in sandwich_students(space, it, sample_seed, num_random)]
        plan.append(
            dict(
                iter=it,
                teacher=largest.to_text(),
                students=[a.to_text() for a in students],
                teacher_cand=arch_to_cand(largest, space),
                student_cands=[arch_to_cand(a, space) for a in students]))
    return plan


# ----------------------------------------------------------------------------- workers
def _synthetic_batch(job):
    import torch
    g = torch.Generator().manual_seed(job['seed'])
    b, s = job['batch'], job['img_size']
    images = torch.rand(b, 3, s, s, generator=g) * 2 - 1  # what Normalize(0.5, 0.5) produces
    labels = torch.randint(0, NUM_CLASSES, (b, ), generator=g)
    return images, labels


def _memory_result(mem: dict) -> None:
    mem['maxrss_mib'] = _maxrss_mib()
    hwm = _hwm_mib()
    mem['peak_timed_mib'] = hwm if (mem.get('hwm_reset') and hwm is not None) else mem['maxrss_mib']
    mem['peak_source'] = ('VmHWM during the timed steps' if mem.get('hwm_reset') else 'ru_maxrss of the process')
    mem['peak_increase_mib'] = mem['peak_timed_mib'] - mem.get('rss_before_timed_mib', 0.0)


def _serve(job, step_fn):
    """Worker loop: the driver sends 'step <i>', 'reset' (start of the timed steps: reset the
    peak-RSS counter) and 'finish'; each answer is one line on stdout."""
    import gc
    mem = {}
    print('READY', flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == 'step':
            i = int(cmd[1])
            t0, c0 = time.perf_counter(), time.process_time()
            step_fn(i)
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            print(f'DONE {dt} {dc}', flush=True)
        elif cmd[0] == 'reset':
            gc.collect()
            mem['rss_before_timed_mib'] = _rss_mib()
            mem['hwm_reset'] = _reset_hwm()
            print('OK', flush=True)
        elif cmd[0] == 'profile':
            _memory_result(mem)  # the timed steps' memory, before the profiler's own
            mem['profile'] = _profile(step_fn, int(cmd[1]), int(cmd[2]))
            print('OK', flush=True)
        elif cmd[0] == 'finish':
            if 'peak_timed_mib' not in mem:
                _memory_result(mem)
            print('RESULT ' + json.dumps(mem), flush=True)
            return


def _profile(step_fn, i: int, rows: int) -> dict:
    """One step under torch.profiler: the key-averages table and the convolutions' share."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step_fn(i)
    avgs = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in avgs)
    groups = {}
    for e in avgs:
        name = e.key
        if 'convolution' in name or 'conv2d' in name or 'mkldnn_conv' in name:
            g = 'convolutions (forward and backward)'
        elif 'batch_norm' in name:
            g = 'batch norm'
        elif name.startswith('nasbnn_binary_act'):
            g = 'RSign / RPReLU (native kernels)'
        elif 'adam' in name.lower() or name.startswith('Optimizer'):
            g = 'optimizer'
        else:
            g = 'other'
        groups[g] = groups.get(g, 0.0) + e.self_cpu_time_total
    return dict(
        table=avgs.table(sort_by='self_cpu_time_total', row_limit=rows),
        total_self_cpu_s=total / 1e6,
        groups={
            k: v / total
            for k, v in sorted(groups.items(), key=lambda kv: -kv[1])
        })


def run_ours(job):
    import torch
    if job['threads']:
        torch.set_num_threads(job['threads'])
    torch.manual_seed(job['seed'])
    sys.path.insert(0, ROOT)
    from mmengine.logging import MessageHub
    from mmengine.optim import OptimWrapper
    from mmpretrain.structures import DataSample

    import nasbnn_mm  # noqa: F401  (registers the nasbnn scope)
    from nasbnn_mm.registry import MODELS
    from nasbnn_mm.space import SearchSpace

    space = SearchSpace.build(job['space'])
    model = MODELS.build(
        dict(
            type='nasbnn.SandwichClassifier',
            backbone=dict(type='nasbnn.NASBNNSupernet', search_space=space.to_dict(), **job.get('backbone', {})),
            neck=dict(type='mmpretrain.GlobalAveragePooling'),
            head=dict(
                type='nasbnn.SlicedLinearClsHead', num_classes=NUM_CLASSES, in_channels=max(space.stages[-1].widths)),
            num_random=2,
            sample_seed=0,
            data_preprocessor=dict(type='mmpretrain.ClsDataPreprocessor')))
    model.train()
    optim = OptimWrapper(torch.optim.Adam(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY))
    images, labels = _synthetic_batch(job)
    data = dict(inputs=images, data_samples=[DataSample().set_gt_label(int(l)) for l in labels])
    hub = MessageHub.get_current_instance()

    # the model must train exactly the subnets of the plan
    for step in job['plan']:
        got = [a.to_text() for _, a in model.sandwich_archs(step['iter'])]
        assert got == step['students'], f'subnet plan mismatch at step {step["iter"]}'
        assert model.space.largest().to_text() == step['teacher']

    def step_fn(i):
        hub.update_info('iter', job['plan'][i]['iter'])
        model.sandwich_step(data, optim, model)

    return step_fn


def run_theirs(job):
    import torch
    import torch.nn.functional as F
    if job['threads']:
        torch.set_num_threads(job['threads'])
    torch.manual_seed(job['seed'])
    ref = os.path.abspath(job['reference'])
    if not os.path.isfile(os.path.join(ref, 'models', 'superbnn.py')):
        raise SystemExit(f'--reference: {ref} has no models/superbnn.py (expected a NAS-BNN checkout)')
    sys.path.insert(0, ref)
    from models.superbnn import SuperBNN  # the authors' code, from --reference

    net = SuperBNN(job['their_cfg'], NUM_CLASSES, job['img_size'])
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    images, labels = _synthetic_batch(job)
    plan = [
        dict(teacher=torch.tensor(s['teacher_cand']), students=[torch.tensor(c) for c in s['student_cands']])
        for s in job['plan']
    ]
    assert torch.equal(plan[0]['teacher'], net.biggest_cand), 'largest subnet differs from their biggest_cand'
    assert torch.equal(plan[0]['students'][0], net.smallest_cand), 'smallest subnet differs from their smallest_cand'

    def step_fn(i):
        # their train.py: zero_grad; FP-weight teacher on the biggest cand; binary students with KD
        opt.zero_grad()
        net.set_fp_weight()
        out, _ = net(images, plan[i]['teacher'])
        loss = F.cross_entropy(out, labels, label_smoothing=LABEL_SMOOTH)  # = CrossEntropyLossSmooth(0.1)
        loss.backward()
        soft = F.softmax(out.detach(), dim=1)
        net.set_bin_weight()
        for cand in plan[i]['students']:
            out, _ = net(images, cand)
            loss = -(soft * F.log_softmax(out, dim=1)).sum(1).mean()  # = KLLossSoft(T=1), no target
            loss.backward()
        opt.step()

    return step_fn


def worker_main(job_file: str):
    with open(job_file) as f:
        job = json.load(f)
    _serve(job, (run_theirs if job['impl'] == 'theirs' else run_ours)(job))


# ----------------------------------------------------------------------------- driver
class Worker:
    """One implementation in its own process, driven step by step over a pipe."""

    def __init__(self, job: dict):
        self.impl = job['impl']
        with tempfile.NamedTemporaryFile('w', suffix='.json', delete=False) as f:
            json.dump(job, f)
            self.job_file = f.name
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), '--worker', self.job_file],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT)
        self.times, self.cpu_times = [], []

    def _read(self, prefix: str) -> str:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait()
                raise SystemExit(f'{self.impl} worker failed (exit code {self.proc.returncode})')
            if line.startswith(prefix):
                return line[len(prefix):].strip()

    def _send(self, cmd: str):
        self.proc.stdin.write(cmd + '\n')
        self.proc.stdin.flush()

    def wait_ready(self):
        self._read('READY')
        os.unlink(self.job_file)

    def step(self, i: int, warm: bool):
        self._send(f'step {i}')
        dt, dc = map(float, self._read('DONE ').split())
        self.times.append(dt)
        self.cpu_times.append(dc)
        print(
            f"  [{self.impl}] step {i}{' (warm-up)' if warm else ''}: {dt:.3f} s (process CPU {dc:.3f} s)", flush=True)

    def reset(self):
        self._send('reset')
        self._read('OK')

    def profile(self, i: int, rows: int):
        self._send(f'profile {i} {rows}')
        self._read('OK')

    def finish(self, warmup: int, batch: int) -> dict:
        self._send('finish')
        res = json.loads(self._read('RESULT '))
        self.proc.wait()
        timed = self.times[warmup:]
        res.update(
            impl=self.impl,
            times=self.times,
            cpu_times=self.cpu_times,
            median_s=statistics.median(timed),
            img_s=batch / statistics.median(timed))
        return res


def run_steps(workers, args):
    """Warm-up then timed steps; with several workers they take turns at every step (the
    first one alternating), so that load changes on a shared machine hit both alike. With
    ``--profile``, one more (untimed) step of each worker under the profiler."""
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            for w in workers:
                w.reset()
        for w in (workers if i % 2 == 0 else workers[::-1]):
            w.step(i, i < args.warmup)
    if args.profile:
        for w in workers:
            w.profile(args.warmup + args.steps - 1, args.profile)


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker_main(args.worker)
    if args.steps < 1 or args.warmup < 0 or args.batch < 1:
        raise SystemExit('--steps must be >= 1, --warmup >= 0, --batch >= 1')
    sys.path.insert(0, ROOT)
    from nasbnn_mm.space import SearchSpace  # imports the package; this driver's memory is not measured
    space = SearchSpace.build(args.space)
    plan = build_plan(space, args.warmup + args.steps)
    ours_backbone = {}
    if args.precision:
        ours_backbone['binary_conv_precision'] = args.precision
    if args.grad:
        ours_backbone['binary_conv_grad'] = args.grad
    base = dict(
        batch=args.batch,
        img_size=args.img_size,
        steps=args.steps,
        warmup=args.warmup,
        threads=args.threads,
        seed=args.seed,
        space=space.to_dict(),
        plan=plan)
    threads = args.threads or 'default'
    print(
        f'sandwich step (teacher + smallest + 2 random, fwd+bwd each, Adam step): batch {args.batch}, '
        f'{args.img_size}px, threads {threads}, {args.warmup} warm-up + {args.steps} timed steps',
        flush=True)
    for s in plan:
        print(f"  step {s['iter']} students: " + ' || '.join(s['students'][1:]), flush=True)

    variants = dict(parse_variant(v) for v in args.variant)
    impls = ['ours'] + [f'ours-{n}' for n in variants] + (['theirs'] if args.reference else [])
    jobs = {impl: dict(base, impl=impl) for impl in impls}
    jobs['ours']['backbone'] = ours_backbone
    if ours_backbone:
        print('  ours: backbone ' + ', '.join(f'{k}={v!r}' for k, v in ours_backbone.items()), flush=True)
    for n, opts in variants.items():
        jobs[f'ours-{n}']['backbone'] = dict(ours_backbone, **opts)
        print(f'  ours-{n}: backbone ' + ', '.join(f'{k}={v!r}' for k, v in opts.items()), flush=True)
    if args.reference:
        jobs['theirs'].update(reference=args.reference, their_cfg=space_to_their_cfg(space))
    results = {}
    if args.interleave:
        workers = [Worker(jobs[impl]) for impl in impls]
        for w in workers:
            w.wait_ready()
        run_steps(workers, args)
        results = {w.impl: w.finish(args.warmup, args.batch) for w in workers}
    else:
        for impl in impls:
            w = Worker(jobs[impl])
            w.wait_ready()
            run_steps([w], args)
            results[impl] = w.finish(args.warmup, args.batch)

    print('\nper-step wall time in s (process CPU time in s, all threads):')
    print('step  ' + ''.join(f'{impl:>22}' for impl in impls))
    for i in range(args.warmup + args.steps):
        tag = ' (warm-up)' if i < args.warmup else ''
        print(f'{i:<6}' + ''.join(f"{results[impl]['times'][i]:>12.3f} ({results[impl]['cpu_times'][i]:>7.3f})"
                                  for impl in impls) + tag)
    print('peak memory = peak RSS of the implementation\'s own worker process during the timed steps '
          f"({results['ours']['peak_source']}); 'increase' = that peak minus the RSS right before the timed steps")
    for impl in impls:
        r = results[impl]
        cpu = statistics.median(r['cpu_times'][args.warmup:])
        print(f"{impl:>6}: median {r['median_s']:.3f} s/step (CPU {cpu:.3f} s), {r['img_s']:.3f} img/s, "
              f"peak memory {r['peak_timed_mib']:.0f} MiB (increase {r['peak_increase_mib']:.0f} MiB, "
              f"process ru_maxrss {r['maxrss_mib']:.0f} MiB)")
    for n in variants:
        v, o = results[f'ours-{n}'], results['ours']
        ratios = ', '.join(f'{b / a:.2f}' for a, b in zip(v['times'][args.warmup:], o['times'][args.warmup:]))
        print(f"ours-{n} vs ours: {v['img_s']:.3f} vs {o['img_s']:.3f} img/s (x{v['img_s'] / o['img_s']:.2f}), "
              f"peak memory {v['peak_timed_mib']:.0f} vs {o['peak_timed_mib']:.0f} MiB; per step x{ratios}")
    if 'theirs' in results:
        o, t = results['ours'], results['theirs']
        print(f"ours vs theirs: {o['img_s']:.3f} vs {t['img_s']:.3f} img/s (x{o['img_s'] / t['img_s']:.2f}), "
              f"peak memory {o['peak_timed_mib']:.0f} vs {t['peak_timed_mib']:.0f} MiB")
        to, tt = sum(o['times'][args.warmup:]), sum(t['times'][args.warmup:])
        ratios = ', '.join(f'{b / a:.2f}' for a, b in zip(o['times'][args.warmup:], t['times'][args.warmup:]))
        print(f"  all timed steps together: {args.batch * args.steps / to:.3f} vs {args.batch * args.steps / tt:.3f} "
              f"img/s (x{tt / to:.2f}); per step (same subnets): x{ratios}")
    for impl in impls:
        prof = results[impl].get('profile')
        if prof:
            print(f"\nprofile of one step of {impl} ({prof['total_self_cpu_s']:.2f} s self CPU time in ops, "
                  'all threads; shares by op group: ' + ', '.join(f'{k} {v:.0%}'
                                                                  for k, v in prof['groups'].items()) + ')')
            print(prof['table'])
    o = results['ours']
    print(f"{o['img_s']:.3f} img/s, peak memory {o['peak_timed_mib']:.0f} MiB")


if __name__ == '__main__':
    main()
