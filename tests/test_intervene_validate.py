"""Scores-vs-retraining checks on the manifest shapes the attribution store writes: by content."""

import json

import pytest

from mda_fast.errors import ConfigError
from mda_fast.intervene.validate import check_scores_match, check_window, manifest_units, scores_checkpoint
from mda_fast.models.fingerprint import checkpoint_weights

DATA = {"rows": 3200, "sample": "aaaa"}


def _checkpoints(tmp_path, steps=(0, 500, 600)):
    """{step: dir} of fake checkpoints (config.json + weight bytes differing per step)."""
    out = {}
    for s in steps:
        d = tmp_path / "ck" / f"step{s}"
        d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps({"model_type": "gpt_neox", "hidden_size": 8}))
        (d / "model.safetensors").write_bytes(f"weights of step {s}".encode())
        out[s] = d
    return out


def _manifest(weights, model="/runs/demo/checkpoints/step700"):
    return {"model": model, "revision": None, "units": ["L1.H2.qk", "L0.H1.v"],
            "window": {"name": "demo", "rows": 3200, "first_row_id": 16000, "last_row_id": 19199},
            "identity": {"weights": weights, "data": DATA}}


def test_front_door_manifest_accepted_by_content(tmp_path):
    ck = _checkpoints(tmp_path)
    m = _manifest(checkpoint_weights(ck[600]), model="/elsewhere/renamed/step9")  # paths do not matter
    check_scores_match(m, checkpoints=ck, data=DATA, window=(500, 600), unit=(1, 2), rows_per_step=32)
    assert scores_checkpoint(m, ck, (500, 600)) == 600
    assert [(u.layer, u.head, u.mode) for u in manifest_units(m)] == [(1, 2, "qk"), (0, 1, "v")]


def test_replaced_checkpoint_is_noticed(tmp_path):
    ck = _checkpoints(tmp_path)
    m = _manifest(checkpoint_weights(ck[600]))
    (ck[600] / "model.safetensors").write_bytes(b"retrained weights")   # same path, new content
    with pytest.raises(ConfigError, match="not those of any of the checkpoints"):
        check_scores_match(m, checkpoints=ck, window=(500, 600), rows_per_step=32)


@pytest.mark.parametrize("kw,match", [
    (dict(window=(500, 601)), r"rows \[16000, 19200\)"),
    (dict(rows_per_step=16), "16 rows per step"),
    (dict(unit=(1, 3)), "L1.H3"),
    (dict(data={"rows": 3200, "sample": "bbbb"}), "other rows than the retraining window"),
])
def test_mismatch_raises(tmp_path, kw, match):
    ck = _checkpoints(tmp_path)
    args = dict(checkpoints=ck, data=DATA, window=(500, 600), unit=(1, 2), rows_per_step=32)
    args.update(kw)
    with pytest.raises(ConfigError, match=match):
        check_scores_match(_manifest(checkpoint_weights(ck[500])), **args)


def test_manifest_without_identity_is_refused(tmp_path):
    ck = _checkpoints(tmp_path)
    m = _manifest(None)
    del m["identity"]
    with pytest.raises(ConfigError, match="records no model-weights fingerprint"):
        check_scores_match(m, checkpoints=ck, window=(500, 600), rows_per_step=32)


def test_check_window():
    ck = {0: "a", 100: "b"}
    check_window((100, 200), ck, n_rows=6400, rows_per_step=32)
    with pytest.raises(ConfigError, match="available steps: 0, 100"):
        check_window((50, 200), ck, 6400, 32)
    with pytest.raises(ConfigError, match="data source has 6000"):
        check_window((100, 200), ck, 6000, 32)
    with pytest.raises(ConfigError, match="empty"):
        check_window((100, 100), ck, 6400, 32)
