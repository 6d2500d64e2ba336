"""The compiled CPU extension: it imports, its ops (through the adapter backend_cpp, both routes)
match an inline float64 einsum, bad input is refused by the front door before any C++ call, and the
package falls back to torch without it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import mda_fast.ops as ops
from mda_fast.ops import backend_cpp, backends
from mda_fast.ops import op_ekfac_lambda_accumulate as op3
from mda_fast.ops import op_grad_dot_queries as op2
from op_cases import Seeded

needs_ext = pytest.mark.skipif(not backends.status("cpp")[0], reason=backends.status("cpp")[1])


def _close(x, ref, tol):
    x = x.double()
    err = ((x - ref).norm() / ref.norm().clamp_min(1e-30)).item()
    assert err < tol, f"relative error {err:.2e} >= {tol:.0e}"


def _orth(n, gen):
    return torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))[0]


# ---- import and the hash -------------------------------------------------------------------------
def test_extension_imports():
    if os.environ.get("MDA_FAST_NO_EXT") == "1":
        pytest.skip("built without extensions (MDA_FAST_NO_EXT=1)")
    ok, why = backends.status("cpp")
    assert ok, why
    from mda_fast import _C

    assert _C.simd_path() in ("avx2+fma", "generic")
    assert _C.max_threads() >= 1


@needs_ext
def test_seeded_projection_matches_python_hash():
    from mda_fast import _C

    for dim, k, seed in [(7, 3, 0), (33, 17, 12345), (5, 64, 0xFFFFFFFF)]:
        out = torch.empty(dim, k)
        _C.seeded_projection(dim, k, seed, out.data_ptr())
        _close(out, Seeded(dim, k, seed).dense(), 1e-7)


def test_one_cpu_source_per_op():
    """csrc/cpu/<op>.cpp for each op, next to the shared GEMM and the bindings."""
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "csrc", "cpu")
    names = {f for f in os.listdir(root) if f.endswith(".cpp")}
    assert names == {"project_per_sample_grad.cpp", "grad_dot_queries.cpp", "ekfac_lambda_accumulate.cpp",
                     "kron_inverse_apply.cpp", "gemm.cpp", "bindings.cpp"}, names


@needs_ext
def test_route_names_are_checked_in_cpp():
    a, g, Q = torch.randn(2, 3, 4), torch.randn(2, 3, 5), torch.randn(1, 5, 4)
    with pytest.raises(ValueError, match="route must be 'factored' or 'materialized'"):
        backend_cpp.grad_dot_queries(a, g, Q, "inputs")
    with pytest.raises(ValueError, match="route"):
        backend_cpp.ekfac_lambda_accumulate(a, g, torch.eye(4), torch.eye(5), torch.zeros(5, 4), "gradients")


# ---- numerics against an inline float64 einsum ------------------------------------------------------
SHAPES = [  # B, T, I, O, ki, ko: odd sizes, T=1, B=1, k not a multiple of 16, k > 16
    (3, 37, 19, 11, 5, 7),
    (1, 300, 70, 33, 17, 20),
    (9, 5, 40, 8, 3, 33),
    (2, 1, 5, 3, 1, 1),
]


@pytest.fixture(params=["simd", "generic"])
def kernel_path(request):
    from mda_fast import _C

    _C.set_force_generic(request.param == "generic")
    yield request.param
    _C.set_force_generic(False)


@needs_ext
@pytest.mark.parametrize("shape", SHAPES)
def test_ops_match_einsum(shape, kernel_path):
    B, T, I, O, ki, ko = shape
    gen = torch.Generator().manual_seed(sum(shape))
    a64 = torch.randn(B, T, I, generator=gen, dtype=torch.float64)
    g64 = torch.randn(B, T, O, generator=gen, dtype=torch.float64)
    a, g = a64.float(), g64.float()
    # op 1, dense and seeded projections
    Pi, Po = torch.randn(I, ki, generator=gen, dtype=torch.float64), torch.randn(O, ko, generator=gen, dtype=torch.float64)
    ref = torch.einsum("bto,bti,ok,ij->bkj", g64, a64, Po, Pi)
    _close(backend_cpp.project_per_sample_grad(a, g, Pi.float(), Po.float()), ref, 1e-5)
    si, so = Seeded(I, ki, 7), Seeded(O, ko, 11)
    ref = torch.einsum("bto,bti,ok,ij->bkj", g64, a64, so.dense(), si.dense())
    _close(backend_cpp.project_per_sample_grad(a, g, si, so), ref, 1e-5)
    # op 2, both routes
    Q = torch.randn(4, O, I, generator=gen, dtype=torch.float64)
    ref = torch.einsum("bto,noi,bti->bn", g64, Q, a64)
    for route in ("factored", "materialized"):
        _close(backend_cpp.grad_dot_queries(a, g, Q.float(), route), ref, 1e-5)
    # op 3, both routes, accumulating into a non-zero out
    QA, QS = _orth(I, gen), _orth(O, gen)
    G = torch.einsum("bto,bti->boi", g64, a64)
    ref = ((QS.T @ G @ QA) ** 2).sum(0) + 2.0
    for route in ("factored", "materialized"):
        out = torch.full((O, I), 2.0)
        res = backend_cpp.ekfac_lambda_accumulate(a, g, QA.float(), QS.float(), out, route)
        assert res is out
        _close(out, ref, 1e-5)
    # op 4
    lam = torch.rand(O, I, generator=gen, dtype=torch.float64)
    V = torch.randn(5, O, I, generator=gen, dtype=torch.float64)
    ref = QS @ ((QS.T @ V @ QA) / (lam + 0.1)) @ QA.T
    _close(backend_cpp.kron_inverse_apply(QA.float(), QS.float(), lam.float(), V.float(), 0.1), ref, 1e-5)


@needs_ext
def test_noncontiguous_lowprecision_and_grouped():
    gen = torch.Generator().manual_seed(3)
    B, T, I, O, k = 4, 50, 24, 12, 6
    a = torch.randn(B, I, T, generator=gen).transpose(1, 2)  # non-contiguous [B, T, I]
    g = torch.randn(T, B, O, generator=gen).transpose(0, 1)  # non-contiguous [B, T, O]
    Pi, Po = torch.randn(I, k, generator=gen), torch.randn(O, k, generator=gen)
    ref = torch.einsum("bto,bti,ok,ij->bkj", g.double(), a.double(), Po.double(), Pi.double())
    _close(backend_cpp.project_per_sample_grad(a, g, Pi, Po), ref, 1e-5)
    # bf16 inputs: the op upcasts exactly, so compare with the same rounded inputs in float64
    ab, gb = a.bfloat16(), g.bfloat16()
    ref = torch.einsum("bto,bti,ok,ij->bkj", gb.double(), ab.double(), Po.double(), Pi.bfloat16().double())
    _close(backend_cpp.project_per_sample_grad(ab, gb, Pi.bfloat16(), Po), ref, 1e-5)
    Q = torch.randn(2, O, I, generator=gen).half()
    ref = torch.einsum("bto,noi,bti->bn", gb.double(), Q.double(), ab.double())
    _close(backend_cpp.grad_dot_queries(ab, gb, Q, "materialized"), ref, 1e-5)
    # T == 1 with an odd stride on the size-1 dim (torch still calls it contiguous): factored route
    a1 = torch.randn(B, I, generator=gen).as_strided((B, 1, I), (I, 99, 1))
    g1 = torch.randn(B, 1, O, generator=gen)
    ref = torch.einsum("bto,noi,bti->bn", g1.double(), Q.double(), a1.double())
    _close(backend_cpp.grad_dot_queries(a1, g1, Q, "factored"), ref, 1e-5)
    # grouped op 4 over blocks of different shapes equals one call per block
    blocks = []
    for O_, I_, n in [(4, 6, 3), (8, 5, 1), (3, 3, 2)]:
        QA, QS = _orth(I_, gen).float(), _orth(O_, gen).float()
        blocks.append((QA, QS, torch.rand(O_, I_, generator=gen), torch.randn(n, O_, I_, generator=gen), 0.5))
    outs = backend_cpp.kron_inverse_apply_grouped(blocks)
    for (QA, QS, lam, V, d), out in zip(blocks, outs):
        QA, QS, lam, V = QA.double(), QS.double(), lam.double(), V.double()
        _close(out, QS @ ((QS.T @ V @ QA) / (lam + d)) @ QA.T, 1e-5)


# ---- bad input never reaches C++: the front door validates before it picks the backend ---------------
class _Tripwire:
    def __getattr__(self, name):
        raise AssertionError(f"C++ was called ({name}) before the arguments were validated")


BAD = [
    (lambda a, g, Q, QA, QS, lam, V: ops.project_per_sample_grad(a.double(), g, QA, QS, backend="cpp"), "a"),
    (lambda a, g, Q, QA, QS, lam, V: ops.project_per_sample_grad(a, g[:, :3], QA, QS, backend="cpp"), "g"),
    (lambda a, g, Q, QA, QS, lam, V: ops.project_per_sample_grad(a, g, QS, QS, backend="cpp"), "P_in"),
    (lambda a, g, Q, QA, QS, lam, V: ops.project_per_sample_grad(a, g, Seeded(5, 2, 0), QS, backend="cpp"), "P_in"),
    (lambda a, g, Q, QA, QS, lam, V: ops.project_per_sample_grad(a.int(), g, QA, QS, backend="cpp"), "a"),
    (lambda a, g, Q, QA, QS, lam, V: ops.grad_dot_queries(a, g, Q[:, :, :2], backend="cpp"), "Q"),
    (lambda a, g, Q, QA, QS, lam, V: ops.ekfac_lambda_accumulate(a, g, QA, QA, lam, backend="cpp"), "Q_S"),
    (lambda a, g, Q, QA, QS, lam, V: ops.ekfac_lambda_accumulate(a, g, QA, QS, lam.double(), backend="cpp"), "out"),
    (lambda a, g, Q, QA, QS, lam, V: ops.kron_inverse_apply(QA, QS, lam, V, float("nan"), backend="cpp"), "damping"),
    (lambda a, g, Q, QA, QS, lam, V: ops.kron_inverse_apply(QA, QS, lam, V, float("inf"), backend="cpp"), "damping"),
    (lambda a, g, Q, QA, QS, lam, V: ops.kron_inverse_apply(QA, QS, lam.T, V, 0.1, backend="cpp"), "lam"),
    (lambda a, g, Q, QA, QS, lam, V: ops.kron_inverse_apply(QA, QS, lam, V[0], 0.1, backend="cpp"), "V"),
    (lambda a, g, Q, QA, QS, lam, V: ops.kron_inverse_apply_grouped([(QA, QS, lam, V, 0.1), (QA, QS, lam, V, None)], backend="cpp"), "blocks[1].damping"),
    (lambda a, g, Q, QA, QS, lam, V: ops.kron_inverse_apply(QA.to("meta"), QS, lam, V, 0.1, backend="cpp"), "Q_A"),
]


@pytest.mark.parametrize("call,name", BAD)
def test_bad_input_raises_before_cpp(call, name, monkeypatch):
    monkeypatch.setattr(backend_cpp, "_C", _Tripwire())
    B, T, I, O = 2, 4, 6, 5
    args = (torch.randn(B, T, I), torch.randn(B, T, O), torch.randn(3, O, I), torch.eye(I), torch.eye(O),
            torch.rand(O, I), torch.randn(2, O, I))
    with pytest.raises(ValueError) as info:
        call(*args)
    assert str(info.value).startswith(name), str(info.value)


# ---- without the extension the package still runs its torch paths -------------------------------------
FALLBACK = r"""
import sys
sys.modules["mda_fast._C"] = None  # as if the extension had never been built
import torch
import mda_fast, mda_fast.ops as ops
from mda_fast.ops import backends
ok, why = backends.status("cpp")
assert not ok and "not importable" in why, why
a, g = torch.randn(2, 5, 6), torch.randn(2, 5, 4)
P_in, P_out = torch.randn(6, 3), torch.randn(4, 2)
out = ops.project_per_sample_grad(a, g, P_in, P_out)
ref = torch.einsum("bto,bti,ok,ij->bkj", g, a, P_out, P_in)
assert torch.allclose(out, ref, atol=1e-5), (out - ref).abs().max()
print("fallback ok")
"""


def test_package_runs_without_extension():
    env = dict(os.environ)
    res = subprocess.run([sys.executable, "-c", FALLBACK], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "fallback ok" in res.stdout


@needs_ext
def test_thread_count_does_not_change_results():
    """1 thread vs the default: the T-splitting and per-thread reductions are only reorderings."""
    gen = torch.Generator().manual_seed(5)
    B, T, I, O = 3, 70, 20, 9
    a, g = torch.randn(B, T, I, generator=gen), torch.randn(B, T, O, generator=gen)
    Pi, Po, Q = torch.randn(I, 4, generator=gen), torch.randn(O, 5, generator=gen), torch.randn(2, O, I, generator=gen)
    QA, QS = _orth(I, gen).float(), _orth(O, gen).float()

    def run():
        return (backend_cpp.project_per_sample_grad(a, g, Pi, Po),
                backend_cpp.grad_dot_queries(a, g, Q, op2.route(B, T, O, I, Q.shape[0])),
                backend_cpp.ekfac_lambda_accumulate(a, g, QA, QS, torch.zeros(O, I), op3.route(B, T, O, I)))

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run()
    finally:
        torch.set_num_threads(before)
    for x, y in zip(one, run()):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)
