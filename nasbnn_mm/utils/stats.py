"""Small statistics for comparing runs (pure Python, seeded): means, paired differences with
bootstrap intervals, rank correlations (Kendall's tau-b, Spearman's rho) with bootstrap intervals."""
from __future__ import annotations
import math
import random
import statistics
from typing import Callable, List, Sequence, Tuple

__all__ = ['bootstrap_ci', 'paired_difference', 'kendall_tau', 'spearman_rho', 'rank_correlation']


def bootstrap_ci(values: Sequence[float],
                 stat: Callable[[Sequence[float]], float] = statistics.fmean,
                 n: int = 2000,
                 level: float = 0.95,
                 seed: int = 0) -> Tuple[float, float]:
    """Percentile bootstrap interval of ``stat`` over ``values`` (resampled with replacement)."""
    if not values:
        raise ValueError('bootstrap_ci: no values')
    rng = random.Random(seed)
    k = len(values)
    reps = sorted(stat([values[rng.randrange(k)] for _ in range(k)]) for _ in range(n))
    lo = reps[int((1 - level) / 2 * (n - 1))]
    hi = reps[int((1 + level) / 2 * (n - 1))]
    return lo, hi


def paired_difference(a: Sequence[float], b: Sequence[float], seed: int = 0) -> dict:
    """Mean of ``b - a`` over pairs, with a bootstrap 95 % interval (and the median)."""
    if len(a) != len(b) or not a:
        raise ValueError(f'paired_difference: {len(a)} and {len(b)} values (allowed: equal, non-zero counts)')
    d = [y - x for x, y in zip(a, b)]
    lo, hi = bootstrap_ci(d, seed=seed)
    return dict(mean=statistics.fmean(d), median=statistics.median(d), ci=(lo, hi), n=len(d))


def _ranks(x: Sequence[float]) -> List[float]:
    """Ranks (1-based, ties averaged)."""
    order = sorted(range(len(x)), key=lambda i: x[i])
    ranks = [0.0] * len(x)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation of the ranks (ties averaged)."""
    rx, ry = _ranks(x), _ranks(y)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sx = math.sqrt(sum((a - mx)**2 for a in rx))
    sy = math.sqrt(sum((b - my)**2 for b in ry))
    return sxy / (sx * sy) if sx and sy else float('nan')


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (ties in either variable accounted for)."""
    conc = disc = tx = ty = 0
    n = len(x)
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                tx += 1
            elif dy == 0:
                ty += 1
            elif (dx > 0) == (dy > 0):
                conc += 1
            else:
                disc += 1
    denom = math.sqrt((conc + disc + tx) * (conc + disc + ty))
    return (conc - disc) / denom if denom else float('nan')


def rank_correlation(x: Sequence[float], y: Sequence[float], n: int = 2000, seed: int = 0) -> dict:
    """Kendall's tau and Spearman's rho of paired scores, each with a bootstrap 95 % interval (pairs
    resampled)."""
    if len(x) != len(y) or len(x) < 3:
        raise ValueError(f'rank_correlation: {len(x)} and {len(y)} scores (allowed: equal counts, at least 3)')
    rng = random.Random(seed)
    k = len(x)
    taus, rhos = [], []
    for _ in range(n):
        idx = [rng.randrange(k) for _ in range(k)]
        xs, ys = [x[i] for i in idx], [y[i] for i in idx]
        t, r = kendall_tau(xs, ys), spearman_rho(xs, ys)
        if not (math.isnan(t) or math.isnan(r)):
            taus.append(t)
            rhos.append(r)
    taus.sort()
    rhos.sort()

    def ci(v):
        return (v[int(0.025 * (len(v) - 1))], v[int(0.975 * (len(v) - 1))]) if v else (float('nan'), ) * 2

    return dict(
        n=k, kendall_tau=kendall_tau(x, y), kendall_ci=ci(taus), spearman_rho=spearman_rho(x, y), spearman_ci=ci(rhos))
