#!/usr/bin/env python
"""Device check of the exact low-precision binary convolutions (``nasbnn_mm/ops/lowp.py``) on a GPU.

Meant for a CUDA machine, under 3 minutes (an H200: well under one); runs on CPU too (``--device cpu``
with small sizes, to check the script itself). Three parts:

1. forward exactness: random layers of the Table-1 space (kernels 1/3/5, its groups and widths,
   strides 1/2, odd sizes): the ``'bf16'`` path (±1 operands, TF32 on CUDA, alpha after) against the
   float64 value (exact: integers times alpha); the ``'fp32'`` path's largest error with torch's
   current cuDNN setting (TF32 by default: it rounds alpha to 10 bits) and with IEEE float32;
2. gradients of the same layers: ``binary_conv_grad`` fp32 / bf16x2 / bf16x3 against IEEE float32
   (largest relative norm-wise difference per tensor);
3. step time of the sandwich step (teacher + smallest + 2 random, forward + backward each, Adam) of
   the Table-1 supernet: fp32 path with cuDNN IEEE, fp32 path with torch's default (TF32), and the
   bf16 path with float32 and with bf16x2 gradients. Peak memory: ``torch.cuda.max_memory_allocated``.

Prints a summary and writes it as JSON to ``--out`` (default ``$OUT/device_check_lowp.json`` when
``$OUT`` is set). Exit code 1 when a forward is not exact or a split gradient exceeds 1e-4.

Example::

    python benchmarks/device_check_lowp.py                      # CUDA, batch 32, 224 px
    python benchmarks/device_check_lowp.py --device cpu --batch 2 --img-size 64 --layers 6 --steps 1
"""
from __future__ import annotations
import argparse
import copy
import json
import os
import random
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

GRAD_TOL = 1e-4


def random_layers(space, n, seed=0):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        st = space.stages[rng.randrange(space.num_stages)]
        c_in = rng.choice(st.widths)
        if i % 3 == 2:  # 1 x 1
            out.append((c_in, rng.choice([w for w in st.widths if w >= c_in]), 1, 1, 1, rng.choice((7, 9, 13))))
        else:
            k = rng.choice(st.kernels)
            g = rng.choice([g for g in st.groups if c_in % g == 0])
            out.append((c_in, c_in, k, g, rng.choice((1, 2)), rng.choice((7, 9, 13, 15, 29))))
    return out


def _cudnn(value):
    """Set cuDNN's float32 precision ('ieee' / 'tf32'); returns the old value (None off CUDA)."""
    conv = getattr(torch.backends.cudnn, 'conv', None)
    if conv is None:
        return None
    old = conv.fp32_precision
    conv.fp32_precision = value
    return old


