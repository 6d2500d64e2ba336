"""Plan construction: counts, tails, percentages, victims, seeded random controls."""

import numpy as np
import pytest

from mda_fast.errors import ConfigError
from mda_fast.intervene.plans import (SYNTH_BASE, Plan, PlanSpec, build_plan, parse_plan_spec,
                                      resolve_count)

RPS, WIN = 10, (5, 105)                      # 100 steps x 10 rows = 1000 window rows
ROWS = np.arange(RPS * WIN[0], RPS * WIN[1])


def _scores(seed=0):
    return np.random.default_rng(seed).normal(size=(ROWS.size, 1)).astype(np.float32)


def _plan(kind, seed=0, **kw):
    return build_plan(PlanSpec(kind, **kw), WIN, RPS, ROWS, _scores(), ["L1.H0.qk/copy"], seed=seed)


def test_resolve_count():
    assert resolve_count("10%", 1000) == 100
    assert resolve_count("2.5%", 1000) == 25
    assert resolve_count("37", 1000) == 37
    for bad in ("0", "-3", "0%", "120%", "ten", "1001"):
        with pytest.raises(ConfigError):
            resolve_count(bad, 1000)


def test_delete_positive_and_negative_tails():
    v = _scores()[:, 0]
    pos = _plan("delete", top="10%")
    assert pos.delete.size == 100 and pos.sources.size == 0
    assert set(pos.delete) == set(ROWS[np.argsort(-v)[:100]])
    assert v[np.isin(ROWS, pos.delete)].min() >= np.sort(v)[-100]
    neg = _plan("delete", top="50", tail="negative")
    assert set(neg.delete) == set(ROWS[np.argsort(v)[:50]])
    assert 0 < pos.info["abs_score_share"] < 1


def test_duplicate_replaces_lowest_abs_rows_and_keeps_selection():
    v = np.abs(_scores()[:, 0])
    p = _plan("duplicate", top="40")
    assert set(p.sources) == set(_plan("delete", top="40").delete)
    assert p.targets.size == 40 and not set(p.targets) & set(p.sources)
    lowest = set(ROWS[np.argsort(v)[:40]])
    assert set(p.targets) == lowest                     # none of the 40 lowest is a top row here
    p2 = _plan("duplicate", top="40", copies=2, replace="random")
    assert p2.sources.size == 80 and len(set(p2.targets)) == 80
    assert not set(p2.targets) & set(p2.sources)


def test_insert_at_step_fills_steps_from_there():
    p = _plan("duplicate", top="25", at=50, per_step=3)
    steps = p.targets // RPS
    assert steps.min() == 50 and np.bincount(steps).max() <= 3
    assert len(set(steps.tolist())) == 9                   # ceil(25 / 3) steps
    with pytest.raises(ConfigError, match="do not fit"):
        _plan("duplicate", top="100", at=100, per_step=2)
    with pytest.raises(ConfigError, match="outside the window"):
        _plan("duplicate", top="5", at=200)


def test_random_controls_seeded_uniform_and_same_count():
    a = _plan("random-delete", seed=1)
    assert np.array_equal(a.delete, _plan("random-delete", seed=1).delete)
    b = _plan("random-delete", seed=2)
    assert a.delete.size == b.delete.size == _plan("delete").delete.size == 100
    assert not np.array_equal(a.delete, b.delete)
    assert len(np.unique(a.delete)) == 100 and np.isin(a.delete, ROWS).all()
    # uniform over the window: 20 draws of 100 rows, each quarter gets 25% +- 5%
    q = np.concatenate([_plan("random-delete", seed=s).delete for s in range(20)])
    share = np.bincount((q - ROWS[0]) * 4 // ROWS.size, minlength=4) / q.size
    assert np.all(np.abs(share - 0.25) < 0.05), share
    d = _plan("random-duplicate", seed=3)
    assert d.sources.size == d.targets.size == 100
    assert not set(d.sources) & set(d.targets)          # a duplicated row never loses its slot


def test_insert_synthetic_defaults_mid_window():
    p = build_plan(PlanSpec("insert-synthetic", synthetic="syn", per_step=5), WIN, RPS, ROWS, _scores(),
                   ["c"], n_synthetic=12)
    assert np.array_equal(p.sources, SYNTH_BASE + np.arange(12))
    assert (p.targets // RPS).min() == (WIN[0] + WIN[1]) // 2
    q = Plan.from_json(p.to_json())
    assert np.array_equal(q.targets, p.targets) and q.window == p.window


def test_plan_errors():
    with pytest.raises(ConfigError, match="larger|window has only"):
        _plan("delete", top="1001")
    with pytest.raises(ConfigError, match="scored"):        # only half the window has scores
        build_plan(PlanSpec("delete", top="60%"), WIN, RPS, ROWS[:500], _scores()[:500], ["c"])
    with pytest.raises(ConfigError, match="column"):
        build_plan(PlanSpec("delete", column="nope"), WIN, RPS, ROWS, _scores(), ["c"])
    with pytest.raises(ConfigError, match="choose one"):
        build_plan(PlanSpec("delete"), WIN, RPS, ROWS, np.zeros((ROWS.size, 2)), ["a", "b"])


def test_parse_plan_spec():
    s = parse_plan_spec("duplicate:top=5%,replace=random,at=120,copies=2")
    assert (s.kind, s.top, s.replace, s.at, s.copies) == ("duplicate", "5%", "random", 120, 2)
    assert parse_plan_spec("insert-synthetic:path=/x/syn").synthetic == "/x/syn"
    for bad in ("remove", "delete:top", "delete:foo=1", "duplicate:at=x", "delete:tail=up",
                "insert-synthetic"):
        with pytest.raises(ConfigError):
            parse_plan_spec(bad)
