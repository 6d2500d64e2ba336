"""Every user mistake, run as a user runs it: `python -m mda_fast ...` in a subprocess.

Each row of the table (tests/cli_error_cases.yaml) must end with exit status 2, exactly one
`mda: error:` line naming the problem, no traceback, and nothing that looks complete in its output
directory. The subprocesses import
the checkout this file belongs to (PYTHONPATH = the repository root above tests/). The rows run
two at a time (each is mostly Python start-up and imports).
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from mda_fast.attribution import FactorSet
from mda_fast.cli import main
from mda_fast.data import write_mmidx
from mda_fast.models import make_tiny_model
from mda_fast.ops.backends import status

REPO = Path(__file__).resolve().parents[1]
COMMON = ["--units", "L1.H1.qk", "--probes", "prev_attn:L1.H1", "--data", "rows.npy", "--steps", "2:7",
          "--rows-per-step", "4", "--no-progress", "--set", "settings.probe_n=4", "--set", "settings.probe_seq_len=16",
          "--set", "settings.fit_fraction=1.0"]
COMPLETE = ("factors/manifest.json", "scores/scores.npz", "top/top.json", "heads/heads.json", "index/rows.npz")
PR_CAPBSET_DROP, CAP_DAC_OVERRIDE = 24, 1


def mda(argv, cwd, preexec=None, timeout=180):
    """(CompletedProcess, seconds) of `python -m mda_fast *argv` importing this checkout."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               MPLCONFIGDIR=str(Path(cwd) / ".mpl"), OMP_NUM_THREADS="1")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mda_fast", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, preexec_fn=preexec)
    return proc, time.perf_counter() - t0


def _save_model(path, seed):
    make_tiny_model("neox", seed=seed, hidden_size=32, intermediate_size=64).save_pretrained(path)


def _corrupt_factors(d: Path, name: str, edit) -> None:
    """A copy of F/factors whose tensors or manifest ``edit`` changed (saved consistently)."""
    fs = FactorSet.load(str(d / "F" / "factors"))
    edit(fs)
    fs.save(str(d / name))


def _build_data(d: Path) -> None:
    rows = np.random.default_rng(0).integers(2, 256, size=(40, 17)).astype(np.int64)
    np.save(d / "rows.npy", rows)
    for name, value in (("bigtok.npy", 100000), ("neg.npy", -5)):
        bad = rows.copy()
        bad[10, 3] = value                                       # row 10: inside the window (rows 8..27)
        np.save(d / name, bad)
    (d / "short.npy").write_bytes((d / "rows.npy").read_bytes()[:500])
    pq.write_table(pa.table({"uid": [1, 2], "other": [3, 4]}), d / "notokens.parquet")
    (d / "emptydir").mkdir()
    write_mmidx(d / "doc", rows)
    (d / "badmagic.idx").write_bytes(b"NOTANIDX" + bytes(40))
    (d / "badmagic.bin").write_bytes(b"")
    (d / "trunc.idx").write_bytes((d / "doc.idx").read_bytes()[:100])
    shutil.copy(d / "doc.bin", d / "trunc.bin")
    shutil.copy(d / "doc.idx", d / "nobin.idx")
    (d / "eight.yaml").write_text(yaml.safe_dump({"settings": {"batch_size": "eight"}}))


def _build_models(d: Path) -> None:
    _save_model(d / "ckpt" / "step1", 3)
    _save_model(d / "ckpt" / "step2", 4)
    (d / "trunc").mkdir()
    shutil.copy(d / "ckpt" / "step1" / "config.json", d / "trunc")
    (d / "trunc" / "model.safetensors").write_bytes((d / "ckpt" / "step1" / "model.safetensors").read_bytes()[:3000])
    (d / "mism").mkdir()
    shutil.copy(d / "ckpt" / "step1" / "model.safetensors", d / "mism")
    cfg = json.loads((d / "ckpt" / "step1" / "config.json").read_text())
    (d / "mism" / "config.json").write_text(json.dumps(dict(cfg, intermediate_size=48)))


