"""Runs that cannot be fooled: stages reused by content (never by path), refused or redone when their
inputs changed, atomic under a kill, and one writer at a time."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import mda_fast.attribution.fit.factors as factors_mod
from mda_fast.attribution import FactorSet, load_scores
from mda_fast.cli import main
from mda_fast.models import make_tiny_model

from test_attr_bruteforce import one_thread  # noqa: F401  (autouse fixture)
from test_cli_errors import COMMON, mda

MODEL = ["--model", "ckpt/step1"]


@pytest.fixture()
def d(tmp_path, monkeypatch):
    rows = np.random.default_rng(0).integers(2, 256, size=(40, 17)).astype(np.int64)
    np.save(tmp_path / "rows.npy", rows)
    for step, seed in ((1, 3), (2, 4)):
        make_tiny_model("neox", seed=seed, hidden_size=32, intermediate_size=64).save_pretrained(tmp_path / "ckpt" / f"step{step}")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _mtime(path) -> int:
    return Path(path).stat().st_mtime_ns


def test_respelled_or_moved_runs_are_the_same_run(d, capsys):
    assert main(["fit", *COMMON, "--model", "./ckpt/step1", "--out", "F"]) == 0
    stamp = _mtime(d / "F" / "factors" / "manifest.json")
    assert main(["run", *COMMON, "--model", str(d / "ckpt" / "step1"), "--out", str(d / "F"), "-k", "2"]) == 0
    assert _mtime(d / "F" / "factors" / "manifest.json") == stamp, "the factors were fitted again"
    scores = _mtime(d / "F" / "scores" / "scores.npz")
    shutil.move(d / "F", d / "moved")
    capsys.readouterr()
    assert main(["score", *COMMON, "--model", "ckpt/step1/", "--out", "moved"]) == 0
    assert _mtime(d / "moved" / "scores" / "scores.npz") == scores, "complete scores were computed again"


def test_replaced_checkpoint_is_refitted_and_rescored(d):
    argv = ["run", *COMMON, "--model", "ckpt/step1", "--out", "R", "-k", "2"]
    assert main(argv) == 0
    first = load_scores("R/scores")
    fit = FactorSet.load("R/factors").manifest["fingerprint"]
    shutil.rmtree(d / "ckpt" / "step1")
    shutil.copytree(d / "ckpt" / "step2", d / "ckpt" / "step1")      # other weights under the same path
    assert main(argv) == 0
    again = load_scores("R/scores")
    assert FactorSet.load("R/factors").manifest["fingerprint"] != fit
    assert again.manifest["fingerprint"] != first.manifest["fingerprint"]
    assert not np.array_equal(again.scores, first.scores)


def test_killed_fit_never_pairs_new_tensors_with_an_old_manifest(d, monkeypatch):
    assert main(["fit", *COMMON, *MODEL, "--out", "F"]) == 0
    old = FactorSet.load("F/factors")

    def killed(path, obj):
        raise KeyboardInterrupt("killed after factors.safetensors, before manifest.json")
    with monkeypatch.context() as m:
        m.setattr(factors_mod, "write_json", killed)
        assert main(["fit", *COMMON, *MODEL, "--out", "F", "--set", "settings.fit_seed=1"]) == 130
    kept = FactorSet.load("F/factors")           # still the old fit, whole: tensors and manifest agree
    assert kept.manifest["settings"]["fit_seed"] == 0
    assert torch.equal(kept.blocks["L1.H1.qk"].lam, old.blocks["L1.H1.qk"].lam)
    assert sorted(os.listdir(d / "F")) == [".lock", "factors"]
    assert main(["score", *COMMON, *MODEL, "--out", "F"]) == 0
    assert load_scores("F/scores").manifest["fit"]["settings"]["fit_seed"] == 0


# The second writer: imports and loads everything first (the slow part), waits until the first
# holds the run directory's lock, then runs the command as `python -m mda_fast` would.
SECOND = """
import fcntl, os, sys, time
from mda_fast.cli import main
from mda_fast.models import load_model
import mda_fast.attribution.pipeline
load_model("ckpt/step1", load_tokenizer=False)
print("ready", flush=True)
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
while True:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        time.sleep(0.01)
    except BlockingIOError:
        break
os.close(fd)
sys.exit(main(sys.argv[2:]))
"""


def test_two_concurrent_scores_leave_the_folder_usable(d):
    rows = np.random.default_rng(1).integers(2, 256, size=(400, 33)).astype(np.int64)
    np.save(d / "long.npy", rows)
    argv = [*COMMON, *MODEL, "--data", "long.npy", "--steps", "0:100", "--set", "settings.fit_fraction=0.05"]
    assert main(["fit", *argv, "--out", "F"]) == 0
    assert main(["score", *argv, "--out", "ref", "--factors", "F/factors"]) == 0
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1")
    score = ["score", *argv, "--out", "F", "--set", "settings.chunk_rows=2"]
    second = subprocess.Popen([sys.executable, "-c", SECOND, str(d / "F" / ".lock"), *score, "--batch-size", "5"],
                              cwd=d, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert second.stdout.readline().strip() == "ready"
    first = subprocess.Popen([sys.executable, "-m", "mda_fast", *score, "--batch-size", "3"], cwd=d, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    (rc1, err1), (rc2, err2) = [(p.wait(timeout=300), p.stderr.read()) for p in (first, second)]
    assert rc1 == 0, err1
    assert rc2 == 2 and "is already being written by pid" in err2 and "Traceback" not in err2, err2
    table, ref = load_scores("F/scores"), load_scores("ref/scores")
    np.testing.assert_array_equal(table.row_ids, ref.row_ids)
    assert np.abs(table.scores - ref.scores).max() <= 1e-5 * np.abs(ref.scores).max()
    proc, _ = mda(["score", *argv, "--out", "F", "--batch-size", "7"], d)   # and it stays usable
    assert proc.returncode == 0, proc.stderr


def test_float64_checkpoint_is_loaded_as_float32(d):
    model = make_tiny_model("neox", seed=3, hidden_size=32, intermediate_size=64)
    model.to(torch.float64).save_pretrained(d / "ck64")
    assert main(["run", *COMMON, "--model", "ck64", "--out", "R64", "-k", "2"]) == 0
    assert main(["run", *COMMON, *MODEL, "--out", "R32", "-k", "2"]) == 0
    a, b = load_scores("R64/scores"), load_scores("R32/scores")
    assert a.manifest["identity"]["dtype"] == "float32"
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=1e-6 * np.abs(b.scores).max())
