"""`mda fit/score/top/run/index/query` end to end on a tiny saved model and a .npy window, and bad input."""

import json
import os

import numpy as np
import pytest
import yaml

from mda_fast.attribution import load_scores
from mda_fast.cli import main
from mda_fast.config import RunConfig
from mda_fast.errors import ConfigError
from mda_fast.models import make_tiny_model

from test_attr_bruteforce import one_thread  # noqa: F401  (autouse fixture)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    model = make_tiny_model("neox", seed=3, hidden_size=32, intermediate_size=64)
    model.save_pretrained(d / "ckpt")
    rng = np.random.default_rng(0)
    rows = rng.integers(2, 256, size=(40, 17)).astype(np.int64)
    np.save(d / "rows.npy", rows)
    cfg = {"model": str(d / "ckpt"), "data": {"source": str(d / "rows.npy"), "steps": [2, 7], "rows_per_step": 4},
           "units": ["L1.H2.qk", "L0.H1.qkvo"], "probes": ["copy_target"],
           "settings": {"fit_fraction": 0.5, "batch_size": 4, "probe_n": 6, "probe_seq_len": 16, "progress": False},
           "top_k": 3}
    with open(d / "run.yaml", "w") as fh:
        yaml.safe_dump(cfg, fh)
    return d


def test_run_then_separate_stages_agree(files, capsys):
    out = files / "out_run"
    assert main(["run", "-c", str(files / "run.yaml"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "top 10% of rows carry" in text and "top positive" in text
    t = load_scores(str(out / "scores"))
    assert list(t.row_ids) == list(range(8, 28))  # steps [2, 7) x 4 rows
    assert t.columns == ["L1.H2.qk/copy_target", "L0.H1.qkvo/copy_target"]
    rep = json.load(open(out / "top" / "top.json"))["reports"]
    assert len(rep) == 2 and os.path.isfile(rep[0]["histogram"]) and os.path.isfile(rep[0]["cumulative"])
    assert "text" in rep[0]["positive"][0]

    out2 = files / "out_stages"
    common = ["-c", str(files / "run.yaml"), "--out", str(out2)]
    assert main(["fit", *common, "--batch-size", "3"]) == 0
    assert main(["score", *common, "--set", "settings.batch_size=7"]) == 0
    assert main(["top", *common, "-k", "2", "--column", "L1.H2.qk/copy_target"]) == 0
    t2 = load_scores(str(out2 / "scores"))
    np.testing.assert_allclose(t2.scores, t.scores, rtol=1e-4, atol=1e-4 * np.abs(t.scores).max())


def test_index_then_query_equals_score(files, capsys):
    out, q = files / "out_index", files / "out_query"
    common = ["-c", str(files / "run.yaml"), "--out", str(out)]
    assert main(["fit", *common]) == 0 and main(["score", *common]) == 0
    assert main(["index", *common, "--k", "full", "--dtype", "float32"]) == 0
    assert main(["query", "-c", str(files / "run.yaml"), "--out", str(q), "--index", str(out / "index"), "-k", "2"]) == 0
    assert "top positive" in capsys.readouterr().out and (q / "top" / "top.json").is_file()
    exact, queried = load_scores(str(out / "scores")), load_scores(str(q / "scores"))
    assert queried.columns == exact.columns and list(queried.row_ids) == list(exact.row_ids)
    np.testing.assert_allclose(queried.scores, exact.scores, rtol=0, atol=1e-5 * np.abs(exact.scores).max())


def test_run_with_auto_units_uses_the_heads_stage(files, capsys):
    out = files / "out_auto"
    rc = main(["run", "-c", str(files / "run.yaml"), "--out", str(out), "--units", "auto",
               "--set", "heads.n=4", "--set", "heads.seq_len=16"])
    assert rc == 0
    assert (out / "heads" / "heads.csv").is_file()
    t = load_scores(str(out / "scores"))
    assert len(t.columns) == 1 and t.columns[0].endswith(".qk/copy_target")


@pytest.mark.parametrize("argv, needle", [
    (["--units", "L5.H0.qk"], "layer 5 is out of range"),
    (["--units", "L1.H9.qk"], "head 9 is out of range"),
    (["--set", "settings.fit_fraction=0"], "fit_fraction"),
    (["--set", "settings.bogus=1"], "unknown setting"),
    (["--set", "data.steps=[3, 3]"], "empty"),
    (["--probes", "nonsense"], "unknown probe"),
])
def test_bad_input_is_one_line_exit_2(files, capsys, argv, needle):
    out = files / "bad"
    rc = main(["fit", "-c", str(files / "run.yaml"), "--out", str(out), *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("mda: error:") and needle in err and "\n" not in err
    assert not (out / "factors" / "manifest.json").exists()


def test_score_without_factors_and_top_of_incomplete_run(files, capsys):
    out = files / "nofactors"
    assert main(["score", "-c", str(files / "run.yaml"), "--out", str(out)]) == 2
    assert "not a complete EK-FAC factor directory" in capsys.readouterr().err
    assert main(["top", "-c", str(files / "run.yaml"), "--out", str(out)]) == 2
    assert "not a score run directory" in capsys.readouterr().err


def test_config_overrides_and_errors(tmp_path):
    cfg = RunConfig.from_dict({"model": "m", "units": ["L1.H2.qk"]}, overrides=["settings.batch_size=4", "data.steps=1:3"])
    assert cfg.settings == {"batch_size": 4} and cfg.data["steps"] == [1, 3]
    with pytest.raises(ConfigError, match="unknown key 'modle'"):
        RunConfig.from_dict({"modle": "m"})
    with pytest.raises(ConfigError, match="key=value"):
        RunConfig.from_dict({}, overrides=["settings.batch_size"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        RunConfig.load(str(bad))
