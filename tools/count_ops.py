#!/usr/bin/env python
"""Count OPs, parameters and deployed size of NAS-BNN architectures (no model is built).

Examples::

    python tools/count_ops.py D
    python tools/count_ops.py A B C D E F
    python tools/count_ops.py "c24_k3_g1 | c48_k3_g1 c48_k3_g1 | ..." --per-layer
    python tools/count_ops.py --largest --smallest --random 5 --seed 0
    python tools/count_ops.py --space configs/cifar10/nasbnn_supernet_cifar10.py --largest --img-size 32
    python tools/count_ops.py --space-size
    python tools/count_ops.py --det-config configs/coco/faster-rcnn_nasbnn-d_fpn_1x_coco.py      # detector OPs
    python tools/count_ops.py A F --det-config configs/coco/faster-rcnn_nasbnn-a_fpn_1x_coco.py --img-size 800x1333
"""
import argparse
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nasbnn_mm.space import PRESET_NAMES, Architecture, ArchitectureError, SearchSpace, get_preset, profile_arch


def parse_size(s: str):
    try:
        parts = [int(p) for p in s.lower().replace('x', ',').split(',')]
    except ValueError:
        raise argparse.ArgumentTypeError(f'--img-size: expected N or HxW, got {s!r}') from None
    if len(parts) == 1:
        return parts[0], parts[0]
    if len(parts) == 2:
        return tuple(parts)
    raise argparse.ArgumentTypeError(f'--img-size: expected N or HxW, got {s!r}')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('archs', nargs='*', help='preset names (A..F) or architecture texts')
    p.add_argument('--space', help='config file whose `search_space` defines the space (default: Table 1)')
    p.add_argument('--largest', action='store_true')
    p.add_argument('--smallest', action='store_true')
    p.add_argument('--presets', action='store_true', help='all presets A..F')
    p.add_argument('--random', type=int, default=0, metavar='N', help='N random architectures under ND')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument(
        '--img-size',
        type=parse_size,
        default=None,
        help="N or HxW (default 224; with --det-config the test pipeline's Resize scale)")
    p.add_argument('--num-classes', type=int, default=1000)
    p.add_argument('--per-layer', action='store_true', help='print a per-layer table')
    p.add_argument('--space-size', action='store_true', help='print the exact search-space cardinality')
    p.add_argument('--json', action='store_true', help='print one JSON object per architecture')
    p.add_argument(
        '--det-config',
        metavar='CONFIG',
        help='detector config (Faster R-CNN + FPN on NASBNNDetBackbone): print the backbone OPs at the '
        "detector's input size and the neck / head FLOPs (the config's architecture unless "
        'architectures are given)')
    p.add_argument(
        '--convention',
        choices=['full', 'paper'],
        default='full',
        help="with --det-config: 'full' counts every layer at the input size; 'paper' is Table 3's "
        '(320x320, stem MACs in full, binary backbone and FPN / 64, no RPN / RoI head)')
    return p.parse_args(argv)


def fmt_m(x: float) -> str:
    return f'{x / 1e6:,.2f}M'


def print_per_layer(rep):
    hdr = (f'{"layer":<22}{"prec":<8}{"in":>6}{"out":>6}{"k":>3}{"g":>4}{"s":>3}{"out HxW":>10}{"MACs":>14}'
           f'{"weights":>11}')
    print(hdr)
    print('-' * len(hdr))
    for l in rep.layers:
        prec = {'binary': '1-bit', 'int8': '8-bit', 'fp': 'fp32'}[l.kind]
        print(f'{l.name:<22}{prec:<8}{l.in_channels:>6}{l.out_channels:>6}{l.kernel:>3}{l.groups:>4}{l.stride:>3}'
              f'{"%dx%d" % l.out_hw:>10}{l.macs:>14,}{l.weight_params:>11,}')
    print('-' * len(hdr))


def print_summary(name, rep):
    s = rep.summary()
    print(f'== {name}')
    print(f'   arch       {s["arch"]}')
    print(f'   input      {rep.img_size[0]}x{rep.img_size[1]}, {rep.num_classes} classes')
    print(f'   FLOPs      {fmt_m(s["flops"])}   Int8OPs {fmt_m(s["int8ops"])}   BOPs {fmt_m(s["bops"])}')
    print(f'   OPs        {fmt_m(s["ops"])}   (= FLOPs + Int8OPs/8 + BOPs/64)')
    total = rep.total_params
    print(f'   params     binary {s["binary_params"]:,}  8-bit {s["int8_params"]:,}  fp32 {s["fp_params"]:,}'
          f'  (total {total:,})')
    fp32_mb = total * 4 / 2**20
    print(f'   size       {s["size_mb"]:.2f} MB deployed (1-bit weights) vs {fp32_mb:.2f} MB all-fp32'
          f' ({fp32_mb / s["size_mb"]:.1f}x smaller)')


