"""Backend selection of mda_fast.ops: names, availability, auto choice."""

import pytest
import torch

import mda_fast.ops as ops
from mda_fast.ops import dispatch


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


def test_unknown_backend_is_value_error():
    a, g = torch.randn(2, 3, 4), torch.randn(2, 3, 5)
    with pytest.raises(ValueError, match="backend"):
        ops.grad_dot_queries(a, g, torch.randn(1, 5, 4), backend="fortran")


def test_unavailable_backend_is_value_error(monkeypatch):
    monkeypatch.setitem(dispatch._cache, "cpp", (None, False, "not built"))
    with pytest.raises(ValueError, match="cpp.*not built"):
        ops.grad_dot_queries(torch.randn(2, 3, 4), torch.randn(2, 3, 5), torch.randn(1, 5, 4), backend="cpp")


def test_cuda_backend_refuses_cpu_tensors(monkeypatch):
    class Fake:
        pass

    monkeypatch.setitem(dispatch._cache, "cuda", (Fake(), True, "fake"))
    with pytest.raises(ValueError, match="cpu tensors"):
        ops.grad_dot_queries(torch.randn(2, 3, 4), torch.randn(2, 3, 5), torch.randn(1, 5, 4), backend="cuda")


def test_auto_on_cpu_never_picks_the_interpreter():
    mod = dispatch._pick("grad_dot_queries", "auto", torch.device("cpu"), False, (8, 1536, 512))
    assert mod.__name__.endswith(("reference", "backend_cpp"))


def test_cpu_op2_routing_follows_the_l3_rule(monkeypatch):
    if not dispatch._load("cpp")[1]:
        pytest.skip("C++ extension not built")
    pick = lambda shape: dispatch._pick("grad_dot_queries", "auto", torch.device("cpu"), False, shape).__name__
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert pick((8, 1536, 512)).endswith("backend_cpp")  # 25 MB of queries: > L3
    assert pick((8, 128, 512)).endswith("reference")     # 2 MB: fits
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert pick((8, 1536, 512)).endswith("reference")
