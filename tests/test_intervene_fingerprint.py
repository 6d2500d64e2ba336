"""Run fingerprints follow content (plan rows, synthetic rows, settings), not the paths of the inputs."""

import shutil

import numpy as np
import pytest

from mda_fast.attribution.store.scores import load_scores
from mda_fast.intervene.augment import load_synthetic, write_synthetic
from mda_fast.intervene.fingerprint import run_fingerprint
from mda_fast.intervene.plans import build_plan, parse_plan_spec
from test_intervene_helpers import RPS, SEQ, write_scores

WINDOW = (10, 20)
SETTINGS = (25, 5, 8, {"lr": 1e-3}, 32, 32, 32)
SPECS = ("baseline", "delete:top=10%", "duplicate:top=10%", "random-delete:top=10%", "insert-synthetic:path={syn}")


def _key(scores_dir, syn, spec, settings=SETTINGS):
    table = load_scores(str(scores_dir))
    spec = parse_plan_spec(spec.format(syn=syn))
    rows = load_synthetic(spec.synthetic, SEQ) if spec.synthetic else None
    plan = build_plan(spec, WINDOW, RPS, table.row_ids, table.scores, table.columns, seed=0,
                      n_synthetic=None if rows is None else len(rows))
    return run_fingerprint(plan, rows, *settings)


@pytest.fixture()
def inputs(tmp_path):
    rid = np.arange(RPS * WINDOW[0], RPS * WINDOW[1])
    scores = write_scores(tmp_path / "a" / "scores", rid, np.random.default_rng(0).normal(size=rid.size),
                          model="m", window=WINDOW)
    write_synthetic(tmp_path / "a" / "syn", 3, SEQ, seed=0)
    shutil.copytree(tmp_path / "a", tmp_path / "b" / "moved")       # the same files elsewhere
    return tmp_path, scores, rid


@pytest.mark.parametrize("spec", SPECS)
def test_same_content_at_another_or_equivalent_path_gives_the_same_key(inputs, spec, monkeypatch):
    tmp, scores, _ = inputs
    key = _key(scores, tmp / "a" / "syn", spec)
    assert _key(tmp / "b" / "moved" / "scores", tmp / "b" / "moved" / "syn", spec) == key
    monkeypatch.chdir(tmp)
    assert _key("a/../a/scores", "./a/syn", spec) == key


def test_different_scores_rows_or_settings_give_another_key(inputs):
    tmp, scores, rid = inputs
    other = write_scores(tmp / "c" / "scores", rid, np.random.default_rng(1).normal(size=rid.size),
                         model="m", window=WINDOW)
    write_synthetic(tmp / "c" / "syn", 3, SEQ, seed=1)
    syn = tmp / "a" / "syn"
    for spec in ("delete:top=10%", "duplicate:top=10%"):
        assert _key(other, syn, spec) != _key(scores, syn, spec)
    assert _key(scores, tmp / "c" / "syn", SPECS[-1]) != _key(scores, syn, SPECS[-1])
    assert _key(scores, syn, "baseline", SETTINGS[:-1] + (16,)) != _key(scores, syn, "baseline")
    assert _key(scores, syn, "delete:top=20%") != _key(scores, syn, "delete:top=10%")
