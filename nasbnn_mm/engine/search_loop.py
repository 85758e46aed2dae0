"""Evolutionary search of the accuracy / OPs Pareto front of a trained supernet.

Algorithm (paper + authors' release, with ND-safe operators):
  * initial population of ``population_size`` candidates: the largest and smallest subnets
    when their OPs are inside the window ``ops_range``, the rest drawn at random under ND
    inside the window;
  * every generation makes ``num_mutation`` mutants (each decision re-drawn with probability
    ``mutate_prob``) and ``num_crossover`` crossovers, parents drawn uniformly from the bins
    of the current front; candidates outside the window or already evaluated are skipped;
  * the front keeps the best accuracy per OPs bin of width ``ops_step`` (bin = the multiple
    of ``ops_step`` nearest to the OPs, in M).
Each candidate is scored by BN recalibration on ``calib_batches`` training batches (the same
seeded batches for every candidate) followed by top-1 on the held-out split.

The loop is the runner's train loop of a search config (``train_cfg=dict(type=
'nasbnn.EvolutionParetoSearchLoop', ...)``, ``train_dataloader`` = the held-out split, the
supernet checkpoint as ``load_from``; ``tools/search.py`` runs ``runner.train()``), and it calls
the runner's hooks like a training loop whose epochs are generations: ``before_train``,
``before_train_epoch`` / ``after_train_epoch`` around every generation (generation 0 is the
initial population; a hook reads ``runner.train_loop.front_records()``), ``after_train``.

Distributed: candidates are drawn on rank 0 and broadcast; every rank recalibrates on the
same calibration batches and evaluates a shard of the held-out data; the metric gathers the
shards. After every generation the whole state (cache, front, RNG state) is written
atomically as JSON (``search_state.json``); with ``resume=True`` (``tools/search.py --resume``)
the loop continues from it and ends with the same front -- the search's equivalent of the
runner's checkpoint resume (a generation's state is a few KB of JSON, not a model).
"""
from __future__ import annotations
import json
import math
import os
import os.path as osp
import random
import time
from typing import Dict, List, Optional, Sequence

import torch
from mmengine.dist import broadcast_object_list, get_rank, is_main_process
from mmengine.model import is_model_wrapper
from mmengine.runner import BaseLoop

from ..ops import BINARY
from ..registry import LOOPS
from ..space import PRESET_TEXTS, Architecture, count_ops, crossover, mutate
from ..space.pareto import non_dominated
from ..utils.checkpoint import atomic_write_text
from .bn_recalibration import recalibrate_bn

__all__ = ['EvolutionParetoSearchLoop', 'evaluate_subnet', 'plot_pareto', 'reseed']


def reseed(seed: int) -> None:
    """Seed Python, torch and numpy (the calibration batches' shuffling and augmentations)."""
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np
        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover
        pass


@torch.no_grad()
def evaluate_subnet(model,
                    arch,
                    dataloader,
                    evaluator,
                    calib_dataloader=None,
                    calib_batches: int = 0,
                    calib_seed: int = 0,
                    score_key: str = 'accuracy/top1') -> Dict[str, float]:
    """BN-recalibrate ``arch`` inside ``model`` (a supernet classifier, or a static subnet
    classifier when ``arch`` is None) on seeded calibration batches, then evaluate it. The
    model's BN statistics are left recalibrated; callers that need the supernet unchanged use
    :func:`recalibrated_bn`."""
    core = model.module if is_model_wrapper(model) else model
    if arch is not None:
        core.set_subnet(arch, BINARY)
    if calib_dataloader is not None and calib_batches > 0:
        reseed(calib_seed)  # same images and augmentations for every candidate and every run
        recalibrate_bn(core, calib_dataloader, calib_batches)
    core.eval()
    for batch in dataloader:
        evaluator.process(data_samples=core.val_step(batch), data_batch=batch)
    metrics = evaluator.evaluate(len(dataloader.dataset))
    if score_key not in metrics:
        raise KeyError(f'search: metric {score_key!r} not produced (got: {", ".join(metrics)})')
    return metrics


def _bin(ops_m: float, step: float) -> float:
    """The multiple of ``step`` nearest to ``ops_m`` (half up), rounded to remove float noise."""
    return round(math.floor(ops_m / step + 0.5) * step, 9)


