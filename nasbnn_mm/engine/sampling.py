"""The paper's Fig. 3 protocol: N random subnets of a trained supernet, each BN-recalibrated and
evaluated with inherited weights; the comparison of runs (Fig. 3a-c views with paired
statistics), the training-accuracy curves (Fig. 3d) and the rank correlation of two scorings.

:class:`SubnetSamplingLoop` is a runner train loop like the search (``tools/sample_subnets.py``
builds it from a search config: the same held-out split, calibration batches and metric), with an
atomic JSON state after every ``save_interval`` subnets, so a killed run resumes.
"""
from __future__ import annotations
import json
import os
import os.path as osp
import random
import statistics
import time
from typing import Dict, List, Optional, Sequence

from mmengine.dist import broadcast_object_list, get_rank, is_main_process
from mmengine.model import is_model_wrapper
from mmengine.runner import BaseLoop

from ..registry import LOOPS
from ..space import Architecture, count_ops
from ..utils.checkpoint import atomic_write_text
from ..utils.stats import bootstrap_ci, paired_difference, rank_correlation
from .search_loop import evaluate_subnet

__all__ = ['SubnetSamplingLoop', 'draw_subnets', 'compare_samples', 'plot_samples', 'training_curves', 'load_samples']


def draw_subnets(space, num: int, seed: int = 0, nd: bool = True) -> List[Architecture]:
    """``num`` distinct random subnets (the same for every run with the same space, seed and ``nd``)."""
    sp = space.with_nd(nd)
    rng = random.Random(f'nasbnn-samples/{seed}')
    out, seen = [], set()
    for _ in range(num * 100):
        a = sp.sample(rng)
        if a.to_text() not in seen:
            seen.add(a.to_text())
            out.append(a)
        if len(out) == num:
            break
    return out


