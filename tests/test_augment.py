"""Synthetic rows: intended structure, seeded, .bin/.idx round trip, CLI."""

import json

import numpy as np
import pytest

from mda_fast.cli import main
from mda_fast.errors import ConfigError
from mda_fast.intervene.augment import load_synthetic, synth_rows, write_synthetic
from mda_fast.codec import ByteCodec
from mda_fast.intervene.kinds import detect_kinds, repeated_spans


def test_rows_have_the_intended_structure():
    c = ByteCodec()
    rows, names = synth_rows(30, 129, c, seed=0)
    assert rows.shape == (30, 129) and names[:3] == ["spans", "markup", "table"]
    want = {"spans": "repeated", "markup": "markup", "table": "records"}
    for r, n in zip(rows, names):
        text = c.decode(r)
        assert want[n] in detect_kinds(text, r, min_len=12), (n, text)
    spans_rows = [r for r, n in zip(rows, names) if n == "spans"]
    # copies of a span occur at more than one distance
    gaps = {s - f for r in spans_rows for s, _, f in repeated_spans(r, 12)}
    assert len(gaps) > 3


def test_seeded_and_roundtrip(tmp_path):
    a, _ = synth_rows(6, 64, seed=5)
    b, _ = synth_rows(6, 64, seed=5)
    c, _ = synth_rows(6, 64, seed=6)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    meta = write_synthetic(tmp_path / "syn", 6, 64, seed=5)
    assert np.array_equal(load_synthetic(tmp_path / "syn", 64), a)
    assert json.loads((tmp_path / "syn.kinds.json").read_text())["kinds"] == meta["kinds"]
    with pytest.raises(ConfigError, match="tokens"):
        load_synthetic(tmp_path / "syn", 65)
    with pytest.raises(ConfigError, match="unknown"):
        synth_rows(2, 64, kinds=["poems"])


def test_cli_augment(tmp_path, capsys):
    assert main(["augment", "--out", str(tmp_path / "s"), "--n", "4", "--seq-len", "33", "--kinds", "markup"]) == 0
    assert load_synthetic(tmp_path / "s", 33).shape == (4, 33)
    assert main(["augment", "--out", str(tmp_path / "s"), "--n", "0", "--seq-len", "33"]) == 2
    assert "augment" in capsys.readouterr().err