def check_layers(args, device):
    from nasbnn_mm.ops import BINARY, SharedBinaryConv2d
    from nasbnn_mm.space import SearchSpace
    space = SearchSpace.table1()
    rows, ok = [], True
    for i, (c_in, c_out, k, g, s, size) in enumerate(random_layers(space, args.layers, args.seed)):
        torch.manual_seed(i)
        conv = SharedBinaryConv2d(c_in, c_out, (k, ), (g, )).to(device)
        gen = torch.Generator().manual_seed(i)
        x = torch.randint(0, 2, (args.layer_batch, c_in, size, size), generator=gen).float().mul_(2).sub_(1)
        x = x.to(device).contiguous(memory_format=torch.channels_last)
        w = conv.effective_weight(c_in, c_out, k, g, BINARY, memory_format=torch.channels_last).detach()
        exact = F.conv2d(x.double(), w.double(), None, s, k // 2, 1, g)  # integers x alpha: exact in float64
        out = {}
        for name, prec, grad, cudnn in (('fp32_default', 'fp32', 'fp32', None), ('fp32_ieee', 'fp32', 'fp32', 'ieee'),
                                        ('bf16_gfp32', 'bf16', 'fp32', 'ieee'), ('bf16_gx2', 'bf16', 'bf16x2', 'ieee'),
                                        ('bf16_gx3', 'bf16', 'bf16x3', 'ieee')):
            old = _cudnn(cudnn) if cudnn else None
            try:
                c = copy.deepcopy(conv)
                c.conv_precision, c.conv_grad = prec, grad
                xx = x.clone().requires_grad_()
                y = c(xx, c_out, k, g, s, BINARY)
                gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(100 + i)).to(device)
                y.backward(gy.contiguous(memory_format=torch.channels_last))
                out[name] = (y.detach(), {'x': xx.grad, 'w': c.weight.grad})
            finally:
                if old is not None:
                    _cudnn(old)
        ref_g = out['fp32_ieee'][1]
        row = dict(layer=f'{c_in}->{c_out} k{k} g{g} s{s} {size}px')
        row['bf16_exact'] = bool(torch.equal(out['bf16_gfp32'][0], exact.float()))
        scale = exact.abs().max().item()
        for name in ('fp32_default', 'fp32_ieee', 'bf16_gfp32'):
            row[f'{name}_max_err_rel'] = (out[name][0].double() - exact).abs().max().item() / scale
        for name in ('fp32_default', 'bf16_gfp32', 'bf16_gx2', 'bf16_gx3'):
            row[f'{name}_grad_rel'] = max(((out[name][1][t] - ref_g[t]).norm() / ref_g[t].norm()).item() for t in ref_g)
        ok &= row['bf16_exact'] and row['bf16_gx2_grad_rel'] <= GRAD_TOL and row['bf16_gx3_grad_rel'] <= GRAD_TOL
        rows.append(row)
        print(
            f"  {row['layer']:<28} bf16 exact {row['bf16_exact']}; forward max err / max |y|: fp32(default) "
            f"{row['fp32_default_max_err_rel']:.1e}, fp32(ieee) {row['fp32_ieee_max_err_rel']:.1e}, bf16 "
            f"{row['bf16_gfp32_max_err_rel']:.1e}; grad rel vs ieee: fp32(default) {row['fp32_default_grad_rel']:.1e}"
            f", bf16x2 {row['bf16_gx2_grad_rel']:.1e}, bf16x3 {row['bf16_gx3_grad_rel']:.1e}",
            flush=True)
    return rows, ok


