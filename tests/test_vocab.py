"""One spelling per concept across the commands (mda_fast.vocab); the old spellings still read, with a note."""

import numpy as np
import pytest

from mda_fast import vocab
from mda_fast.attribution.store.scores import ScoreTable
from mda_fast.attribution.store.top import top_rows
from mda_fast.cli import build_parser
from mda_fast.errors import ConfigError
from mda_fast.intervene.track import curve_key
from mda_fast.units import Unit


def _note(capsys) -> str:
    return capsys.readouterr().err.strip()


def test_metric_old_spelling_reads_as_new_with_one_line_note(capsys):
    assert vocab.metric("previous_token") == "previous_token" and _note(capsys) == ""
    assert vocab.metric("prev_token") == "previous_token"
    note = _note(capsys)
    assert "'prev_token' is deprecated" in note and "'previous_token'" in note and "\n" not in note


def test_intervene_metric_both_spellings(capsys):
    base = ["intervene", "--model", "m", "--data", "d", "--scores", "s", "--steps", "1:2", "--out", "o"]
    new = build_parser().parse_args(base + ["--metric", "previous_token"])
    assert _note(capsys) == ""
    old = build_parser().parse_args(base + ["--metric", "prev_token"])
    assert "deprecated" in _note(capsys)
    assert new.metric == old.metric == "previous_token"
    assert build_parser().parse_args(base).metric == "induction"
    # the curve key (on disk, in run fingerprints) is unchanged, whichever spelling came in
    assert curve_key("previous_token") == curve_key("prev_token") == "prev_token"
    assert curve_key("induction") == "induction"
    with pytest.raises(ConfigError, match="induction or previous_token"):
        curve_key("duplicate_token")


def test_units_block_suffix_optional():
    assert Unit.parse("L1.H3") == Unit.parse("L1.H3.qk") == Unit(1, 3, "qk")
    args = build_parser().parse_args(["intervene", "--model", "m", "--data", "d", "--scores", "s", "--steps", "1:2",
                                      "--out", "o", "--units", "L1.H3", "L0.H2.qk"])
    from mda_fast.cli.intervene_cmd import _unit

    assert [_unit(u) for u in args.units] == [(1, 3), (0, 2)]


def test_top_k_one_grammar(capsys):
    assert vocab.count_or_share("20") == 20 and vocab.count_or_share("10%") == "10%"
    for bad in ("-1", "0%", "120%", "ten"):
        with pytest.raises(ConfigError, match="positive count or a percentage"):
            vocab.count_or_share(bad)
    assert _note(capsys) == ""
    assert vocab.count_or_share("0") == "100%" and "deprecated" in _note(capsys)  # mda heads -k 0 = all
    for cmd in (["heads", "--model", "m"], ["top", "--out", "o"], ["demo"],
                ["analyze", "--scores", "s", "--data", "d", "--out", "o"]):
        assert build_parser().parse_args(cmd + ["-k", "5%"]).top_k == "5%"
        assert build_parser().parse_args(cmd + ["-k", "5"]).top_k == 5


def test_top_rows_count_or_percentage():
    s = np.linspace(-1, 1, 20, dtype=np.float32)[:, None]
    table = ScoreTable(np.arange(20), s, ["c"], np.zeros(20, np.float32), {})
    by_share, by_count = top_rows(table, "10%"), top_rows(table, 2)
    assert by_share["positive"] == by_count["positive"] and len(by_count["positive"]) == 2
    assert len(top_rows(table, 100)["positive"]) == 10  # more than there are: all of them


def test_run_config_top_k_count_or_percentage():
    from mda_fast.config import RunConfig

    base = ["out=x", "model=m", "data.source=s", "data.rows_per_step=1"]
    assert RunConfig.load(None, base + ["top_k=10%"], {}).top_k == "10%"
    assert RunConfig.load(None, base + ["top_k=7"], {}).top_k == 7
    for bad in ("0", "abc", "150%"):
        with pytest.raises(ConfigError, match="top_k|-k"):
            RunConfig.load(None, base + [f"top_k={bad}"], {})