@LOOPS.register_module()
class EvolutionParetoSearchLoop(BaseLoop):
    """Multi-objective (accuracy vs OPs) evolutionary search, run by ``tools/search.py``.

    Args:
        runner: the runner holding the supernet classifier.
        dataloader: held-out split (scores candidates).
        evaluator: metric config, e.g. ``dict(type='mmpretrain.Accuracy', topk=(1,))``.
        calib_dataloader: training batches for BN recalibration (use
            ``sampler=dict(type='nasbnn.UnshardedSampler')`` so every rank sees the same batches).
        calib_batches: number of calibration batches per candidate.
        population_size, max_generations, num_mutation, num_crossover, mutate_prob: evolution.
        ops_range: (min, max) OPs window in M; ops_step: bin width in M.
        img_size, num_classes: at which the OPs are counted.
        seed: seed of the search (candidates, calibration batches).
        score_key: the metric maximised.
        max_draws: draws per wanted candidate before giving up on finding new ones.
        resume: continue from ``work_dir/search_state.json`` (written after every generation).
    """

    def __init__(self,
                 runner,
                 dataloader,
                 evaluator,
                 calib_dataloader,
                 calib_batches: int = 10,
                 population_size: int = 512,
                 max_generations: int = 20,
                 num_mutation: int = 128,
                 num_crossover: int = 128,
                 mutate_prob: float = 0.2,
                 ops_range: Sequence[float] = (20, 180),
                 ops_step: float = 2,
                 img_size=224,
                 num_classes: Optional[int] = None,
                 seed: int = 0,
                 score_key: str = 'accuracy/top1',
                 max_draws: int = 100,
                 resume: bool = False):
        super().__init__(runner, dataloader)
        self.resume = bool(resume)
        self.evaluator = runner.build_evaluator(evaluator)
        self.calib_dataloader = runner.build_dataloader(calib_dataloader, seed=seed) \
            if isinstance(calib_dataloader, dict) else calib_dataloader
        self.calib_batches = calib_batches
        self.population_size, self.max_generations = population_size, max_generations
        self.num_mutation, self.num_crossover, self.mutate_prob = num_mutation, num_crossover, mutate_prob
        lo, hi = ops_range
        if not lo < hi:
            raise ValueError(f'search: ops_range must be (min, max) with min < max, got {tuple(ops_range)}')
        self.ops_min, self.ops_max, self.ops_step = float(lo), float(hi), float(ops_step)
        self.img_size = img_size
        core = self.core
        self.num_classes = num_classes or getattr(core.head, 'num_classes', 1000)
        self.space = core.space
        self.seed, self.score_key, self.max_draws = seed, score_key, max_draws
        self.state_path = osp.join(runner.work_dir, 'search_state.json')
        self.rng = random.Random(seed)
        self.cache: Dict[str, dict] = {}  # arch text -> {'ops', 'acc', 'generation'}
        self.front: Dict[float, str] = {}  # bin (M) -> arch text
        self.generation = -1  # last completed generation (0 = initial population)
        self._t0 = None
        self._evaluated_this_run = 0

    @property
    def core(self):
        m = self.runner.model
        return m.module if is_model_wrapper(m) else m

    # ------------------------------------------------------------------ bookkeeping
    def ops_m(self, arch: Architecture) -> float:
        return count_ops(arch, self.img_size, self.num_classes, space=self.space) / 1e6

    def in_window(self, ops_m: float) -> bool:
        return self.ops_min <= ops_m <= self.ops_max

    def update_front(self, text: str) -> None:
        rec = self.cache[text]
        if not self.in_window(rec['ops']):
            return
        b = _bin(rec['ops'], self.ops_step)
        cur = self.front.get(b)
        if cur is None or rec['acc'] > self.cache[cur]['acc']:
            self.front[b] = text

    def state_dict(self) -> dict:
        rng = self.rng.getstate()
        return dict(
            version=1,
            seed=self.seed,
            generation=self.generation,
            cache=self.cache,
            front={
                repr(k): v
                for k, v in self.front.items()
            },
            rng_state=[rng[0], list(rng[1]), rng[2]],
            settings=self.settings())

    def load_state_dict(self, state: dict) -> None:
        saved, now = dict(state.get('settings', {})), self.settings()
        # more generations may be asked for on resume (extending a search); nothing else may change
        saved.pop('max_generations', None)
        now.pop('max_generations', None)
        if saved != now:
            diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
            raise ValueError(f'search: --resume with settings that differ from the saved state in {self.state_path}: '
                             f'{", ".join(diff)}; use a new work dir or restore them')
        self.generation = int(state['generation'])
        self.cache = state['cache']
        self.front = {float(k): v for k, v in state['front'].items()}
        v, internal, gauss = state['rng_state']
        self.rng.setstate((v, tuple(internal), gauss))

    def settings(self) -> dict:
        return dict(
            population_size=self.population_size,
            max_generations=self.max_generations,
            num_mutation=self.num_mutation,
            num_crossover=self.num_crossover,
            mutate_prob=self.mutate_prob,
            ops_range=[self.ops_min, self.ops_max],
            ops_step=self.ops_step,
            img_size=self.img_size if isinstance(self.img_size, int) else list(self.img_size),
            num_classes=self.num_classes,
            seed=self.seed,
            calib_batches=self.calib_batches,
            search_space=self.space.to_dict())

    # ------------------------------------------------------------------ candidates
    def _draw(self, make, n: int) -> List[str]:
        """Up to ``n`` new architectures (in the window, not evaluated) from ``make()``."""
        out: List[str] = []
        seen = set(self.cache)
        tries = 0
        while len(out) < n and tries < n * self.max_draws:
            tries += 1
            arch = make()
            text = arch.to_text()
            if text in seen or not self.in_window(self.ops_m(arch)):
                continue
            seen.add(text)
            out.append(text)
        if len(out) < n:
            self.runner.logger.warning(f'search: only {len(out)} of {n} new candidates found after {tries} draws')
        return out

    def _broadcast(self, texts: List[str]) -> List[str]:
        obj = [texts]
        broadcast_object_list(obj, src=0)
        return obj[0]

    def initial_population(self) -> List[str]:
        first = [a for a in (self.space.largest(), self.space.smallest()) if self.in_window(self.ops_m(a))]
        texts = [a.to_text() for a in first]
        texts += self._draw(lambda: self.space.sample(self.rng), self.population_size - len(texts))
        return texts

    def next_generation(self) -> List[str]:
        parents = [Architecture.from_text(t) for _, t in sorted(self.front.items())]
        if not parents:
            raise RuntimeError('search: the front is empty: no candidate inside the OPs window '
                               f'[{self.ops_min}, {self.ops_max}] M')
        mutants = self._draw(lambda: mutate(self.space, self.rng.choice(parents), self.mutate_prob, self.rng),
                             self.num_mutation)
        pending = set(mutants)
        crosses = []
        while len(crosses) < self.num_crossover:
            got = self._draw(
                lambda: crossover(self.space, self.rng.choice(parents), self.rng.choice(parents), self.rng), 1)
            if not got:
                break
            if got[0] not in pending:
                pending.add(got[0])
                crosses.append(got[0])
        return mutants + crosses

    # ------------------------------------------------------------------ evaluation
    def evaluate_candidates(self, texts: List[str], generation: int, total_left: int) -> None:
        for i, text in enumerate(texts):
            arch = Architecture.from_text(text)
            metrics = evaluate_subnet(self.runner.model, arch, self.dataloader, self.evaluator, self.calib_dataloader,
                                      self.calib_batches, self.seed, self.score_key)
            self.cache[text] = dict(ops=self.ops_m(arch), acc=float(metrics[self.score_key]), generation=generation)
            self.update_front(text)
            self._evaluated_this_run += 1
            done = self._evaluated_this_run
            rate = (time.time() - self._t0) / done
            eta = rate * (total_left - done)
            self.runner.logger.info(f'[search] gen {generation}/{self.max_generations} cand {i + 1}/{len(texts)}: '
                                    f'{self.cache[text]["ops"]:.2f}M OPs, top-1 {self.cache[text]["acc"]:.2f} '
                                    f'| front {len(self.front)} bins'
                                    f' | eta {time.strftime("%H:%M:%S", time.gmtime(max(eta, 0)))}')

    def _expected_left(self) -> int:
        init = 0 if self.generation >= 0 else self.population_size
        return init + (self.max_generations - max(self.generation, 0)) * (self.num_mutation + self.num_crossover)

    def save(self) -> None:
        if is_main_process():
            atomic_write_text(self.state_path, json.dumps(self.state_dict()))
            self.write_outputs()

    # ------------------------------------------------------------------ the loop
    # what the runner and its hooks read from a train loop: a generation is an epoch, a candidate
    # evaluation an iteration
    @property
    def epoch(self) -> int:
        return max(self.generation, 0)

    @property
    def max_epochs(self) -> int:
        return self.max_generations

    @property
    def iter(self) -> int:
        return len(self.cache)

    @property
    def max_iters(self) -> int:
        return self.population_size + self.max_generations * (self.num_mutation + self.num_crossover)

    def _load_state(self) -> None:
        if not osp.isfile(self.state_path):
            raise FileNotFoundError(f'search: --resume but no state at {self.state_path}')
        with open(self.state_path) as f:
            self.load_state_dict(json.load(f))
        self.runner.logger.info(f'[search] resumed after generation {self.generation} '
                                f'({len(self.cache)} candidates evaluated)')

    def _generation(self, g: int, total_left: int) -> None:
        """Draw (rank 0), evaluate and record generation ``g`` (0: the initial population)."""
        self.runner.call_hook('before_train_epoch')
        make = self.initial_population if g == 0 else self.next_generation
        texts = self._broadcast(make() if get_rank() == 0 else [])
        self.evaluate_candidates(texts, g, total_left)
        self.generation = g
        self.save()
        self.runner.message_hub.update_info('search/front_bins', len(self.front))
        self.runner.logger.info(f'[search] generation {g} done: {len(self.cache)} evaluated, '
                                f'front has {len(self.front)} bins')
        self.runner.call_hook('after_train_epoch')

    def run(self) -> dict:
        """Run (or continue) the search; returns the front records (OPs bin -> entry)."""
        self.runner.call_hook('before_train')
        if self.resume:
            self._load_state()
        self._t0 = time.time()
        total_left = self._expected_left()
        for g in range(self.generation + 1, self.max_generations + 1):
            self._generation(g, total_left)
        self.save()
        self.runner.call_hook('after_train')
        self.runner.logger.info(f'[search] Pareto front written to {osp.join(self.runner.work_dir, "pareto.json")}: '
                                f'{len(self.front)} bins')
        return self.front_records()

    # ------------------------------------------------------------------ outputs
    def front_records(self) -> dict:
        """Per OPs bin, the best candidate (the paper's front), each marked ``non_dominated`` when no
        evaluated candidate in the window has fewer OPs and a higher accuracy."""
        nd = {r['arch'] for r in self.non_dominated()}
        return {
            b: dict(bin=b, arch=t, ops=self.cache[t]['ops'], acc=self.cache[t]['acc'], non_dominated=t in nd)
            for b, t in sorted(self.front.items())
        }

    def non_dominated(self) -> List[dict]:
        """The non-dominated candidates in the OPs window (the monotone accuracy / OPs front)."""
        inside = [dict(arch=t, ops=r['ops'], acc=r['acc']) for t, r in self.cache.items() if self.in_window(r['ops'])]
        return non_dominated(inside)

    def write_outputs(self) -> None:
        wd = self.runner.work_dir
        front = list(self.front_records().values())
        meta = dict(
            ops_unit='M',
            score=self.score_key,
            img_size=self.settings()['img_size'],
            num_classes=self.num_classes,
            generation=self.generation,
            search_space=self.space.to_dict())
        atomic_write_text(
            osp.join(wd, 'pareto.json'),
            json.dumps(dict(front=front, non_dominated=self.non_dominated(), **meta), indent=1))
        cands = [dict(arch=t, **r) for t, r in self.cache.items()]
        atomic_write_text(osp.join(wd, 'candidates.json'), json.dumps(dict(candidates=cands, **meta), indent=1))
        plot_pareto(self.cache, front, osp.join(wd, 'pareto.png'), self.score_key, (self.ops_min, self.ops_max))


