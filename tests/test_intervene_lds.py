"""LDS: subsets, the table against constructed outcomes, and run_lds end to end on a tiny model."""

import json

import numpy as np
import pytest
import torch

from mda_fast.errors import ConfigError
from mda_fast.intervene.lds import Attributor, LdsTarget, format_lds, lds_table, run_lds, subsets
from mda_fast.intervene.summary import TrackedUnit
from test_intervene_helpers import RPS, tiny_setup
from test_intervene_helpers import one_thread  # noqa: F401 (autouse fixture)

UNIT = TrackedUnit.of("induction", 1, 0, "induction")


class _Probe:
    name = "copy_target"


def test_subsets_remove_the_complement_of_a_seeded_half():
    rem = subsets((2, 6), 4, n=5, fraction=0.5, seed=0)
    assert len(rem) == 5 and all(r.size == 8 and set(r) <= set(range(8, 24)) for r in rem)
    assert len({tuple(r) for r in rem}) == 5                              # distinct subsets
    again = subsets((2, 6), 4, n=5, fraction=0.5, seed=0)
    assert all(np.array_equal(x, y) for x, y in zip(rem, again))
    with pytest.raises(ConfigError):
        subsets((2, 6), 4, n=5, fraction=1.0, seed=0)
    with pytest.raises(ConfigError):
        subsets((2, 6), 4, n=2, fraction=0.5, seed=0)


@pytest.mark.parametrize("fraction, removed", [(0.9, 10), (0.98, 2), (0.25, 75)])
def test_subsets_keep_fraction_of_the_window_and_remove_the_rest(fraction, removed):
    rem = subsets((5, 30), 4, n=6, fraction=fraction, seed=1)      # window rows 20..119: N = 100
    assert all(r.size == removed == round((1 - fraction) * 100) for r in rem)
    assert all(set(r) <= set(range(20, 120)) and np.all(np.diff(r) > 0) for r in rem)   # sorted, unique, in window


def _curve(probe, head):
    return {"steps": [0, 1], "induction": [[[0.0], [0.0]], [[0.0], [head]]], "end_probes": {"copy_target": probe}}


def test_lds_table_is_one_for_an_attributor_that_predicts_the_outcome():
    rng = np.random.default_rng(0)
    row_ids = np.arange(100, 140)
    true = rng.normal(size=40)
    removed = [np.sort(rng.choice(row_ids, 20, replace=False)) for _ in range(12)]
    # outcome: the probe falls by what the removed rows contributed
    curves = {"full": _curve(1.0, 0.5)}
    for m, r in enumerate(removed):
        drop = true[np.isin(row_ids, r)].sum()
        curves[f"subset{m:03d}"] = _curve(1.0 - drop, 0.5 - 0.1 * drop)
    atts = [Attributor("oracle", row_ids, true), Attributor("negated", row_ids, -true),
            Attributor("noise", row_ids, rng.normal(size=40))]
    t = lds_table({0: curves}, removed, LdsTarget(UNIT, _Probe(), torch.zeros(1, 2), atts))
    a = t["attributors"]
    assert a["oracle"]["lds_probe"]["rho"] == pytest.approx(1.0)
    assert a["oracle"]["lds_head"]["rho"] == pytest.approx(1.0)
    assert a["negated"]["lds_probe"]["rho"] == pytest.approx(-1.0)
    assert abs(a["noise"]["lds_probe"]["rho"]) < 0.9
    assert t["measured"]["probe_change"][0] == pytest.approx(-true[np.isin(row_ids, removed[0])].sum())


def test_run_lds_end_to_end_and_resume(tmp_path):
    from mda_fast.data import open_source
    from mda_fast.intervene.retrain import optim_from_checkpoint
    from mda_fast.intervene.runner import RunShared
    from mda_fast.intervene.track import repeated_random_tokens
    from mda_fast.probes import CopyTargetProbe

    data, ck, _ = tiny_setup(tmp_path, n_rows=48, ckpt_steps=(0, 2))
    src = open_source(data)
    shared = RunShared(checkpoint=str(ck / "step2"), source=src, end_step=99, optim=optim_from_checkpoint(ck / "step2"),
                       cadence=2, shuffle_block=1, probe_tokens=repeated_random_tokens(3, 4, 32, 127, 0),
                       heldout=None, stop=None)
    rid = np.arange(RPS * 2, RPS * 5)
    atts = [Attributor("a", rid, np.random.default_rng(0).normal(size=rid.size))]
    target = LdsTarget(UNIT, CopyTargetProbe(), repeated_random_tokens(3, 5, 32, 127, 1), atts)
    res = run_lds(tmp_path / "lds", shared, (2, 5), RPS, [target], n_subsets=4, log=None)
    saved = json.loads((tmp_path / "lds" / "lds.json").read_text())
    assert saved["n_subsets"] == 4 and len(saved["targets"][0]["measured"]["probe_change"]) == 4
    rho = res["targets"][0]["attributors"]["a"]["lds_probe"]["rho"]
    assert rho is None or -1.0 <= rho <= 1.0
    m = [json.loads(l) for l in (tmp_path / "lds/runs/subset000/train/metrics.jsonl").read_text().splitlines()]
    assert len(m) == 3 and sum(x["rows_zero_weight"] for x in m) == 6        # half of 12 window rows deleted
    assert "LDS over 4 random 50% subsets" in format_lds(res)
    stamp = (tmp_path / "lds/runs/subset000/curve.json").stat().st_mtime_ns
    run_lds(tmp_path / "lds", shared, (2, 5), RPS, [target], n_subsets=4, log=None)
    assert (tmp_path / "lds/runs/subset000/curve.json").stat().st_mtime_ns == stamp
