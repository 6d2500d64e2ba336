"""Trajectory-aware MDA: segments end at saved checkpoints; each segment's rows are scored by a
Pipeline at its own end checkpoint; one segment is single-checkpoint MDA, bitwise."""

import numpy as np
import pytest

from mda_fast.attribution.pipeline import Pipeline
from mda_fast.attribution.trajectory import TrajectoryRun, segment_spans
from mda_fast.data import ArraySource, select_steps
from mda_fast.errors import ConfigError
from mda_fast.models import load_model, make_tiny_model
from mda_fast.training import OptimConfig, list_checkpoints, train

from test_attr_bruteforce import one_thread  # noqa: F401  (autouse fixture)

RPS, STEPS = 4, 8
SETTINGS = {"fit_fraction": 1.0, "batch_size": 4, "probe_n": 4, "probe_seq_len": 16, "progress": False}
UNITS, PROBES = ["L1.H1.qk"], ["copy_target"]


def test_segment_spans():
    saved = [2, 4, 5, 6, 8]
    assert segment_spans(0, 8, 1, saved) == [(0, 8)]
    assert segment_spans(0, 8, 2, saved) == [(0, 4), (4, 8)]
    assert segment_spans(0, 8, 4, saved) == [(0, 2), (2, 4), (4, 6), (6, 8)]
    assert segment_spans(4, 8, 3, saved) == [(4, 5), (5, 6), (6, 8)]
    with pytest.raises(ConfigError, match="at most 3 segments"):
        segment_spans(4, 8, 4, saved)
    with pytest.raises(ConfigError, match="no checkpoint at the window's end"):
        segment_spans(0, 7, 2, saved)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("traj")
    rows = np.random.default_rng(0).integers(2, 200, size=(RPS * STEPS, 17)).astype(np.int64)
    src = ArraySource(rows, name="toy", vocab_size=256)
    model = make_tiny_model("neox", seed=1, hidden_size=32, intermediate_size=64)
    opt = OptimConfig(lr=3e-3, weight_decay=0.01, warmup_steps=2, total_steps=STEPS)
    train(model, src, (0, STEPS), RPS, opt, out_dir=d / "ckpt", save_steps=[2, 4, 6, 8])
    return d, src, list(list_checkpoints(d / "ckpt"))


def _load(d):
    return lambda step: load_model(str(d / "ckpt"), f"step{step}")


def test_one_segment_is_single_checkpoint_mda_bitwise(trained, tmp_path):
    d, src, saved = trained
    table = TrajectoryRun(_load(d), src, (4, 8), RPS, tmp_path / "t", PROBES, UNITS, 1, saved, SETTINGS, log=None).run()
    model, tok = _load(d)(8)
    plain = Pipeline(model, select_steps(src, 4, 8, RPS), tmp_path / "p", PROBES, units=UNITS, tokenizer=tok,
                     settings=SETTINGS, log=None).run()
    assert np.array_equal(table.row_ids, plain.row_ids) and np.array_equal(table.scores, plain.scores)


def test_each_segment_scored_at_its_own_checkpoint(trained, tmp_path):
    d, src, saved = trained
    run = TrajectoryRun(_load(d), src, (2, 8), RPS, tmp_path / "t", PROBES, UNITS, 2, saved, SETTINGS, log=None)
    assert run.spans == [(2, 4), (4, 8)]
    table = run.run()
    assert list(table.row_ids) == list(range(2 * RPS, 8 * RPS))
    for a, b in run.spans:
        model, tok = _load(d)(b)
        alone = Pipeline(model, select_steps(src, a, b, RPS), tmp_path / f"p{a}", PROBES, units=UNITS, tokenizer=tok,
                         settings=SETTINGS, log=None).run()
        rows = np.isin(table.row_ids, alone.row_ids)
        assert np.array_equal(table.scores[rows], alone.scores)
    end_model, tok = _load(d)(8)                       # the first segment's rows differ from the window-end scores
    at_end = Pipeline(end_model, select_steps(src, 2, 4, RPS), tmp_path / "e", PROBES, units=UNITS, tokenizer=tok,
                      settings=SETTINGS, log=None).run()
    assert not np.allclose(table.scores[: 2 * RPS], at_end.scores)
    assert [s["steps"] for s in table.manifest["identity"]["segments"]] == [[2, 4], [4, 8]]


def test_cli_run_segments_equals_the_api(trained, tmp_path):
    from mda_fast.attribution import load_scores
    from mda_fast.cli import main

    d, src, saved = trained
    np.save(tmp_path / "rows.npy", src.read(np.arange(len(src))))
    args = ["run", "--model", str(d / "ckpt"), "--data", str(tmp_path / "rows.npy"), "--steps", "2:8",
            "--rows-per-step", str(RPS), "--units", *UNITS, "--probes", *PROBES, "--no-progress", "--segments", "2",
            *[x for k, v in SETTINGS.items() if k != "progress" for x in (f"--{k.replace('_', '-')}", str(v))]]
    assert main([*args, "--out", str(tmp_path / "cli")]) == 0
    api = TrajectoryRun(_load(d), src, (2, 8), RPS, tmp_path / "api", PROBES, UNITS, 2, saved, SETTINGS, log=None).run()
    cli = load_scores(str(tmp_path / "cli" / "scores"))
    assert np.array_equal(cli.scores, api.scores) and np.array_equal(cli.row_ids, api.row_ids)
    assert main([*args[:-2], "--segments", "2", "--units", "auto", "--out", str(tmp_path / "x")]) == 2