@LOOPS.register_module()
class SubnetSamplingLoop(BaseLoop):
    """Evaluate ``num`` random subnets of the supernet (Fig. 3 of the paper), resumable.

    Args:
        runner, dataloader: the runner; the held-out split (its train dataloader).
        evaluator, calib_dataloader, calib_batches: as :class:`EvolutionParetoSearchLoop`.
        num: subnets to draw.
        nd: draw them under the Non-Decreasing constraint.
        seed: seed of the draw (the same subnets for every supernet) and of the calibration batches.
        img_size, num_classes: at which the OPs are counted.
        score_key: the metric recorded.
        save_interval: write the state every this many subnets.
        resume: continue from ``work_dir/samples_state.json``; a larger ``num`` than the saved run's
            evaluates the further subnets of the same draw (the first ones are those already evaluated).
    """

    def __init__(self,
                 runner,
                 dataloader,
                 evaluator,
                 calib_dataloader,
                 calib_batches: int = 10,
                 num: int = 200,
                 nd: bool = True,
                 seed: int = 0,
                 img_size=224,
                 num_classes: Optional[int] = None,
                 score_key: str = 'accuracy/top1',
                 save_interval: int = 10,
                 resume: bool = False,
                 **unused):
        super().__init__(runner, dataloader)
        if isinstance(num, bool) or not isinstance(num, int) or num < 1:
            raise ValueError(f'num: {num!r} not allowed (allowed: an int >= 1)')
        if not isinstance(nd, bool):
            raise ValueError(f'nd: {nd!r} not allowed (allowed: True, False)')
        self.evaluator = runner.build_evaluator(evaluator)
        self.calib_dataloader = runner.build_dataloader(calib_dataloader, seed=seed) \
            if isinstance(calib_dataloader, dict) else calib_dataloader
        self.calib_batches, self.num, self.nd, self.seed = calib_batches, num, nd, seed
        self.img_size, self.score_key, self.save_interval, self.resume = img_size, score_key, save_interval, resume
        core = self.core
        self.num_classes = num_classes or getattr(core.head, 'num_classes', 1000)
        self.state_path = osp.join(runner.work_dir, 'samples_state.json')
        self.results: Dict[str, dict] = {}

    @property
    def core(self):
        m = self.runner.model
        return m.module if is_model_wrapper(m) else m

    # what the runner's hooks read from a train loop
    epoch = property(lambda self: 0)
    max_epochs = property(lambda self: 1)
    iter = property(lambda self: len(self.results))
    max_iters = property(lambda self: self.num)

    def settings(self) -> dict:
        return dict(
            num=self.num,
            nd=self.nd,
            seed=self.seed,
            calib_batches=self.calib_batches,
            img_size=self.img_size if isinstance(self.img_size, int) else list(self.img_size),
            search_space=self.core.space.to_dict())

    def _save(self) -> None:
        if is_main_process():
            atomic_write_text(self.state_path, json.dumps(dict(settings=self.settings(), results=self.results)))
            atomic_write_text(osp.join(self.runner.work_dir, 'samples.json'), json.dumps(self.outputs(), indent=1))

    def outputs(self) -> dict:
        rows = [dict(arch=t, **r) for t, r in self.results.items()]
        return dict(samples=rows, score=self.score_key, **self.settings())

    def run(self) -> dict:
        self.runner.call_hook('before_train')
        if self.resume and osp.isfile(self.state_path):
            with open(self.state_path) as f:
                state = json.load(f)
            saved, ours = dict(state.get('settings') or {}), self.settings()
            saved_num = saved.pop('num', None)
            ours.pop('num')
            # more subnets may be asked for (the draw's first ones are the saved ones); nothing else may change
            if saved != ours or not isinstance(saved_num, int) or saved_num > self.num:
                raise ValueError(f'sample_subnets: --resume with other settings than {self.state_path} '
                                 f'(allowed: the same settings, --num >= {saved_num}); use a new work dir')
            self.results = state['results']
        core = self.core
        space = core.space
        archs = draw_subnets(space, self.num, self.seed, self.nd)
        archs = self._broadcast([a.to_text() for a in archs] if get_rank() == 0 else [])
        core.backbone.space = space.with_nd(False) if not self.nd else space  # allow non-ND subnets
        self.runner.call_hook('before_train_epoch')
        t0, done = time.time(), 0
        try:
            for i, text in enumerate(archs):
                if text in self.results:
                    continue
                arch = Architecture.from_text(text)
                metrics = evaluate_subnet(self.runner.model, arch, self.dataloader, self.evaluator,
                                          self.calib_dataloader, self.calib_batches, self.seed, self.score_key)
                self.results[text] = dict(
                    ops=count_ops(arch, self.img_size, self.num_classes, space=space) / 1e6,
                    acc=float(metrics[self.score_key]))
                done += 1
                if done % self.save_interval == 0:
                    self._save()
                eta = (time.time() - t0) / done * (self.num - len(self.results))
                self.runner.logger.info(f'[samples] {len(self.results)}/{self.num}: {self.results[text]["ops"]:.3f}M '
                                        f'OPs, top-1 {self.results[text]["acc"]:.2f} | eta '
                                        f'{time.strftime("%H:%M:%S", time.gmtime(eta))}')
        finally:
            core.backbone.space = space
        self._save()
        self.runner.call_hook('after_train_epoch')
        self.runner.call_hook('after_train')
        return self.outputs()

    def _broadcast(self, texts: List[str]) -> List[str]:
        obj = [texts]
        broadcast_object_list(obj, src=0)
        return obj[0]


