#!/usr/bin/env python
"""The paper's Fig. 3 protocol: N random subnets of a trained supernet, each BN-recalibrated and scored
with inherited weights on the search's held-out split (logic: nasbnn_mm.engine.sampling).

    python tools/sample_subnets.py SEARCH_CONFIG SUPERNET_CKPT --num 200 [--no-nd] [--seed 0] [--resume]
        -> <work dir>/samples.json (arch, OPs, top-1 per subnet); the same subnets for every supernet
           with the same seed and --nd setting
    python tools/sample_subnets.py --compare base/samples.json abl/samples.json --labels base no-WN \
        --out fig3.png      # accuracy vs OPs, sorted-accuracy curves, mean / median, paired differences
    torchrun --nproc-per-node 2 tools/sample_subnets.py ... --launcher pytorch
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from nasbnn_mm.apis import add_common_args, load_tool_config, run_cli, run_sampling


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('config', nargs='?', help='search config (its held-out split, calibration and metric)')
    p.add_argument('checkpoint', nargs='?', help='supernet checkpoint (published, weights-only)')
    p.add_argument('--num', type=int, default=200, help='random subnets (default 200)')
    p.add_argument('--nd', dest='nd', action='store_true', default=True, help='draw under ND (default)')
    p.add_argument('--no-nd', dest='nd', action='store_false', help='draw without the Non-Decreasing constraint')
    p.add_argument('--seed', type=int, default=0, help='seed of the draw and of the calibration batches')
    p.add_argument(
        '--resume',
        action='store_true',
        help='continue from work_dir/samples_state.json (a larger --num scores further subnets of the same draw)')
    p.add_argument('--compare', nargs='+', metavar='SAMPLES_JSON', help='compare runs instead of sampling')
    p.add_argument('--labels', nargs='+', help='with --compare: one name per run')
    p.add_argument('--out', help='with --compare: the Fig. 3 plot (PNG)')
    add_common_args(p)
    args = p.parse_args(argv)
    if not args.compare and not (args.config and args.checkpoint):
        p.error('give CONFIG and CHECKPOINT, or --compare SAMPLES_JSON ...')
    return args


def print_comparison(res):
    print(f'{"run":<22}{"n":>5}{"mean":>8}{"95% CI":>18}{"median":>8}   paired difference to '
          f'{res["baseline"]} (mean [95% CI])')
    for r in res['rows']:
        d = r.get('vs_baseline')
        diff = f'{d["mean"]:+.2f} [{d["ci"][0]:+.2f}, {d["ci"][1]:+.2f}] over {d["n"]}' if d else '-'
        print(f'{r["run"]:<22}{r["n"]:>5}{r["mean"]:>8.2f}   [{r["ci"][0]:6.2f}, {r["ci"][1]:6.2f}]{r["median"]:>8.2f}'
              f'   {diff}')


def main(argv=None):
    args = parse_args(argv)
    if args.compare:
        from nasbnn_mm.engine.sampling import compare_samples, plot_samples
        res = compare_samples(args.compare, args.labels)
        print_comparison(res)
        if args.out:
            print(f'plot: {plot_samples(args.compare, args.out, args.labels)}')
        return res
    out = run_sampling(load_tool_config(args, args.config), args.checkpoint, args.num, args.nd, args.seed, args.resume)
    print(f'{len(out["samples"])} subnets -> samples.json')
    return out


if __name__ == '__main__':
    run_cli(main)
