#!/usr/bin/env python
"""End-to-end NAS-BNN pipeline at CPU scale on the shared data, through the project's own tools.

    python tools/demo.py [--work-dir work_dirs/demo] [--data ../shared/data]

Stages (each one of the real tools/configs; a stage whose outputs exist is skipped, so a
re-run continues where the last one stopped):
  1. held-out split of the CIFAR-10 training folders   tools/split_heldout.py
  2. supernet training (reduced space, 32 px)           tools/train.py  configs/cifar10/nasbnn-supernet_...
  3. evolutionary Pareto search                         tools/search.py configs/cifar10/nasbnn-search_...
  4. export of two front subnets (+ packed 1-bit form)  tools/export_subnet.py
  5. pipeline 1: the exported subnets on CIFAR-10 test  tools/test.py
  6. pipeline 2: a short finetune of each, then test    tools/train.py / tools/test.py
  7. the exported subnets on the 1-bit runtime vs float     tools/infer.py --compare-float
  8. the paper's binary Faster R-CNN (binary backbone, FPN and RPN conv) on coco_small ('person'),
     backbone = a searched subnet inheriting the supernet weights: train, then COCO mAP on val2017
     and 4 val images drawn with ground truth and predictions   tools/train.py / tools/test.py
Outputs: <work-dir>/summary.md and summary.json (subnet, OPs, pipeline-1/2 top-1, detector mAP),
<work-dir>/pareto.png, and one log per stage in <work-dir>/logs/.
"""
import argparse
import json
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SUPERNET_CFG = 'configs/cifar10/nasbnn-supernet_cifar-small_cifar10.py'
SEARCH_CFG = 'configs/cifar10/nasbnn-search_cifar-small_cifar10.py'
DET_CFG = 'configs/coco/faster-rcnn_nasbnn-cifar-small_binary-fpn_coco-small.py'
PICTURES, PICTURE_SCORE_THR = 4, 0.1  # detector pictures in the summary: how many val images, from which score
SHOW = re.compile(r'Iter\(train\)|Iter\(val\)|Iter\(test\)|\[search\]|\[val\]|\[test\]|subnet |accuracy/top1|'
                  r'bbox_mAP|exported|packed|held out|^error|Error: |Traceback|resumed')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--work-dir', default='work_dirs/demo')
    p.add_argument(
        '--data',
        default=os.environ.get('NASBNN_DATA', osp.join('..', 'shared', 'data')),
        help='folder with cifar10_jpg.tar.gz and coco_small/ (default $NASBNN_DATA or ../shared/data)')
    p.add_argument('--supernet-iters', type=int, default=1000)
    p.add_argument('--population', type=int, default=16)
    p.add_argument('--generations', type=int, default=3)
    p.add_argument('--finetune-iters', type=int, default=200)
    p.add_argument('--det-iters', type=int, default=200)
    p.add_argument('--det-class', default='person')
    return p.parse_args(argv)


