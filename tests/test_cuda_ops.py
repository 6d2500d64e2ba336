"""The CUDA backend against an inline float64 einsum; runs only where torch sees a GPU and the
CUDA extension is built (MDA_FAST_CUDA=1 pip install -e . --no-build-isolation)."""

from __future__ import annotations

import pytest
import torch

import mda_fast.ops as ops
from mda_fast.ops import backend_cuda, backends
from op_cases import Seeded

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not backends.status("cuda")[0], reason=backends.status("cuda")[1]),
]


def _close(x, ref, tol):
    err = ((x.double().cpu() - ref).norm() / ref.norm().clamp_min(1e-30)).item()
    assert err < tol, f"relative error {err:.2e} >= {tol:.0e}"


def _orth(n, gen):
    return torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))[0]


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-5), (torch.float16, 1e-5)])
@pytest.mark.parametrize("shape", [(3, 37, 19, 11, 5, 7), (1, 300, 70, 33, 17, 20), (2, 1, 5, 3, 1, 1),
                                   (4, 129, 130, 65, 64, 66)])
def test_cuda_ops_match_einsum(shape, dtype, tol):
    B, T, I, O, ki, ko = shape
    gen = torch.Generator().manual_seed(sum(shape))
    # the kernels upcast exactly, so the reference uses the same rounded inputs in float64
    a = torch.randn(B, T, I, generator=gen).to(dtype)
    g = torch.randn(B, T, O, generator=gen).to(dtype)
    a64, g64 = a.double(), g.double()
    ad, gd = a.cuda(), g.cuda()
    Pi, Po = torch.randn(I, ki, generator=gen), torch.randn(O, ko, generator=gen)
    ref = torch.einsum("bto,bti,ok,ij->bkj", g64, a64, Po.double(), Pi.double())
    _close(backend_cuda.project_per_sample_grad(ad, gd, Pi.cuda(), Po.cuda()), ref, tol)
    ref = torch.einsum("bto,bti,ok,ij->bkj", g64, a64, Seeded(O, ko, 5).dense(), Seeded(I, ki, 3).dense())
    _close(backend_cuda.project_per_sample_grad(ad, gd, Seeded(I, ki, 3), Seeded(O, ko, 5)), ref, tol)
    # non-contiguous a
    at = a.transpose(0, 1).contiguous().transpose(0, 1).cuda()
    _close(backend_cuda.project_per_sample_grad(at, gd, Pi.cuda(), Po.cuda()),
           torch.einsum("bto,bti,ok,ij->bkj", g64, a64, Po.double(), Pi.double()), tol)
    Q = torch.randn(3, O, I, generator=gen, dtype=torch.float64)
    ref = torch.einsum("bto,noi,bti->bn", g64, Q, a64)
    for route in ("factored", "materialized"):
        _close(backend_cuda.grad_dot_queries(ad, gd, Q.float().cuda(), route), ref, tol)
    QA, QS = _orth(I, gen), _orth(O, gen)
    G = torch.einsum("bto,bti->boi", g64, a64)
    out = torch.ones(O, I, device="cuda")
    backend_cuda.ekfac_lambda_accumulate(ad, gd, QA.float().cuda(), QS.float().cuda(), out, "materialized")
    _close(out, ((QS.T @ G @ QA) ** 2).sum(0) + 1, tol)


def test_cuda_grouped_kron_matches_einsum():
    gen = torch.Generator().manual_seed(0)
    blocks, refs = [], []
    for O, I, n in [(4, 6, 3), (70, 65, 2), (3, 3, 1), (128, 64, 5)] * 20:  # 80 blocks in one launch
        QA, QS = _orth(I, gen), _orth(O, gen)
        lam, V = torch.rand(O, I, generator=gen, dtype=torch.float64), torch.randn(n, O, I, generator=gen, dtype=torch.float64)
        blocks.append((QA.float().cuda(), QS.float().cuda(), lam.float().cuda(), V.float().cuda(), 0.3))
        refs.append(QS @ ((QS.T @ V @ QA) / (lam + 0.3)) @ QA.T)
    for out, ref in zip(backend_cuda.kron_inverse_apply_grouped(blocks), refs):
        _close(out, ref, 1e-5)


def test_cuda_bad_input():
    """Refused by the front door before backend="cuda" runs anything."""
    a, g = torch.randn(2, 3, 4, device="cuda"), torch.randn(2, 3, 5, device="cuda")
    with pytest.raises(ValueError, match="^P_in"):
        ops.project_per_sample_grad(a, g, torch.randn(5, 2, device="cuda"), torch.randn(5, 2, device="cuda"),
                                    backend="cuda")
    with pytest.raises(ValueError, match="cannot run on cpu tensors"):
        ops.project_per_sample_grad(a.cpu(), g.cpu(), torch.randn(4, 2), torch.randn(5, 2), backend="cuda")
    QA, QS = torch.eye(4, device="cuda"), torch.eye(5, device="cuda")
    with pytest.raises(ValueError, match="^damping"):
        ops.kron_inverse_apply(QA, QS, torch.ones(5, 4, device="cuda"), torch.ones(1, 5, 4, device="cuda"),
                               float("nan"), backend="cuda")