# ----------------------------------------------------------------------------- comparison (Fig. 3)
def load_samples(path: str) -> dict:
    """A ``samples.json`` of :class:`SubnetSamplingLoop` (one-line errors)."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'samples: no such file {path!r}')
    try:
        with open(path) as f:
            data = json.load(f)
    except ValueError as e:
        raise ValueError(f'samples: {path} is not JSON ({str(e).splitlines()[0]})') from None
    if not isinstance(data, dict) or not isinstance(data.get('samples'), list):
        raise ValueError(f"samples: {path} has no 'samples' list (write it with tools/sample_subnets.py)")
    return data


def compare_samples(paths: Sequence[str], labels: Optional[Sequence[str]] = None, baseline: int = 0) -> dict:
    """Per run: mean / median top-1 with a bootstrap 95 % interval of the mean; per run against the
    baseline (``paths[baseline]``): the paired difference over the subnets both evaluated."""
    labels = list(labels) if labels else [osp.basename(osp.dirname(osp.abspath(p))) or p for p in paths]
    if len(labels) != len(paths):
        raise ValueError(f'--labels: {len(labels)} given for {len(paths)} runs (allowed: one per run)')
    runs = [{r['arch']: r for r in load_samples(p)['samples']} for p in paths]
    rows = []
    for label, run in zip(labels, runs):
        accs = [r['acc'] for r in run.values()]
        lo, hi = bootstrap_ci(accs)
        row = dict(run=label, n=len(accs), mean=statistics.fmean(accs), median=statistics.median(accs), ci=(lo, hi))
        common = [a for a in runs[baseline] if a in run]
        if run is not runs[baseline] and len(common) >= 2:
            row['vs_baseline'] = paired_difference([runs[baseline][a]['acc'] for a in common],
                                                   [run[a]['acc'] for a in common])
        rows.append(row)
    return dict(rows=rows, baseline=labels[baseline])


def plot_samples(paths: Sequence[str],
                 out: str,
                 labels: Optional[Sequence[str]] = None,
                 title: str = 'Random subnets with inherited weights') -> str:
    """The paper's Fig. 3 view: accuracy vs OPs (one colour per run) and the sorted-accuracy curve."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    labels = list(labels) if labels else [osp.basename(osp.dirname(osp.abspath(p))) for p in paths]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=110)
    for label, path in zip(labels, paths):
        rows = load_samples(path)['samples']
        ax1.scatter([r['ops'] for r in rows], [r['acc'] for r in rows], s=7, alpha=0.6, label=label)
        accs = sorted((r['acc'] for r in rows), reverse=True)
        ax2.plot(range(1, len(accs) + 1), accs, lw=1.4, label=f'{label} (mean {statistics.fmean(accs):.2f})')
    ax1.set_xlabel('OPs (M)')
    ax1.set_ylabel('top-1 (%)')
    ax1.set_title('accuracy vs OPs')
    ax2.set_xlabel('subnets, sorted by accuracy')
    ax2.set_ylabel('top-1 (%)')
    ax2.set_title('sorted accuracy')
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    tmp = out + '.tmp.png'
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, out)
    return out


def training_curves(run_dirs: Sequence[str],
                    out: str,
                    key: str = 'acc_students',
                    labels=None,
                    smooth: int = 50) -> dict:
    """The paper's Fig. 3d view: a training-log scalar (mmengine's ``vis_data/scalars.json`` of each run)
    against the iteration, smoothed with a running mean; returns the last smoothed value per run."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    labels = list(labels) if labels else [osp.basename(osp.abspath(d)) for d in run_dirs]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    last = {}
    for label, d in zip(labels, run_dirs):
        files = sorted(
            osp.join(root, f) for root, _, fs in os.walk(d) for f in fs if f == 'scalars.json' and 'vis_data' in root)
        if not files:
            raise FileNotFoundError(f'training log: no vis_data/scalars.json under {d!r}')
        points = []
        with open(files[-1]) as f:
            for line in f:
                rec = json.loads(line)
                if key in rec and 'iter' in rec:
                    points.append((rec['iter'], rec[key]))
        if not points:
            raise ValueError(f'training log: {files[-1]} has no {key!r} (allowed keys: what the run logged)')
        its = [p[0] for p in points]
        vals = [p[1] for p in points]
        sm = [statistics.fmean(vals[max(0, i - smooth + 1):i + 1]) for i in range(len(vals))]
        ax.plot(its, sm, lw=1.3, label=label)
        last[label] = sm[-1]
    ax.set_xlabel('iteration')
    ax.set_ylabel(key)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = out + '.tmp.png'
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, out)
    return last


def correlate(a: Dict[str, float], b: Dict[str, float]) -> dict:
    """Rank correlation of two scorings of the same subnets (keys: architecture texts)."""
    common = [k for k in a if k in b]
    return rank_correlation([a[k] for k in common], [b[k] for k in common])