class Demo:

    def __init__(self, args):
        self.args = args
        self.wd = osp.abspath(args.work_dir)
        self.data = osp.abspath(args.data)
        self.logs = osp.join(self.wd, 'logs')
        os.makedirs(self.logs, exist_ok=True)
        self.t0 = time.time()
        self.env = dict(os.environ, NASBNN_DATA=self.data)

    def say(self, msg):
        print(f'[demo {time.strftime("%H:%M:%S", time.gmtime(time.time() - self.t0))}] {msg}', flush=True)

    def run(self, name, cmd):
        """Run one tool, streaming its progress lines; the whole output goes to logs/<name>.log."""
        log = osp.join(self.logs, f'{name}.log')
        self.say(f'{name}: {" ".join(cmd[1:])}')
        with open(log, 'w') as f:
            proc = subprocess.Popen(
                [sys.executable, *cmd[1:]] if cmd[0] == 'python' else cmd,
                cwd=ROOT,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True)
            for line in proc.stdout:
                f.write(line)
                if SHOW.search(line):
                    print('    ' + line.rstrip()[-200:], flush=True)
            rc = proc.wait()
        if rc != 0:
            raise SystemExit(f'[demo] stage {name} failed (exit {rc}); see {log}')

    # ------------------------------------------------------------------ stages
    def check_data(self):
        need = [osp.join(self.data, 'cifar10_jpg.tar.gz'), osp.join(self.data, 'coco_small', 'annotations')]
        missing = [p for p in need if not osp.exists(p)]
        if missing:
            raise SystemExit('[demo] data not found: ' + ', '.join(missing) + '. Put cifar10_jpg.tar.gz and '
                             'coco_small/ (COCO 2017 layout) in one folder and pass --data DIR or set NASBNN_DATA.')

    def split(self):
        from nasbnn_mm.datasets import default_cache_dir
        meta = osp.join(default_cache_dir(), 'data', 'cifar10_jpg', 'meta', 'heldout.txt')
        if osp.isfile(meta):
            return self.say('held-out split: exists, skipped')
        self.run('split', [
            'python', 'tools/split_heldout.py', '--archive',
            osp.join(self.data, 'cifar10_jpg.tar.gz'), '--per-class', '50', '--seed', '0'
        ])

    def supernet(self):
        wd = osp.join(self.wd, 'supernet')
        ckpt = osp.join(wd, 'published.pth')
        if osp.isfile(ckpt):
            self.say('supernet: published.pth exists, skipped')
            return ckpt
        it = self.args.supernet_iters
        cmd = [
            'python', 'tools/train.py', SUPERNET_CFG, '--work-dir', wd, '--cfg-options', f'train_cfg.max_iters={it}',
            f'train_cfg.val_interval={it}', f'param_scheduler.0.T_max={it}', f'param_scheduler.0.end={it}',
            'default_hooks.checkpoint.interval=200'
        ]
        if osp.isfile(osp.join(wd, 'last_checkpoint')):
            cmd.insert(3, '--resume')
        self.run('supernet', cmd)
        return ckpt

    def search(self, supernet):
        wd = osp.join(self.wd, 'search')
        opts = [
            f'train_cfg.population_size={self.args.population}', f'train_cfg.max_generations={self.args.generations}'
        ]
        state = osp.join(wd, 'search_state.json')
        if osp.isfile(state):
            with open(state) as f:
                if json.load(f)['generation'] >= self.args.generations:
                    self.say('search: finished, skipped')
                    return osp.join(wd, 'pareto.json')
        cmd = ['python', 'tools/search.py', SEARCH_CFG, supernet, '--work-dir', wd, '--cfg-options', *opts]
        if osp.isfile(state):
            cmd.insert(5, '--resume')
        self.run('search', cmd)
        shutil.copyfile(osp.join(wd, 'pareto.png'), osp.join(self.wd, 'pareto.png'))
        return osp.join(wd, 'pareto.json')

    def pick_subnets(self, pareto):
        from nasbnn_mm.space.pareto import load_pareto
        front = load_pareto(pareto)['front']
        best = max(front, key=lambda r: (r['acc'], -r['ops']))
        # the cheapest front entry within 5 points of the best, else the cheapest one
        cheap = min((r for r in front if r['acc'] >= best['acc'] - 5 and r is not best),
                    key=lambda r: r['ops'],
                    default=min(front, key=lambda r: r['ops']))
        return [best] if cheap is best else [cheap, best]

    def export(self, supernet, pareto, rec):
        out = osp.join(self.wd, 'export', f'ops{rec["bin"]:g}')
        if not osp.isfile(osp.join(out, 'subnet.pth')):
            self.run(f'export_ops{rec["bin"]:g}', [
                'python', 'tools/export_subnet.py', SEARCH_CFG, supernet, '--arch', pareto, '--ops',
                str(rec['bin']), '--out-dir', out, '--packed', '--cfg-options',
                f'train_cfg.population_size={self.args.population}'
            ])
        return out

    def test_cls(self, name, cfg, ckpt, out_json):
        if not osp.isfile(out_json):
            self.run(name, [
                'python', 'tools/test.py', cfg, ckpt, '--work-dir',
                osp.join(self.wd, 'tests', name), '--out', out_json
            ])
        with open(out_json) as f:
            return json.load(f)['accuracy/top1']

    def finetune(self, export_dir):
        wd = osp.join(export_dir, 'finetune')
        ckpt = osp.join(wd, 'published.pth')
        if not osp.isfile(ckpt):
            it = self.args.finetune_iters
            self.run(f'finetune_{osp.basename(export_dir)}', [
                'python', 'tools/train.py',
                osp.join(export_dir,
                         'subnet_finetune.py'), '--work-dir', wd, '--cfg-options', f'train_cfg.max_iters={it}',
                f'train_cfg.val_interval={it + 1}', f'param_scheduler.0.T_max={it}', f'param_scheduler.0.end={it}'
            ])
        return ckpt

    def detector(self, supernet, arch):
        wd = osp.join(self.wd, 'detector')
        os.makedirs(wd, exist_ok=True)
        cfg = osp.join(wd, 'detector_config.py')
        # the searched architecture and its FPN channels, on top of the CPU detector config
        from nasbnn_mm.utils.checkpoint import atomic_write_text
        atomic_write_text(
            cfg, '\n'.join([
                '# generated by tools/demo.py: the CPU detector with a searched backbone',
                f"_base_ = [{osp.join(ROOT, DET_CFG)!r}]", 'from nasbnn_mm.det import fpn_in_channels  # noqa: E402',
                f'arch = {arch!r}', f"model = dict(backbone=dict(arch=arch, init_cfg=dict(checkpoint={supernet!r})),",
                '             neck=dict(in_channels=fpn_in_channels(_base_.model.backbone, arch=arch)))',
                f"metainfo = dict(classes=({self.args.det_class!r}, ))",
                'train_dataloader = dict(dataset=dict(metainfo=metainfo))',
                'val_dataloader = dict(dataset=dict(metainfo=metainfo))',
                'test_dataloader = dict(dataset=dict(metainfo=metainfo))', ''
            ]))
        ckpt = osp.join(wd, 'published.pth')
        it = self.args.det_iters
        if not osp.isfile(ckpt):
            cmd = [
                'python', 'tools/train.py', cfg, '--work-dir', wd, '--cfg-options', f'train_cfg.max_iters={it}',
                f'train_cfg.val_interval={it + 1}', f'param_scheduler.1.T_max={it}', f'param_scheduler.1.end={it}'
            ]
            if osp.isfile(osp.join(wd, 'last_checkpoint')):
                cmd.insert(3, '--resume')
            self.run('detector_train', cmd)
        out_json = osp.join(wd, 'val_metrics.json')
        if not osp.isfile(out_json):
            self.run('detector_test', [
                'python', 'tools/test.py', cfg, ckpt, '--work-dir',
                osp.join(wd, 'test'), '--out', out_json, '--show-dir',
                osp.join(wd, 'pictures'), '--show-num',
                str(PICTURES), '--show-score-thr',
                str(PICTURE_SCORE_THR)
            ])
        with open(out_json) as f:
            return json.load(f)

    def runtime(self, export_dir):
        """The exported subnet on the 1-bit runtime: one CIFAR-10 test image per class through
        tools/infer.py, timed against the float deployed model (logits compared bitwise)."""
        out_json = osp.join(export_dir, 'runtime.json')
        if not osp.isfile(out_json):
            from nasbnn_mm.datasets import extract_archive
            root = osp.join(extract_archive(osp.join(self.data, 'cifar10_jpg.tar.gz')), 'test')
            imgs = osp.join(self.wd, 'runtime_images')
            os.makedirs(imgs, exist_ok=True)
            for cls in sorted(os.listdir(root)):
                first = sorted(os.listdir(osp.join(root, cls)))[0]
                shutil.copyfile(osp.join(root, cls, first), osp.join(imgs, f'{cls}_{first}'))
            self.run(f'runtime_{osp.basename(export_dir)}', [
                'python', 'tools/infer.py',
                osp.join(export_dir, 'subnet_packed.pth'), imgs, '--topk', '1', '--compare-float', '--out', out_json
            ])
        with open(out_json) as f:
            return json.load(f)['comparison']

    def main(self):
        self.check_data()
        self.say(f'work dir {self.wd}, data {self.data}')
        self.split()
        supernet = self.supernet()
        pareto = self.search(supernet)
        rows = []
        for rec in self.pick_subnets(pareto):
            exp = self.export(supernet, pareto, rec)
            cfg = osp.join(exp, 'subnet_test.py')
            p1 = self.test_cls(f'p1_ops{rec["bin"]:g}', cfg, osp.join(exp, 'subnet.pth'), osp.join(exp, 'p1.json'))
            ft = self.finetune(exp)
            p2 = self.test_cls(f'p2_ops{rec["bin"]:g}', cfg, ft, osp.join(exp, 'p2.json'))
            rt = self.runtime(exp)
            rows.append(
                dict(
                    arch=rec['arch'],
                    ops_m=rec['ops'],
                    search_heldout_top1=rec['acc'],
                    p1_top1=p1,
                    p2_top1=p2,
                    runtime_ms=rt['runtime_ms'],
                    float_ms=rt['float_ms'],
                    runtime_equal=rt['equal']))
        best = max(rows, key=lambda r: r['p1_top1'])
        det = self.detector(supernet, best['arch'])
        best['det_bbox_mAP'] = det.get('coco/bbox_mAP')
        best['det_bbox_mAP_50'] = det.get('coco/bbox_mAP_50')
        self.write_summary(rows, det)

    def _log(self, name):
        path = osp.join(self.logs, f'{name}.log')
        if not osp.isfile(path):
            return ''
        with open(path, errors='replace') as f:
            return f.read()

    def learning_evidence(self, det):
        """What shows that the stages learn: training loss first -> last logged iteration, the
        supernet's largest/smallest subnets on the test set against chance, the detector's mAP."""
        ev = {}
        for name in ('supernet', 'detector_train'):
            losses = [float(m.group(1)) for m in _TRAIN_LOSS.finditer(self._log(name))]
            if losses:
                ev[name] = dict(loss_first=losses[0], loss_last=losses[-1])
        for m in _SUBNET_VAL.finditer(self._log('supernet')):
            ev.setdefault('supernet', {})[f'{m.group(1)}_test_top1'] = float(m.group(3))
        lines = []
        sn = ev.get('supernet', {})
        if 'loss_first' in sn:
            lines.append(f"* supernet ({self.args.supernet_iters} iterations): summed sandwich loss "
                         f"{sn['loss_first']:.2f} -> {sn['loss_last']:.2f}" +
                         (f"; CIFAR-10 test top-1 of the largest subnet {sn['largest_test_top1']:.2f} %, smallest "
                          f"{sn['smallest_test_top1']:.2f} % (chance 10 %)" if 'smallest_test_top1' in sn else ''))
        dt = ev.get('detector_train', {})
        if 'loss_first' in dt:
            lines.append(
                f"* detector ({self.args.det_iters} iterations, class `{self.args.det_class}`): loss "
                f"{dt['loss_first']:.2f} -> {dt['loss_last']:.2f}; coco_small val bbox mAP "
                f"{det.get('coco/bbox_mAP', float('nan')):.3f}, mAP@50 {det.get('coco/bbox_mAP_50', float('nan')):.3f}")
        return ev, lines

    def write_summary(self, rows, det):
        from nasbnn_mm.utils.checkpoint import atomic_write_text
        lines = [
            '| subnet | OPs (M) | search top-1 (held-out) | pipeline 1 top-1 | pipeline 2 top-1 | detector bbox mAP '
            f'({self.args.det_class}, coco_small val) |', '|---|---|---|---|---|---|'
        ]
        for r in rows:
            m = r.get('det_bbox_mAP')
            arch = r['arch'].replace('|', '\\|')  # a bare | would split the markdown table cell
            lines.append(f'| `{arch}` | {r["ops_m"]:.3f} | {r["search_heldout_top1"]:.2f} | {r["p1_top1"]:.2f} | '
                         f'{r["p2_top1"]:.2f} | {"—" if m is None else f"{m:.3f}"} |')
        lines += [
            '',
            '1-bit runtime (`tools/infer.py --compare-float`, batch 8 of CIFAR-10 test images, median of 20 calls):',
            '', '| subnet OPs (M) | runtime ms | float deployed ms | speed-up | logits |', '|---|---|---|---|---|'
        ]
        for r in rows:
            if 'runtime_ms' in r:
                lines.append(
                    f'| {r["ops_m"]:.3f} | {r["runtime_ms"]:.2f} | {r["float_ms"]:.2f} | '
                    f'{r["float_ms"] / r["runtime_ms"]:.2f}x | {"equal" if r["runtime_equal"] else "DIFFER"} |')
        evidence, ev_lines = self.learning_evidence(det)
        pictures = osp.join(self.wd, 'detector', 'pictures')
        if osp.isdir(pictures):
            ev_lines += [
                '', f'Detector on the first {PICTURES} coco_small val images with a ground-truth box (ground truth '
                f'left, predictions with score >= {PICTURE_SCORE_THR} right; mmdet DetLocalVisualizer):', ''
            ]
            ev_lines += [f'![{f}](detector/pictures/{f})' for f in sorted(os.listdir(pictures))]
        wall = time.time() - self.t0
        text = '\n'.join([
            '# NAS-BNN demo summary', '', *lines, '', *ev_lines, '',
            f'Wall time of this run: {wall / 60:.1f} min. Pareto plot: pareto.png. Logs: logs/.', ''
        ])
        atomic_write_text(osp.join(self.wd, 'summary.md'), text)
        atomic_write_text(
            osp.join(self.wd, 'summary.json'),
            json.dumps(dict(rows=rows, detector=det, learning=evidence, wall_s=wall), indent=1))
        print(text)


# total loss of a logged training iteration ("... loss: 7.66  loss_rpn_cls: ..."), and the supernet's
# per-subnet test accuracy lines of nasbnn.SubnetValLoop
_TRAIN_LOSS = re.compile(r'Iter\(train\) \[\s*\d+/\d+\].*?\sloss: ([0-9.]+)')
_SUBNET_VAL = re.compile(r'\[val\] subnet (largest|smallest) \(([0-9.]+)M OPs\): accuracy/top1: ([0-9.]+)')

if __name__ == '__main__':
    sys.path.insert(0, ROOT)
    Demo(parse_args()).main()
