#!/usr/bin/env python
"""Does the supernet rank subnets right? Kendall's tau and Spearman's rho (with bootstrap 95 %
intervals) between two scorings of the same subnets, e.g. inherited weights vs finetuned.

    python tools/rank_correlation.py inherited.json finetuned.json [--key-a acc] [--key-b acc]

Each file is a JSON list of {"arch": <text>, <key>: <score>, ...} or a samples.json of
tools/sample_subnets.py; subnets are paired by architecture.
"""
import argparse
import json
import math
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from nasbnn_mm.apis import run_cli


def _scores(path, key):
    if not osp.isfile(path):
        raise FileNotFoundError(f'scores: no such file {path!r}')
    with open(path) as f:
        data = json.load(f)
    rows = data.get('samples', data.get('rows')) if isinstance(data, dict) else data
    if not isinstance(rows, list) or not all(isinstance(r, dict) and 'arch' in r and key in r for r in rows):
        raise ValueError(f"scores: {path} must be a list of {{'arch', {key!r}}} records (or a samples.json)")
    return {r['arch']: float(r[key]) for r in rows}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('a')
    p.add_argument('b')
    p.add_argument('--key-a', default='acc')
    p.add_argument('--key-b', default='acc')
    args = p.parse_args(argv)
    from nasbnn_mm.engine.sampling import correlate
    res = correlate(_scores(args.a, args.key_a), _scores(args.b, args.key_b))
    if math.isnan(res['kendall_tau']) or math.isnan(res['spearman_rho']):
        print(f'{res["n"]} subnets: rank correlation undefined (every score tied in one of the files)')
        return res
    print(f'{res["n"]} subnets: Kendall tau {res["kendall_tau"]:.3f} [{res["kendall_ci"][0]:.3f}, '
          f'{res["kendall_ci"][1]:.3f}], Spearman rho {res["spearman_rho"]:.3f} [{res["spearman_ci"][0]:.3f}, '
          f'{res["spearman_ci"][1]:.3f}] (bootstrap 95 % intervals)')
    return res


if __name__ == '__main__':
    run_cli(main)
