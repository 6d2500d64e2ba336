"""Scores-vs-retraining checks on the manifest shapes the attribution store writes."""

import pytest

from mda_fast.errors import ConfigError
from mda_fast.intervene.validate import check_scores_match, check_window, manifest_units, same_model

FRONT_DOOR = {"model": "/runs/demo/checkpoints/step700", "revision": None, "units": ["L1.H2.qk", "L0.H1.v"],
              "window": {"name": "demo", "rows": 3200, "first_row_id": 16000, "last_row_id": 19199}}


def test_front_door_manifest_accepted():
    check_scores_match(FRONT_DOOR, model="/runs/demo/checkpoints", window=(500, 600), unit=(1, 2),
                       rows_per_step=32)
    assert [(u.layer, u.head, u.mode) for u in manifest_units(FRONT_DOOR)] == [(1, 2, "qk"), (0, 1, "v")]
    assert same_model("EleutherAI/pythia-14m", "/data/pythia-14m/")


@pytest.mark.parametrize("kw,match", [
    (dict(window=(500, 601)), r"rows \[16000, 19200\)"),
    (dict(rows_per_step=16), "16 rows per step"),
    (dict(unit=(1, 3)), "L1.H3"),
    (dict(model="/runs/other/checkpoints"), "computed for model"),
])
def test_mismatch_raises(kw, match):
    args = dict(model="/runs/demo/checkpoints", window=(500, 600), unit=(1, 2), rows_per_step=32)
    args.update(kw)
    with pytest.raises(ConfigError, match=match):
        check_scores_match(FRONT_DOOR, **args)


def test_check_window():
    ck = {0: "a", 100: "b"}
    check_window((100, 200), ck, n_rows=6400, rows_per_step=32)
    with pytest.raises(ConfigError, match="available steps: 0, 100"):
        check_window((50, 200), ck, 6400, 32)
    with pytest.raises(ConfigError, match="data source has 6000"):
        check_window((100, 200), ck, 6000, 32)
    with pytest.raises(ConfigError, match="empty"):
        check_window((100, 100), ck, 6400, 32)
