"""Backend selection of mda_fast.ops (mda_fast/ops/backends.py): names, availability, auto choice,
and where the Triton kernels come from."""

import os

import pytest
import torch

import mda_fast.ops as ops
from mda_fast.ops import backends
from mda_fast.ops import op_grad_dot_queries as op2

CPU = torch.device("cpu")


def test_available_backends_cpu_has_torch_last():
    names = ops.available_backends("cpu")
    assert names[-1] == "torch"
    assert "cuda" not in names


def test_backend_status_reports_every_backend():
    st = ops.backend_status()
    assert set(st) == {"torch", "cpp", "cuda", "triton"}
    assert st["torch"][0] is True
    for ok, reason in st.values():
        assert isinstance(ok, bool) and reason


def test_report_is_the_backend_status():
    """`mda env` lists the ops' own status: the same (available, reason) for every shared name."""
    rep, st = backends.report(), ops.backend_status()
    for name in ("cpp", "cuda", "torch"):
        assert rep[name] == st[name]
    if torch.cuda.is_available():
        assert rep["triton"] == st["triton"]
    elif os.environ.get("TRITON_INTERPRET") == "1":
        assert rep["triton-interpreter"] == st["triton"]


def test_unknown_backend_is_value_error():
    a, g = torch.randn(2, 3, 4), torch.randn(2, 3, 5)
    with pytest.raises(ValueError, match="backend"):
        ops.grad_dot_queries(a, g, torch.randn(1, 5, 4), backend="fortran")


def test_unavailable_backend_is_value_error(monkeypatch):
    monkeypatch.setitem(backends._cache, "cpp", (False, "not built"))
    with pytest.raises(ValueError, match="cpp.*not built"):
        ops.grad_dot_queries(torch.randn(2, 3, 4), torch.randn(2, 3, 5), torch.randn(1, 5, 4), backend="cpp")


def test_cuda_backend_refuses_cpu_tensors(monkeypatch):
    monkeypatch.setitem(backends._cache, "cuda", (True, "fake"))
    with pytest.raises(ValueError, match="cpu tensors"):
        ops.grad_dot_queries(torch.randn(2, 3, 4), torch.randn(2, 3, 5), torch.randn(1, 5, 4), backend="cuda")


def test_auto_on_cpu_never_picks_the_interpreter():
    assert backends.choose("auto", CPU, empty=False, prefer_cpp=False) == "torch"
    assert backends.choose("auto", CPU, empty=False, prefer_cpp=True) in ("cpp", "torch")
    assert backends.choose("auto", CPU, empty=True, prefer_cpp=True) == "torch"


def test_cpu_op2_routing_follows_the_l3_rule(monkeypatch):
    if not backends.status("cpp")[0]:
        pytest.skip("C++ extension not built")
    pick = lambda n, O, I: backends.choose("auto", CPU, empty=False, prefer_cpp=op2.prefers_cpp(n, O, I))
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert pick(8, 1536, 512) == "cpp"    # 25 MB of queries: > L3
    assert pick(8, 128, 512) == "torch"   # 2 MB: fits
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert pick(8, 1536, 512) == "torch"


def test_triton_kernels_come_from_this_tree():
    """In a source checkout kernels/ next to this mda_fast is used (never another install's copy);
    installed, mda_fast/kernels/. Either way the status names the directory."""
    pytest.importorskip("triton")
    pkg, where = backends.kernels()
    assert pkg is not None, where
    installed, source = backends._kernel_dirs()
    assert os.path.dirname(pkg.__file__) == where and where in (installed, source)
    assert backends.kernel("grad_dot_queries").__file__ == os.path.join(where, "grad_dot_queries.py")
    assert where in backends.triton_modes()["triton-interpreter"][1]


def test_missing_triton_kernels_say_where_they_were_looked_for(monkeypatch, tmp_path):
    monkeypatch.setattr(backends, "_kernel_dirs", lambda: (str(tmp_path / "a"), str(tmp_path / "b")))
    monkeypatch.delitem(__import__("sys").modules, "mda_fast.kernels", raising=False)
    monkeypatch.setattr(backends, "_kernels", [])
    pkg, why = backends.kernels()
    assert pkg is None and str(tmp_path / "a") in why and str(tmp_path / "b") in why
    with pytest.raises(RuntimeError, match="not found"):
        backends.kernel("grad_dot_queries")
