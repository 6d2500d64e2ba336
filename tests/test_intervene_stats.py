"""Paired effects (bootstrap interval, sign-flip p) and rank correlation against brute force."""

import itertools

import numpy as np
import pytest

from mda_fast.intervene.stats import bootstrap_ci, paired_effect, rankdata, sign_flip_p, spearman, spearman_ci


def _brute_sign_flip(xs):
    xs = np.asarray(xs, float)
    obs = abs(xs.mean())
    pats = list(itertools.product((-1, 1), repeat=len(xs)))
    return sum(abs((np.array(p) * xs).mean()) >= obs - 1e-12 for p in pats) / len(pats)


@pytest.mark.parametrize("xs", [[1.0, 2.0, 3.0], [5.0, -1.0, 2.0, 0.5, 3.0], [0.1] * 8, [1.0, -1.0, 2.0, -2.0]])
def test_sign_flip_p_equals_brute_force(xs):
    assert sign_flip_p(xs) == pytest.approx(_brute_sign_flip(xs))


def test_sign_flip_p_floor_and_null():
    assert sign_flip_p([1.0] * 8) == pytest.approx(2 / 2 ** 8)        # all positive: the two extreme patterns
    assert sign_flip_p([0.0, 0.0]) == 1.0
    assert sign_flip_p([]) is None
    big = np.random.default_rng(0).normal(size=20)                  # Monte Carlo beyond 16 values
    assert 0.0 <= sign_flip_p(big) <= 1.0


def test_bootstrap_interval_brackets_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    small, large = rng.normal(3, 1, 8), rng.normal(3, 1, 200)
    lo, hi = bootstrap_ci(small)
    assert lo < small.mean() < hi
    lo2, hi2 = bootstrap_ci(large)
    assert hi2 - lo2 < (hi - lo) / 2
    assert bootstrap_ci([1.0]) == (None, None)
    e = paired_effect([1.0, 2.0, None, float("nan"), 3.0])         # missing values are dropped
    assert e["n"] == 3 and e["mean"] == pytest.approx(2.0) and e["std"] == pytest.approx(1.0)


def test_rankdata_averages_ties_and_spearman_matches_definition():
    np.testing.assert_array_equal(rankdata([10, 20, 20, 5]), [2, 3.5, 3.5, 1])
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 1], [1, 2, 3]) is None
    rng = np.random.default_rng(2)
    x = rng.normal(size=40)
    y = x + rng.normal(scale=0.5, size=40)
    r = spearman_ci(x, y)
    assert r["ci95"][0] < r["rho"] < r["ci95"][1] and r["ci95_fisher"][0] < r["rho"] < r["ci95_fisher"][1]
    assert spearman(np.exp(x), y) == pytest.approx(r["rho"])   # invariant to monotone transforms
