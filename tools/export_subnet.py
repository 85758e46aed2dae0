#!/usr/bin/env python
"""Export one subnet of a trained supernet as a standalone static model (logic: nasbnn_mm.engine.export).

    python tools/export_subnet.py SUPERNET_CONFIG SUPERNET_CKPT --arch D
    python tools/export_subnet.py SEARCH_CONFIG SUPERNET_CKPT --arch work_dirs/search/pareto.json --ops 40
    python tools/export_subnet.py SUPERNET_CONFIG SUPERNET_CKPT --arch "c16_k3_g1 | ..." --packed

Writes into --out-dir (default work_dirs/export/<name>):
  subnet.pth            weights-only checkpoint of ImageClassifier(NASBNNSubnet, GAP, LinearClsHead):
                        slices of the shared weights, kernel transforms and Bi-Transformation folded,
                        BN statistics recalibrated on the calibration batches, class names in its meta;
  subnet_test.py        config for pipeline 1:  tools/test.py subnet_test.py subnet.pth
  subnet_finetune.py    config for pipeline 2:  tools/train.py subnet_finetune.py
  subnet_packed.pth     with --packed: binary weights as packed bits + per-channel alpha, 8-bit stem.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from nasbnn_mm.apis import run_cli


def parse_args(argv=None):
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description='Export a NAS-BNN subnet')
    p.add_argument('config', help='supernet (or search) config')
    p.add_argument('checkpoint', help='supernet checkpoint (published, weights-only)')
    p.add_argument('--arch', required=True, help='preset name, architecture text, or a pareto.json (with --ops)')
    p.add_argument('--ops', type=float, help='OPs bin (M) of the pareto.json entry to export')
    p.add_argument('--out-dir')
    p.add_argument('--subnet-config', help='template config of the static subnet (default: cfg.subnet_config)')
    p.add_argument('--finetune-config', help='template finetune config (default: cfg.finetune_config)')
    p.add_argument('--calib-batches', type=int, help='BN recalibration batches (default: the search setting or 10)')
    p.add_argument('--seed', type=int, help='calibration seed (default: the search seed or 0)')
    p.add_argument('--packed', action='store_true', help='also write the packed 1-bit deployable form')
    p.add_argument('--trust-checkpoint', action='store_true')
    p.add_argument('--cfg-options', nargs='+', action=DictAction)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from mmengine.config import Config

    from nasbnn_mm.engine import export_subnet
    if not osp.isfile(args.config):
        raise FileNotFoundError(f'config: no such file {args.config!r}')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    return export_subnet(cfg, args.checkpoint, args.arch, args.ops, args.out_dir, args.calib_batches, args.seed,
                         args.packed, args.trust_checkpoint, args.subnet_config, args.finetune_config)['checkpoint']


if __name__ == '__main__':
    run_cli(main)
