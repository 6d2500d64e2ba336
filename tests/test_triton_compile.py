"""The Triton kernels compile for real GPUs (sm_80, sm_90) on a machine without one.

tests/triton_aot.py records what each op's launcher would launch (kernel, constexprs, dtypes, warps)
and compiles it with Triton's bundled ptxas. Asserted: every launch compiles for both targets, none
spills registers to local memory, and the bf16 paths of ops 1-2 use tensor-core MMA. Speed is a GPU
benchmark's business (benchmarks/), not this test's.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

triton = pytest.importorskip("triton")
PTXAS = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
pytestmark = pytest.mark.skipif(not PTXAS.exists(), reason="Triton's NVIDIA backend (ptxas) is not installed")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compiled():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])  # this checkout, installed or not
    r = subprocess.run([sys.executable, str(ROOT / "tests" / "triton_aot.py"), "--arch", "80", "--arch", "90", "--json"],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_every_launch_compiles_for_both_targets(compiled):
    cases = {(r["case"], r["arch"]) for r in compiled}
    ops = {c.split("/")[0] for c, _ in cases}
    assert ops == {"project_per_sample_grad", "grad_dot_queries", "ekfac_lambda_accumulate",
                   "kron_inverse_apply_grouped", "linear_cross_entropy"}
    assert {a for _, a in cases} == {80, 90}


def test_no_register_spills(compiled):
    spills = [(r["case"], r["kernel"], r["arch"], r["spill_bytes"]) for r in compiled if r["spill_bytes"]]
    assert not spills, f"kernels spilling to local memory: {spills}"


def test_low_precision_paths_use_tensor_cores(compiled):
    for r in compiled:
        if "bfloat16" in r["case"] and r["case"].split("/")[0] in ("project_per_sample_grad", "grad_dot_queries"):
            assert r["mma"], f"{r['case']} on sm_{r['arch']} has no tensor-core MMA in its PTX"
        if "float32" in r["case"]:
            assert not r["mma"], f"{r['case']} (exact fp32) unexpectedly uses tensor cores"
