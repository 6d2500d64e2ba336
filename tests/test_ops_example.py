"""examples/ops_in_your_loop.py: the ops in someone else's loop agree with plain torch autograd, the
check catches a wrong capture, and docs/ops.md shows the example's code as it is."""

import importlib.util
import pathlib
import re
import subprocess
import sys

import pytest
import torch

from mda_fast.ops import available_backends

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "ops_in_your_loop.py"
SMALL = dict(n_train=24, n_query=3, T=4, d_in=5, I=10, O=7, classes=4, k=3, verbose=False)


def _example():
    spec = importlib.util.spec_from_file_location("ops_in_your_loop", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ex = _example()


@pytest.mark.parametrize("backend", ["torch", "auto"] + (["cpp"] if "cpp" in available_backends("cpu") else []))
def test_ops_agree_with_per_row_autograd_fp32(backend):
    out = ex.main(backend=backend, **SMALL)
    assert out["ok"], out["errors"]
    assert max(out["errors"].values()) < 1e-5, out["errors"]
    assert out["scores"].shape == (SMALL["n_train"], SMALL["n_query"]) and out["scores"].dtype == torch.float32


def test_bf16_inputs_fp32_outputs_within_bf16_tolerance():
    out = ex.main(backend="torch", dtype=torch.bfloat16, **SMALL)
    assert out["ok"], out["errors"]
    assert out["scores"].dtype == torch.float32
    assert 1e-5 < out["errors"]["V"] < 5e-2  # really bf16 inputs: not as exact as fp32


def test_check_catches_a_mean_reduced_capture():
    """Capturing with loss.mean() scales every g by 1/B: Λ, the query gradients and the scores are
    then off, and the brute-force comparison must say so."""
    out = ex.main(backend="torch", mean_loss=True, **SMALL)
    assert not out["ok"]
    assert out["errors"]["lam"] > 0.5 and out["errors"]["V"] > 0.5 and out["errors"]["scores"] > 0.5


def test_check_catches_wrong_seeded_projection(monkeypatch):
    """A projection that differs from the one the reference materializes must show up in 'proj'."""
    real = ex.project_per_sample_grad

    def other_seed(a, g, P_in, P_out, **kw):
        if isinstance(P_in, ex.SeededProjection):
            P_in = ex.SeededProjection(P_in.dim, P_in.k, seed=P_in.seed + 7)
        return real(a, g, P_in, P_out, **kw)

    monkeypatch.setattr(ex, "project_per_sample_grad", other_seed)
    out = ex.main(backend="torch", **SMALL)
    assert not out["ok"] and out["errors"]["proj"] > 0.1 and out["errors"]["scores"] < 1e-5


def test_docs_snippet_is_the_examples_code():
    doc = (ROOT / "docs" / "ops.md").read_text()
    blocks = re.findall(r"<!-- verbatim from examples/ops_in_your_loop\.py[^>]*-->\n```python\n(.*?)```", doc, re.S)
    assert blocks, "docs/ops.md lost its verbatim example block"
    source = EXAMPLE.read_text()
    for block in blocks:
        assert block in source, "docs/ops.md's snippet no longer matches examples/ops_in_your_loop.py"


def test_script_runs_as_documented():
    r = subprocess.run([sys.executable, str(EXAMPLE), "--backend", "torch", "--n-train", "16"],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "agree" in r.stdout and "DISAGREE" not in r.stdout