def print_detector(name, rep):
    print(f'== {name}  ({rep["convention"]} convention)')
    print(f'   arch       {rep["arch"]}')
    h, w = rep['img_size']
    ph, pw = rep['padded_size']
    print(f'   input      {h}x{w} (padded {ph}x{pw})')
    print(f'   backbone   {fmt_m(rep["backbone_ops"])} OPs   (Int8OPs {fmt_m(rep["backbone_int8ops"])}, '
          f'BOPs {fmt_m(rep["backbone_bops"])})')
    neck = (f'{fmt_m(rep["neck_bops"])} BOPs (binary FPN) = {fmt_m(rep["neck_ops"])} OPs'
            if rep['neck_binary'] else f'{fmt_m(rep["neck_flops"])} FLOPs (FPN)')
    print(f'   neck       {neck}')
    rpn = (f'{fmt_m(rep["rpn_bops"])} BOPs (binary 3x3) + {fmt_m(rep["rpn_flops"])} FLOPs (1x1) = '
           f'{fmt_m(rep["rpn_ops"])} OPs' if rep['rpn_binary'] else f'{fmt_m(rep["rpn_flops"])} FLOPs')
    print(f'   rpn        {rpn}')
    print(f'   roi head   {fmt_m(rep["roi_flops"])} FLOPs ({rep["proposals"]} proposals x '
          f'{fmt_m(rep["roi_flops_per_proposal"])})')
    if rep['convention'] == 'paper':
        print(f'   total      {fmt_m(rep["ops"])} OPs   (paper, Table 3: stem MACs + binary backbone and FPN / 64; '
              'RPN and RoI head not counted)')
    else:
        print(f'   total      {fmt_m(rep["ops"])} OPs   (backbone OPs + neck + RPN + RoI head)')


def main_detector(args):
    from mmengine.config import Config

    from nasbnn_mm.det.ops_counter import detector_input_size, detector_ops
    if not os.path.isfile(args.det_config):
        raise FileNotFoundError(f'--det-config: no such file {args.det_config!r}')
    try:
        cfg = Config.fromfile(args.det_config)
    except Exception as e:  # a syntax error or a missing _base_ in the user's config
        raise ArchitectureError(f'--det-config {args.det_config}: {type(e).__name__}: {str(e).splitlines()[0][:200]}')
    size = None if args.convention == 'paper' else (args.img_size or detector_input_size(cfg))
    todo = [(a if len(a) < 20 else 'arch', a) for a in args.archs] or [(os.path.basename(args.det_config), None)]
    for name, arch in todo:
        rep = detector_ops(cfg.model, size, arch, args.convention)
        if args.json:
            print(json.dumps(dict(name=name, **rep)))
        else:
            print_detector(name, rep)


def main(argv=None):
    args = parse_args(argv)
    try:
        if args.det_config:
            main_detector(args)
            return 0
        args.img_size = args.img_size or (224, 224)
        space = SearchSpace.build(args.space)
        if args.space_size:
            print(f'search space: {space.cardinality(nd=True):,} architectures under ND '
                  f'({space.cardinality(nd=True)}), {space.cardinality(nd=False):,} without ND '
                  f'({space.cardinality(nd=False)})')
        todo = []
        if args.presets:
            todo += [(f'NAS-BNN-{n}', get_preset(n)) for n in PRESET_NAMES]
        for a in args.archs:
            arch = Architecture.coerce(a)
            todo.append((a if len(a) < 20 else 'arch', arch))
        if args.largest:
            todo.append(('largest', space.largest()))
        if args.smallest:
            todo.append(('smallest', space.smallest()))
        rng = random.Random(args.seed)
        todo += [(f'random[{i}]', space.sample(rng)) for i in range(args.random)]
        if not todo and not args.space_size:
            # the presets belong to Table 1; another space shows its extremes
            todo = ([(f'NAS-BNN-{n}', get_preset(n))
                     for n in PRESET_NAMES] if space == SearchSpace.table1() else [('largest', space.largest()),
                                                                                   ('smallest', space.smallest())])
        for name, arch in todo:
            space.validate(arch)
            rep = profile_arch(arch, args.img_size, args.num_classes, space=space)
            if args.json:
                print(json.dumps(dict(name=name, **rep.summary())))
                continue
            print_summary(name, rep)
            if args.per_layer:
                print_per_layer(rep)
    except (ArchitectureError, FileNotFoundError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
