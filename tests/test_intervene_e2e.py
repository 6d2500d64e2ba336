"""run_experiment end to end on a tiny model, its validation errors (before any training), the CLI."""

import json
import shutil

import numpy as np
import pytest

from mda_fast.cli import main
from mda_fast.data import open_source, select_steps
from mda_fast.errors import ConfigError
from mda_fast.intervene.augment import write_synthetic
from mda_fast.intervene.experiment import run_experiment
from test_intervene_helpers import RPS, SEQ, tiny_setup, write_scores
from test_intervene_helpers import one_thread  # noqa: F401 (autouse fixture)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("iv")
    data, ck, rows = tiny_setup(d, n_rows=80, ckpt_steps=(0, 2))
    rid = np.arange(RPS * 2, RPS * 6)
    sc = np.random.default_rng(1).normal(size=rid.size)
    src = open_source(data)
    scores = write_scores(d / "scores", rid, sc, model=ck / "step2", window=(2, 6), data=select_steps(src, 2, 6, RPS))
    # scores of other weights, and of other rows under the same row ids
    write_scores(d / "scores_other_model", rid, sc, model="elsewhere", window=(2, 6), weights="0123456789abcdef",
                 data=select_steps(src, 2, 6, RPS))
    write_scores(d / "scores_other_rows", rid, sc, model=ck / "step2", window=(2, 6), data=select_steps(src, 3, 7, RPS))
    write_synthetic(d / "syn", 3, SEQ, seed=0)
    return d, data, ck, scores


def test_run_experiment_tiny(setup):
    d, data, ck, scores = setup
    out = d / "exp"
    plans = ["baseline", "delete:top=25%", "random-delete:top=25%", f"insert-synthetic:path={d / 'syn'},per_step=2"]
    s = run_experiment(out, ck, data, scores, (2, 6), plans=plans, seeds=(0, 1), cadence=2, end_step=7,
                       threshold="0.01", stop_after=-1, probe_n=4, probe_len=6, heldout=4, log=None)
    unit = s["units"]["induction"]
    assert set(unit["conditions"]) == {"baseline", "delete", "random-delete", "insert-synthetic"}
    assert s["plans"]["delete"]["count"] == 4 and unit["conditions"]["delete"]["seeds"] == ["0", "1"]
    shift = unit["conditions"]["delete"]["shift_pct"]
    assert {"mean", "std", "ci95", "p", "n"} <= set(shift) and shift["n"] == 2
    curves = json.loads((out / "curves.json").read_text())
    assert curves["baseline"]["0"]["steps"] == [2, 4, 6, 7]
    # deletion changed training, the baseline with the same seed is reproducible run to run
    assert curves["delete"]["0"]["icl"] != curves["baseline"]["0"]["icl"]
    m = [json.loads(l) for l in (out / "runs/delete/seed0/train/metrics.jsonl").read_text().splitlines()]
    assert sum(x["rows_zero_weight"] for x in m) == 4 and len(m) == 5
    for f in ("summary.json", "curves.png", "heads.json", "kinds.json", "kinds.png", "report.html",
              "plans/delete-seed0.json"):
        assert (out / f).is_file(), f
    # re-running resumes: finished runs are not retrained
    stamp = (out / "runs/delete/seed0/curve.json").stat().st_mtime_ns
    run_experiment(out, ck, data, scores, (2, 6), plans=plans[:2], seeds=(0,), cadence=2, end_step=7,
                   threshold="0.01", stop_after=-1, probe_n=4, probe_len=6, heldout=4, log=None, analyze=False,
                   report=False)
    assert (out / "runs/delete/seed0/curve.json").stat().st_mtime_ns == stamp
    # ... also with the scores and synthetic rows copied elsewhere: runs are keyed by content, not paths
    moved = d / "moved"
    shutil.copytree(scores, moved / "scores")
    for f in d.glob("syn.*"):
        shutil.copy(f, moved / f.name)
    done = {c: (out / f"runs/{c}/seed0/curve.json").stat().st_mtime_ns for c in ("delete", "insert-synthetic")}
    moved_plans = plans[:3] + [f"insert-synthetic:path={moved / 'syn'},per_step=2"]
    run_experiment(out, ck, data, moved / "scores", (2, 6), plans=moved_plans, seeds=(0,), cadence=2, end_step=7,
                   threshold="0.01", stop_after=-1, probe_n=4, probe_len=6, heldout=4, log=None, analyze=False,
                   report=False)
    assert {c: (out / f"runs/{c}/seed0/curve.json").stat().st_mtime_ns for c in done} == done
    stamp = (out / "runs/delete/seed0/curve.json").stat().st_mtime_ns
    # ... but a changed plan is retrained
    run_experiment(out, ck, data, scores, (2, 6), plans=["baseline", "delete:top=50%"], seeds=(0,), cadence=2,
                   end_step=7, threshold="0.01", stop_after=-1, probe_n=4, probe_len=6, heldout=4, log=None,
                   analyze=False, report=False)
    assert (out / "runs/delete/seed0/curve.json").stat().st_mtime_ns != stamp


