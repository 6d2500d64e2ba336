"""Row labels and the controls built on them: copy_share against a plain loop, kind-matched random
draws (composition, seeding, count), draws among one label, feature-ranked plans."""

import numpy as np
import pytest

from mda_fast.errors import ConfigError
from mda_fast.intervene.plans import PlanSpec, build_plan, parse_plan_spec
from mda_fast.intervene.rowlabels import Labeling, RowLabels, copy_share

RPS, WIN = 10, (5, 105)                      # 1000 window rows
ROWS = np.arange(RPS * WIN[0], RPS * WIN[1])


def _copy_share_loop(row) -> float:
    """The definition, one position at a time."""
    hits = []
    for t in range(2, len(row)):
        prev = [j for j in range(t - 1) if row[j] == row[t - 1]]
        hits.append(bool(prev) and row[prev[-1] + 1] == row[t])
    return float(np.mean(hits))


@pytest.mark.parametrize("length", [3, 7, 33])
def test_copy_share_equals_the_loop(length):
    rng = np.random.default_rng(length)
    rows = rng.integers(0, 5, size=(40, length))                          # [40, L] small vocab: many repeats
    rows[0] = np.resize([7, 8, 9], length)                                # a tiled span
    want = [_copy_share_loop(r) for r in rows]
    np.testing.assert_allclose(copy_share(rows), want)
    np.testing.assert_allclose(copy_share(rows, chunk_bytes=length * length * 3), want)   # chunked: same
    # a period-3 span: positions 2 and 3 have no earlier occurrence of their previous token, the rest hit
    assert copy_share(rows[:1])[0] == pytest.approx(max(0, length - 4) / (length - 2))


def _labels():
    rng = np.random.default_rng(1)
    kind = rng.choice(3, size=ROWS.size, p=[0.6, 0.3, 0.1])               # 0 text, 1 tiled, 2 markup
    stratum = np.where(kind == 1, rng.integers(0, 2, size=ROWS.size), -1)
    feats = {"copy_share": rng.random(ROWS.size)}
    return RowLabels(ROWS, {"kind": Labeling(("text", "tiled", "markup"), kind),
                            "stratum": Labeling(("strong", "weak"), stratum)}, feats, "test")


def _scores(labels):
    """Scores favouring tiled rows, so the top set is mostly (not only) one kind."""
    rng = np.random.default_rng(2)
    return (rng.normal(size=ROWS.size) + 2.5 * (labels.labelings["kind"].index == 1))[:, None]


def _plan(text, labels, seed=0):
    return build_plan(parse_plan_spec(text), WIN, RPS, ROWS, _scores(labels), ["L1.H0.qk/copy"], seed=seed,
                      labels=labels)


def test_kind_matched_draw_has_the_top_sets_composition():
    labels = _labels()
    kind = labels.labelings["kind"]
    top = _plan("delete:top=10%", labels)
    ctrl = _plan("kind-random-delete:top=10%", labels)
    assert ctrl.delete.size == top.delete.size == 100 and len(set(ctrl.delete)) == 100
    comp = lambda ids: np.bincount(kind.index[labels.positions(ids)], minlength=3)   # noqa: E731
    np.testing.assert_array_equal(comp(ctrl.delete), comp(top.delete))
    assert 0 < comp(top.delete)[0] < comp(top.delete)[1]                 # mixed, mostly tiled
    assert sum(ctrl.info["composition"].values()) == 100 and ctrl.info["matched"] == "kind"
    assert not np.array_equal(ctrl.delete, top.delete)                    # a draw, not the ranking
    again, other = _plan("kind-random-delete:top=10%", labels), _plan("kind-random-delete:top=10%", labels, seed=1)
    assert np.array_equal(again.delete, ctrl.delete) and not np.array_equal(other.delete, ctrl.delete)
    dup = _plan("kind-random-duplicate:top=10%,replace=random", labels)
    np.testing.assert_array_equal(comp(dup.sources), comp(top.delete))
    assert not set(dup.targets) & set(dup.sources)


def test_random_among_a_label_and_feature_ranking():
    labels = _labels()
    strong = labels.labelings["stratum"].mask("strong")
    p = _plan("random-delete:top=40,among=stratum:strong", labels)
    assert p.delete.size == 40 and strong[labels.positions(p.delete)].all()
    assert p.info["among_rows"] == int(strong.sum())
    f = _plan("delete:top=25,column=feature:copy_share", labels)
    want = ROWS[np.argsort(-labels.features["copy_share"])[:25]]
    assert set(f.delete) == set(want) and f.info["column"] == "feature:copy_share"


def test_label_errors_are_clear():
    labels = _labels()
    with pytest.raises(ConfigError, match="needs the window's row labels"):
        build_plan(PlanSpec("kind-random-delete"), WIN, RPS, ROWS, _scores(labels), ["c"])
    with pytest.raises(ConfigError, match="label 'medium' is unknown"):
        _plan("random-delete:top=5,among=stratum:medium", labels)
    with pytest.raises(ConfigError, match="has only"):
        _plan("random-delete:top=900,among=stratum:strong", labels)
    with pytest.raises(ConfigError, match="feature 'nope' is unknown"):
        _plan("delete:top=5,column=feature:nope", labels)
    with pytest.raises(ConfigError, match="among=<labeling>:<label> applies to random-delete"):
        parse_plan_spec("delete:among=stratum:strong")