def _build_factors(d: Path) -> None:
    here = os.getcwd()
    os.chdir(d)
    try:
        assert main(["fit", "--model", "ckpt/step1", "--out", "F", *COMMON]) == 0
        assert main(["score", "--model", "ckpt/step1", "--out", "F", *COMMON]) == 0
        assert main(["fit", "--model", "ckpt/step1", "--out", "G", *COMMON, "--steps", "3:8"]) == 0
        assert main(["index", "--model", "ckpt/step1", "--out", "F", *COMMON, "--k", "4"]) == 0
    finally:
        os.chdir(here)
    lam = lambda fs: fs.blocks["L1.H1.qk"].lam  # noqa: E731
    _corrupt_factors(d, "F_nan", lambda fs: lam(fs).__setitem__((0, 0), float("nan")))
    _corrupt_factors(d, "F_inf", lambda fs: lam(fs).__setitem__((0, 1), float("inf")))
    _corrupt_factors(d, "F_neg", lambda fs: lam(fs).neg_())
    shutil.copytree(d / "F" / "factors", d / "F_damping")
    m = json.loads((d / "F_damping" / "manifest.json").read_text())
    m["blocks"]["L1.H1.qk"]["damping"] = float("nan")
    (d / "F_damping" / "manifest.json").write_text(json.dumps(m))
    shutil.copytree(d / "F" / "index", d / "F_holed", ignore=shutil.ignore_patterns("chunk-*"))  # its one chunk lost
    shutil.copytree(d / "F" / "factors", d / "F_torn")        # new tensors under an old manifest
    shutil.copy(d / "G" / "factors" / "factors.safetensors", d / "F_torn")
    (d / "ro").mkdir()
    (d / "ro").chmod(0o555)
    (d / "afile").write_text("x")


@pytest.fixture(scope="module")
def env():
    d = Path(tempfile.mkdtemp(prefix="mda-cli-errors-"))
    try:
        _build_data(d)
        _build_models(d)
        _build_factors(d)
        yield d
    finally:
        (d / "ro").chmod(0o755)
        shutil.rmtree(d, ignore_errors=True)


def _unprivileged():
    """As root, give up the capability to write through file permissions (CAP_DAC_OVERRIDE, dropped
    from the bounding set so the exec'ed process cannot regain it); others obey them anyway."""
    if os.geteuid() == 0 and ctypes.CDLL(None, use_errno=True).prctl(PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, 0, 0, 0):
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP, CAP_DAC_OVERRIDE) failed")


def _no_space():
    """A full output disk, as the kernel reports it to a process over its file-size limit: files
    stop growing at 1 KiB (enough for Python's start-up, less than the 4 KiB writability probe)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))


class Held:
    """Another process's writer lock on ``<dir>/.lock`` (held by the test process itself)."""

    def __init__(self, d: Path):
        d.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(d / ".lock", os.O_RDWR | os.O_CREAT)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self):
        os.close(self.fd)


CASES = {c["name"]: c for c in yaml.safe_load((Path(__file__).with_name("cli_error_cases.yaml")).read_text())}
SKIP = {"cuda_built": status("cuda")[0], "cuda_device": torch.cuda.is_available()}
PREEXEC = {"unprivileged": _unprivileged, "no_space": _no_space}


def _out_of(name: str) -> str:
    return "out-" + "".join(c if c.isalnum() else "_" for c in name)


def _argv(name: str) -> list[str]:
    argv = shlex.split(CASES[name]["argv"])
    if argv[0] == "top":
        return argv
    return [argv[0], *COMMON, "--model", "ckpt/step1", "--out", _out_of(name), *argv[1:]]


def _run_case(d: Path, name: str):
    setup = CASES[name].get("setup")
    held = Held(d / _out_of(name)) if setup == "locked" else None
    try:
        return mda(_argv(name), d, preexec=PREEXEC.get(setup))
    except subprocess.SubprocessError as exc:       # the set-up cannot be done on this machine
        return exc
    finally:
        if held:
            held.release()


def _skipped(name: str) -> bool:
    return bool(SKIP.get(CASES[name].get("skip_if")))


@pytest.fixture(scope="module")
def results(env):
    names = [n for n in CASES if not _skipped(n)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = dict(zip(names, pool.map(lambda n: _run_case(env, n), names)))
    return done


@pytest.mark.parametrize("name", list(CASES))
def test_user_error_is_one_line_exit_2(env, results, name):
    if _skipped(name):
        pytest.skip("this machine has what the row needs to lack (CUDA)")
    if isinstance(results[name], Exception):
        pytest.skip(f"this machine cannot set the row up ({results[name]})")
    proc, sec = results[name]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("mda: error:")]
    print(f"{name} ({sec:.1f} s): {lines}")
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert CASES[name]["error"] in lines[0], lines[0]
    out = env / _out_of(name)
    assert not [c for c in COMPLETE if (out / c).exists()], "something that looks complete was left behind"


def test_no_network_for_a_local_looking_path(results):
    proc, sec = results["relative model path that does not exist"]
    assert "huggingface.co" not in proc.stderr and sec < 30


def test_existing_scores_of_another_run_are_refused_and_kept(env):
    before = (env / "F" / "scores" / "scores.npz").read_bytes()
    proc, _ = mda(["score", *COMMON, "--model", "ckpt/step1", "--out", "F", "--probes", "copy_target"], env)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("mda: error:")]
    assert proc.returncode == 2 and len(lines) == 1 and "holds scores of another run (probes:" in lines[0]
    assert (env / "F" / "scores" / "scores.npz").read_bytes() == before