@pytest.mark.parametrize("kw,match", [
    (dict(window=(2, 5)), r"covers rows \[8, 24\)"),
    (dict(window=(1, 6)), "no checkpoint"),
    (dict(units=[(0, 1)]), "units"),
    (dict(scores="scores_other_model"), "not those of any of the checkpoints"),
    (dict(scores="scores_other_rows"), "other rows than the retraining window"),
    (dict(plans=["delete:top=17"]), "window has only"),
    (dict(end_step=500), "data source has"),
    (dict(plans=["baseline", "insert-synthetic:path=nope"]), "nope"),
])
def test_bad_input_fails_before_training(setup, kw, match):
    d, data, ck, scores = setup
    args = dict(out_dir=d / "bad", checkpoints=ck, source=data, scores=scores, window=(2, 6), seeds=(0,),
                plans=["baseline", "delete"], log=None)
    args.update(kw)
    if isinstance(args["scores"], str):
        args["scores"] = d / args["scores"]
    with pytest.raises(Exception, match=match) as ei:
        run_experiment(**args)
    assert ei.type.__name__ in ("ConfigError", "DataError")
    assert not (d / "bad" / "runs").exists()


def test_cli_intervene_error_is_one_line(setup, capsys):
    d, data, ck, scores = setup
    rc = main(["intervene", "--model", str(ck), "--data", str(data), "--scores", str(scores),
               "--steps", "2:5", "--out", str(d / "cli")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "window" in err


def test_cli_analyze_and_report(setup, capsys):
    d, data, ck, scores = setup
    assert main(["analyze", "--scores", str(scores), "--data", str(data), "--out", str(d / "an"), "-k", "4"]) == 0
    assert json.loads((d / "an" / "kinds.json").read_text())["count"] == 4
    if (d / "exp" / "summary.json").is_file():
        assert main(["report", "--out", str(d / "exp"), "--data", str(data)]) == 0
        assert "Top rows" in (d / "exp" / "report.html").read_text()
    assert main(["report", "--out", str(d / "missing")]) == 2


def test_scores_from_the_attribution_front_door_are_accepted_and_checked(tmp_path):
    from mda_fast.attribution.pipeline import Pipeline
    from mda_fast.models import load_model

    data, ck, _ = tiny_setup(tmp_path, n_rows=48, ckpt_steps=(0, 2, 6))
    model, _ = load_model(str(ck / "step6"), load_tokenizer=False)
    p = Pipeline(model, select_steps(open_source(data), 2, 6, RPS), tmp_path / "run", ["copy_target"],
                 units=["L1.H0.qk"], settings={"probe_n": 4, "probe_seq_len": 12, "progress": False},
                 model_name=str(ck / "step6"), log=None)
    table = p.run(top_k=2)
    assert table.row_ids.tolist() == list(range(8, 24))
    s = run_experiment(tmp_path / "exp", ck, data, tmp_path / "run" / "scores", (2, 6), plans=["baseline", "delete"],
                       seeds=(0,), cadence=2, threshold="0.01", probe_n=4, probe_len=6, heldout=4, log=None,
                       analyze=False, report=False)
    assert s["plans"]["delete"]["column"] == "L1.H0.qk/copy_target"
    with pytest.raises(ConfigError, match=r"rows \[8, 24\)"):
        run_experiment(tmp_path / "bad", ck, data, tmp_path / "run" / "scores", (2, 5), log=None)
