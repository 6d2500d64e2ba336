"""Pooling the experiment over trajectories: per-trajectory effects and the pooled effect over all runs."""

import numpy as np
import pytest

from mda_fast.demo.trajectories import format_pooled, pool
from mda_fast.intervene.stats import paired_effect


def _summary(shifts: dict, diffs: list) -> dict:
    conds = {"baseline": {"cross": {}}} | {c: {"shift_pct_per_seed": {str(i): v for i, v in enumerate(xs)}}
                                          for c, xs in shifts.items()}
    return {"units": {"induction": {"conditions": conds}},
            "contrasts": {"induction": {"A - B": {"per_seed": {str(i): v for i, v in enumerate(diffs)}}}}}


def test_pool_keeps_each_trajectory_and_pools_all_runs():
    t0 = _summary({"delete-top-10%": [10.0, 12.0, 11.0]}, [3.0, 4.0, 2.0])
    t1 = _summary({"delete-top-10%": [20.0, 22.0], "only-here": [1.0, 2.0]}, [-1.0, 0.5])
    p = pool({"0": t0, "1": t1})
    row = p["conditions"]["induction"]["delete-top-10%"]
    assert set(row["per_trajectory"]) == {"0", "1"}
    assert row["per_trajectory"]["0"]["mean"] == pytest.approx(11.0)
    assert row["pooled"] == paired_effect([10.0, 12.0, 11.0, 20.0, 22.0])
    assert row["pooled"]["n"] == 5 and row["pooled"]["mean"] == pytest.approx(15.0)
    assert set(p["conditions"]["induction"]["only-here"]["per_trajectory"]) == {"1"}
    assert "baseline" not in p["conditions"]["induction"]
    con = p["contrasts"]["induction"]["A - B"]
    assert con["pooled"]["mean"] == pytest.approx(np.mean([3.0, 4.0, 2.0, -1.0, 0.5]))
    text = format_pooled(p)
    assert "delete-top-10%" in text and "seed 1" in text
