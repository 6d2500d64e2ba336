"""`mda demo --experiment` on a tiny config: where it writes, that re-running resumes, the old layout."""

import json

import pytest
import yaml

from mda_fast.cli import main
from mda_fast.demo.config import DemoConfig
from mda_fast.demo.train_demo import run_demo_training
from mda_fast.intervene.demo_exp import _adopt_nested_run
from test_intervene_helpers import one_thread  # noqa: F401 (autouse fixture)

TINY = dict(layers=2, d_model=32, heads=2, intermediate=64, steps=8, rows_per_step=4, save_every=2, seq_len=33,
            probe_n=4, probe_len=8)


def _trained(exp):
    """mtime of every run's training log: unchanged = the run was reused, not retrained."""
    return {p.relative_to(exp).as_posix(): p.stat().st_mtime_ns for p in exp.glob("runs/*/seed0/train/metrics.jsonl")}


@pytest.mark.filterwarnings("ignore:Mean of empty slice")   # too few rows for held-out ICL rows: NaN curve
def test_demo_experiment_writes_to_out_experiment_and_resumes(tmp_path, capsys):
    out, conf = tmp_path / "demo", tmp_path / "tiny.yaml"
    conf.write_text(yaml.safe_dump(TINY))
    run_demo_training(out, DemoConfig(**TINY), progress=False)
    info = json.loads((out / "induction.json").read_text())
    info["window"] = [2, 4]                       # a tiny run forms no head: pin a formation window
    (out / "induction.json").write_text(json.dumps(info))
    argv = ["demo", "--out", str(out), "--config", str(conf), "--experiment", "--seeds", "1", "--no-progress",
            "--top-k", "2"]
    assert main(argv) == 0
    exp = out / "experiment"
    assert f"{exp}/summary.json" in capsys.readouterr().out
    assert not (exp / "experiment").exists()
    for f in ("config.json", "summary.json", "curves.json", "report.html", "synthetic.bin"):
        assert (exp / f).is_file(), f
    runs = _trained(exp)
    assert len(runs) == 6                         # baseline, 4 top/random plans, insert-synthetic
    assert main(argv) == 0                        # re-running reuses every finished run
    assert _trained(exp) == runs


def test_a_run_in_the_old_nested_folder_is_moved_up(tmp_path):
    exp = tmp_path / "experiment"
    old = exp / "experiment"
    (old / "runs" / "delete" / "seed0").mkdir(parents=True)
    (old / "runs" / "delete" / "seed0" / "curve.json").write_text("{}")
    (old / "config.json").write_text("{}")
    (exp / "synthetic.bin").write_bytes(b"x")     # the old layout kept the synthetic rows one level up
    _adopt_nested_run(exp)
    assert not old.exists()
    assert (exp / "config.json").is_file() and (exp / "runs" / "delete" / "seed0" / "curve.json").is_file()
    assert (exp / "synthetic.bin").read_bytes() == b"x"
    _adopt_nested_run(exp)                        # nothing nested: no-op
    assert (exp / "config.json").is_file()