def plot_pareto(cache: Dict[str, dict],
                front: List[dict],
                path: str,
                score_key: str = 'accuracy/top1',
                window=None,
                labels: Optional[Dict[str, str]] = None) -> Optional[str]:
    """Accuracy vs OPs: every evaluated candidate (grey), the best per OPs bin (markers), the
    non-dominated front (the line; monotone), the presets A-F when evaluated and the ``labels``
    ({architecture text: name}, e.g. exported subnets) annotated."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    inside = [
        dict(arch=t, ops=r['ops'], acc=r['acc']) for t, r in cache.items()
        if not window or window[0] <= r['ops'] <= window[1]
    ]
    nd = non_dominated(inside)
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    ax.scatter([r['ops'] for r in cache.values()], [r['acc'] for r in cache.values()],
               s=9,
               c='0.75',
               label=f'candidates ({len(cache)})',
               zorder=1)
    if front:
        ax.scatter([r['ops'] for r in front], [r['acc'] for r in front],
                   s=22,
                   facecolors='none',
                   edgecolors='tab:blue',
                   label=f'best per OPs bin ({len(front)})',
                   zorder=2)
    if nd:
        ax.plot([r['ops'] for r in nd], [r['acc'] for r in nd],
                '-o',
                c='tab:red',
                ms=3.5,
                lw=1.5,
                label=f'non-dominated front ({len(nd)})',
                zorder=3)
    names = {Architecture.from_text(text).to_text(): f'NAS-BNN-{name}' for name, text in PRESET_TEXTS.items()}
    names.update(labels or {})
    for text, name in names.items():
        if text in cache:
            r = cache[text]
            ax.scatter([r['ops']], [r['acc']], marker='*', s=110, c='tab:green', zorder=4)
            ax.annotate(name, (r['ops'], r['acc']), textcoords='offset points', xytext=(5, -12), fontsize=8)
    if window:
        for x in window:
            ax.axvline(x, c='0.85', lw=0.8, ls='--')
    ax.set_xlabel('OPs (M)')
    ax.set_ylabel(score_key)
    ax.set_title('NAS-BNN search: accuracy vs OPs')
    ax.grid(alpha=0.3)
    ax.legend(loc='lower right', fontsize=8)
    fig.tight_layout()
    tmp = path + '.tmp.png'
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path
