"""`mda demo --experiment` on a tiny config (the CI variant): it runs end to end, the summary has every
field, re-running resumes. No threshold is asserted on the result: a tiny model forms no head."""

import json

import pytest
import yaml

from mda_fast.cli import main
from mda_fast.demo.config import DemoConfig
from mda_fast.demo.experiment import CONTRASTS, MAIN_CONDITIONS
from mda_fast.demo.train_demo import run_demo_training
from test_intervene_helpers import one_thread  # noqa: F401 (autouse fixture)

TINY = dict(layers=2, d_model=32, heads=2, intermediate=64, steps=12, rows_per_step=4, save_every=2, seq_len=33,
            probe_n=4, probe_len=8, after_formed=0,
            strata=[{"name": "clean", "share": 0.25, "span": [8, 12]}, {"name": "noisy", "share": 0.25, "corrupt": 0.5}])


def _trained(exp):
    """mtime of every run's training log: unchanged = the run was reused, not retrained."""
    return {p.relative_to(exp).as_posix(): p.stat().st_mtime_ns for p in exp.glob("runs/*/seed*/train/metrics.jsonl")}


def _pin_window(out):
    """A tiny run forms no head: pin a formation window and the two units the real demo finds."""
    info = json.loads((out / "induction.json").read_text())
    ind = dict(info, metric="induction", probe="copy_target", layer=1, head=0, window=[2, 4])
    prev = dict(info, metric="previous_token", probe="prev_attn:L0.H1", layer=0, head=1, window=[2, 4])
    for u in (ind, prev):
        u.pop("units", None)
    info.update(ind, units=[ind, prev])
    (out / "induction.json").write_text(json.dumps(info))


@pytest.mark.filterwarnings("ignore:Mean of empty slice")
def test_demo_experiment_runs_end_to_end_with_every_field(tmp_path, capsys):
    out, conf = tmp_path / "demo", tmp_path / "tiny.yaml"
    conf.write_text(yaml.safe_dump(TINY))
    run_demo_training(out, DemoConfig(**TINY), progress=False)
    _pin_window(out)
    argv = ["demo", "--out", str(out), "--config", str(conf), "--experiment", "--seeds", "2", "--jobs", "2",
            "--lds-subsets", "3", "--lds-fractions", "0.5,0.75", "--no-progress", "--top-k", "2"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    exp = out / "experiment"
    assert f"{exp}/summary.json" in printed and "LDS over 3 random 50% subsets" in printed
    assert "LDS over 3 random 75% subsets" in printed and "Paired contrasts" in printed
    for f in ("config.json", "summary.json", "curves.json", "curves.png", "effects.png", "report.html",
              "synthetic.bin", "lds/lds.json", "lds-keep0.75/lds.json", "heads.json"):
        assert (exp / f).is_file(), f
    s = json.loads((exp / "summary.json").read_text())
    assert set(s["units"]) == {"induction", "previous-token"}
    conds = s["units"]["induction"]["conditions"]
    want = set(MAIN_CONDITIONS) | {"delete-top-10%-prev", "kind-random-delete-10%-prev",
                                   "delete-stratum-clean", "delete-stratum-noisy"}
    assert set(conds) == want
    for name, row in conds.items():
        assert {"cross", "cross_mean", "cross_std", "censored", "seeds"} <= set(row), name
        if name != "baseline":
            assert {"mean", "std", "ci95", "p", "n"} <= set(row["shift_pct"]) and row["shift_pct"]["n"] == 2
    plans = s["plans"]
    assert plans["kind-random-delete-10%"]["count"] == plans["delete-top-10%"]["count"]
    assert sum(plans["kind-random-delete-10%"]["composition"].values()) == plans["delete-top-10%"]["count"]
    assert plans["delete-stratum-clean"]["count"] == plans["delete-stratum-noisy"]["count"] > 0
    assert set(s["contrasts"]["induction"]) == {f"{a} - {b}" for a, b in CONTRASTS if a in want and b in want}
    assert set(s["ranking"]) == {"EK-FAC (MDA)", "gradient dot product", "feature copy_share"}
    assert set(s["ranking"]["EK-FAC (MDA)"]["stratum"]) == {"clean", "noisy"}
    assert s["icl"] is not None and set(s["icl"]["conditions"]) == want
    assert [x["fraction_kept"] for x in s["lds_by_fraction"]] == [0.5, 0.75]
    lds = s["lds_by_fraction"][0]["targets"]
    assert len(lds) == 2 and set(lds[0]["attributors"]) == {"EK-FAC (MDA)", "gradient dot product"}
    assert {"rho", "ci95", "n"} <= set(lds[0]["attributors"]["EK-FAC (MDA)"]["lds_probe"])
    assert lds[0]["noise_ceiling"]["probe"]["seeds"] == 2 and s["lds_by_fraction"][0]["runs"] == 2 * 4
    assert s["machine"]["cores"] >= 1
    demo = json.loads((out / "demo.json").read_text())
    assert [u["unit"] for u in demo["units"]] == ["L1.H0.qk", "L0.H1.qk"] and demo["overlap"]["pairs"]
    runs = _trained(exp)
    assert len(runs) == 2 * len(want)
    assert main(argv) == 0                        # re-running reuses every finished run
    assert _trained(exp) == runs
    assert main(argv + ["--conditions", "delete-top-10%", "--lds-subsets", "0"]) == 0     # a subset, reused
    assert set(json.loads((exp / "summary.json").read_text())["units"]["induction"]["conditions"]) == \
        {"baseline", "delete-top-10%"} and _trained(exp) == runs
    assert main(argv + ["--conditions", "delete-top-10%,nope"]) == 2
    assert "unknown experiment conditions ['nope']" in capsys.readouterr().err