def time_steps(args, device):
    from mmengine.logging import MessageHub
    from mmengine.optim import OptimWrapper
    from mmpretrain.structures import DataSample

    import nasbnn_mm  # noqa: F401
    from nasbnn_mm.registry import MODELS
    from nasbnn_mm.space import SearchSpace
    space = SearchSpace.table1()
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(args.batch, 3, args.img_size, args.img_size, generator=g) * 255).to(torch.uint8)
    labels = torch.randint(0, 1000, (args.batch, ), generator=g)
    data = dict(inputs=images, data_samples=[DataSample().set_gt_label(int(v)) for v in labels])
    hub = MessageHub.get_current_instance()
    results = {}
    configs = (('fp32 (cuDNN IEEE)', 'fp32', 'fp32', 'ieee'), ('fp32 (torch default)', 'fp32', 'fp32', None),
               ('bf16, grad fp32 (IEEE)', 'bf16', 'fp32', 'ieee'), ('bf16, grad bf16x2', 'bf16', 'bf16x2', 'ieee'))
    for name, prec, grad, cudnn in configs:
        torch.manual_seed(0)
        model = MODELS.build(
            dict(
                type='nasbnn.SandwichClassifier',
                backbone=dict(
                    type='nasbnn.NASBNNSupernet',
                    search_space=space.to_dict(),
                    binary_conv_precision=prec,
                    binary_conv_grad=grad),
                neck=dict(type='mmpretrain.GlobalAveragePooling'),
                head=dict(type='nasbnn.SlicedLinearClsHead', num_classes=1000, in_channels=1536),
                num_random=2,
                data_preprocessor=dict(type='mmpretrain.ClsDataPreprocessor'))).to(device).train()
        optim = OptimWrapper(torch.optim.Adam(model.parameters(), lr=2.5e-3))
        old = _cudnn(cudnn) if cudnn else None
        times, losses = [], []
        try:
            if device.type == 'cuda':
                torch.cuda.reset_peak_memory_stats(device)
            for it in range(args.warmup + args.steps):
                hub.update_info('iter', it)
                if device.type == 'cuda':
                    torch.cuda.synchronize(device)
                t0 = time.perf_counter()
                log = model.train_step(data, optim)
                if device.type == 'cuda':
                    torch.cuda.synchronize(device)
                if it >= args.warmup:
                    times.append(time.perf_counter() - t0)
                if it == 0:
                    losses = {k: v.item() for k, v in log.items()}
            peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == 'cuda' else float('nan')
        finally:
            if old is not None:
                _cudnn(old)
        med = statistics.median(times)
        results[name] = dict(median_s=med, img_s=args.batch / med, times=times, peak_mib=peak, first_losses=losses)
        print(
            f'  {name:<24} median {med:.3f} s/step, {args.batch / med:.1f} img/s, peak {peak:.0f} MiB, '
            f"first step loss {losses['loss']:.6f}",
            flush=True)
        del model, optim
        if device.type == 'cuda':
            torch.cuda.empty_cache()
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--device', default='cuda')
    p.add_argument('--layers', type=int, default=18, help='random layers of the forward / gradient check')
    p.add_argument('--layer-batch', type=int, default=4)
    p.add_argument('--batch', type=int, default=32, help='batch of the timed sandwich steps')
    p.add_argument('--img-size', type=int, default=224)
    p.add_argument('--steps', type=int, default=3)
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out', default=None, help='JSON summary (default: $OUT/device_check_lowp.json if $OUT is set)')
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('device_check_lowp: no CUDA device (use --device cpu to check the script)')
    from nasbnn_mm.ops import lowp
    t0 = time.perf_counter()
    info = dict(device=str(device), torch=torch.__version__)
    if device.type == 'cuda':
        info.update(
            name=torch.cuda.get_device_name(device),
            capability=torch.cuda.get_device_capability(device),
            cudnn=torch.backends.cudnn.version(),
            cudnn_conv_fp32_precision=_cudnn('tf32'))
        _cudnn(info['cudnn_conv_fp32_precision'])
    info['auto'] = lowp.resolve_precision('auto', 'auto', device)
    info['auto_reason'] = lowp.hardware_bf16(device)[1]
    print(f'device check of the low-precision binary convolutions: {info}', flush=True)
    print('1-2. forward exactness and gradients of random Table-1 layers:', flush=True)
    rows, ok = check_layers(args, device)
    print(
        f'   bf16 forward exact on {sum(r["bf16_exact"] for r in rows)}/{len(rows)} layers; largest split-gradient '
        f'difference: bf16x2 {max(r["bf16_gx2_grad_rel"] for r in rows):.1e}, bf16x3 '
        f'{max(r["bf16_gx3_grad_rel"] for r in rows):.1e} (tolerance {GRAD_TOL:g})',
        flush=True)
    print(
        f'3. sandwich step, Table-1 supernet, batch {args.batch}, {args.img_size} px, {args.warmup} warm-up + '
        f'{args.steps} timed steps:',
        flush=True)
    steps = time_steps(args, device)
    base = steps['fp32 (cuDNN IEEE)']['median_s']
    for name, r in steps.items():
        print(f'   {name:<24} x{base / r["median_s"]:.2f} vs fp32 (cuDNN IEEE)')
    summary = dict(info=info, layers=rows, steps=steps, ok=bool(ok), wall_s=time.perf_counter() - t0)
    out = args.out or (os.path.join(os.environ['OUT'], 'device_check_lowp.json') if os.environ.get('OUT') else None)
    if out:
        with open(out, 'w') as f:
            json.dump(summary, f, indent=1, default=str)
        print(f'summary: {out}')
    print(f"{'OK' if ok else 'FAILED'}: {summary['wall_s']:.0f} s")
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
