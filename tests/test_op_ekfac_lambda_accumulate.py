"""Op 3, ekfac_lambda_accumulate: every backend and both torch routes vs a float64 oracle,
the routing rule, bad input."""

import pytest
import torch

import mda_fast.ops as ops
from mda_fast.ops import op_ekfac_lambda_accumulate as op
from op_cases import BACKENDS, need, close, inputs
from oracles import naive_ekfac_lambda_accumulate


def bases(I, O, device="cpu", dtype=torch.float32):
    gen = torch.Generator().manual_seed(I * 31 + O)
    QA = torch.linalg.qr(torch.randn(I, I, generator=gen, dtype=torch.float64))[0]
    QS = torch.linalg.qr(torch.randn(O, O, generator=gen, dtype=torch.float64))[0]
    return QA.to(device=device, dtype=dtype), QS.to(device=device, dtype=dtype)


def oracle(a, g, Q_A, Q_S, out0):
    d = torch.float64
    G = torch.einsum("bto,bti->boi", g.cpu().to(d), a.cpu().to(d))
    R_ = Q_S.cpu().to(d).T @ G @ Q_A.cpu().to(d)
    return out0.cpu().to(d) + (R_ * R_).sum(0)


# (B, T, I, O): odd sizes, T=1/B=1, tiles not multiples of the block, a longer T
SHAPES = [(3, 37, 70, 45), (1, 1, 16, 16), (2, 5, 33, 17), (2, 150, 24, 20)]


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_fp32_accumulates_in_place(backend, device, shape):
    need(backend, device)
    B, T, I, O = shape
    a, g = inputs(B, T, I, O, device=device)
    QA, QS = bases(I, O, device)
    out = torch.rand(O, I, device=device)
    want = oracle(a, g, QA, QS, out)
    res = ops.ekfac_lambda_accumulate(a, g, QA, QS, out, backend=backend)
    assert res is out
    close(out, want, torch.float32)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_low_precision_inputs(backend, device, dtype):
    need(backend, device)
    a, g = inputs(2, 23, 36, 20, dtype=dtype, device=device)
    QA, QS = bases(36, 20, device, dtype)
    out = torch.zeros(20, 36, device=device)
    close(ops.ekfac_lambda_accumulate(a, g, QA, QS, out, backend=backend), oracle(a, g, QA, QS, out * 0), dtype)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_noncontiguous(backend, device):
    need(backend, device)
    a, g = inputs(3, 11, 21, 13, noncontig=True, device=device)
    QA, QS = bases(21, 13, device)
    QA = QA.T  # transposed views (still orthogonal)
    out_big = torch.zeros(21, 13, device=device)
    out = out_big.T  # [O, I] view with strides (1, O)
    want = oracle(a, g, QA, QS, out)
    ops.ekfac_lambda_accumulate(a, g, QA, QS, out, backend=backend)
    close(out, want, torch.float32)


@pytest.mark.parametrize("route", ["factored", "materialized"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_both_torch_routes(route, shape):
    B, T, I, O = shape
    a, g = inputs(B, T, I, O)
    QA, QS = bases(I, O)
    out = torch.rand(O, I)
    want = oracle(a, g, QA, QS, out)
    close(op.reference(a, g, QA, QS, out, route), want, torch.float32)


def test_route_formula():
    c_f, c_m = op.flops(B=4, T=8, O=64, I=512)
    assert c_f < c_m and op.route(4, 8, 64, 512) == "factored"  # short rows: rotate the inputs
    c_f, c_m = op.flops(B=4, T=2048, O=128, I=512)
    assert c_m < c_f and op.route(4, 2048, 128, 512) == "materialized"  # long rows: rotate G_b


def test_naive_matches_reference():
    a, g = inputs(2, 9, 12, 10)
    QA, QS = bases(12, 10)
    out = torch.zeros(10, 12)
    close(naive_ekfac_lambda_accumulate(a, g, QA, QS, out.clone()), oracle(a, g, QA, QS, out), torch.float32)


def _bad_cases():
    a, g = torch.randn(2, 3, 6), torch.randn(2, 3, 5)
    QA, QS, out = torch.eye(6), torch.eye(5), torch.zeros(5, 6)
    return [
        ("a", (a.int(), g, QA, QS, out)),
        ("g", (a, g[:, :2], QA, QS, out)),
        ("Q_A", (a, g, torch.eye(5), QS, out)),
        ("Q_S", (a, g, QA, torch.eye(6), out)),
        ("Q_S", (a, g, QA, torch.ones(5), out)),
        ("out", (a, g, QA, QS, torch.zeros(6, 5))),
        ("out", (a, g, QA, QS, out.bfloat16())),
    ]


@pytest.mark.parametrize("name,args", _bad_cases(), ids=[f"{n}-{i}" for i, (n, _) in enumerate(_bad_cases())])
def test_bad_input_names_argument(name, args):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        ops.ekfac_lambda_accumulate(*args)
