"""Small-sample statistics for the causal experiment: paired effects over seeds and rank correlation.

Every effect in ``summary.json`` is a paired difference per seed (condition minus baseline under the
same data order), reported as its mean, a percentile bootstrap 95% interval over seeds and a
two-sided sign-flip permutation p-value (exact over all 2^n sign patterns up to n = 16 seeds,
Monte Carlo beyond). With n seeds the smallest attainable p is 2 / 2^n (0.0078 at n = 8).
"""

from __future__ import annotations

import itertools
import math

import numpy as np

N_BOOT = 10_000
EXACT_MAX_N = 16


def _finite(xs) -> np.ndarray:
    a = np.asarray([x for x in xs if x is not None], dtype=np.float64)
    return a[np.isfinite(a)]


def bootstrap_ci(xs, level: float = 0.95, n_boot: int = N_BOOT, seed: int = 0) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of the mean of ``xs`` (None, None for fewer than 2 values)."""
    a = _finite(xs)
    if a.size < 2:
        return None, None
    rng = np.random.default_rng(seed)
    means = a[rng.integers(0, a.size, size=(n_boot, a.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def sign_flip_p(xs, n_mc: int = 100_000, seed: int = 0) -> float | None:
    """Two-sided p-value of H0 "paired differences are symmetric about 0": the share of sign
    patterns whose |mean| is at least the observed |mean| (exact enumeration up to 16 values)."""
    a = _finite(xs)
    if a.size == 0:
        return None
    obs = abs(a.mean())
    if np.all(a == 0):
        return 1.0
    if a.size <= EXACT_MAX_N:
        signs = np.array(list(itertools.product((-1.0, 1.0), repeat=a.size)))
    else:
        signs = np.random.default_rng(seed).choice((-1.0, 1.0), size=(n_mc, a.size))
    stats = np.abs((signs * a).mean(axis=1))
    return float(np.mean(stats >= obs - 1e-12 * max(1.0, obs)))


def paired_effect(xs) -> dict:
    """{"mean", "std", "ci95": [lo, hi], "p", "n"} of paired differences ``xs``."""
    a = _finite(xs)
    lo, hi = bootstrap_ci(a)
    return {"mean": float(a.mean()) if a.size else None,
            "std": float(a.std(ddof=1)) if a.size > 1 else None,
            "ci95": [lo, hi], "p": sign_flip_p(a), "n": int(a.size)}


def rankdata(x) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (scipy.stats.rankdata 'average')."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(x.size, dtype=np.float64)
    xs = x[order]
    i = 0
    while i < x.size:
        j = i
        while j + 1 < x.size and xs[j + 1] == xs[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def spearman(x, y) -> float | None:
    """Spearman rank correlation of two equal-length sequences (None when either is constant)."""
    rx, ry = rankdata(x), rankdata(y)
    if rx.size < 3 or rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def spearman_ci(x, y, level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> dict:
    """Spearman rho with a percentile bootstrap interval over pairs, and the Fisher-z interval
    (1.06 / sqrt(n - 3), Fieller et al.) as a cross-check for small n."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    rho = spearman(x, y)
    out = {"rho": rho, "n": int(x.size), "ci95": [None, None], "ci95_fisher": [None, None]}
    if rho is None:
        return out
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, x.size, size=x.size)
        r = spearman(x[idx], y[idx])
        if r is not None:
            boots.append(r)
    if boots:
        out["ci95"] = [float(v) for v in np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])]
    if x.size > 3:
        z, se = math.atanh(max(-0.999999, min(0.999999, rho))), 1.06 / math.sqrt(x.size - 3)
        out["ci95_fisher"] = [math.tanh(z - 1.96 * se), math.tanh(z + 1.96 * se)]
    return out
