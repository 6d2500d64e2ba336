"""Op 2, grad_dot_queries: every backend and both torch routes vs a float64 oracle, the
routing rule, bad input."""

import pytest
import torch

import mda_fast.ops as ops
from mda_fast.ops import op_grad_dot_queries as op
from op_cases import BACKENDS, need, close, inputs
from oracles import naive_grad_dot_queries


def oracle(a, g, Q):
    d = torch.float64
    G = torch.einsum("bto,bti->boi", g.cpu().to(d), a.cpu().to(d))
    return torch.einsum("boi,noi->bn", G, Q.cpu().to(d))


# (B, T, I, O, n): odd sizes, T=1/B=1, tiles not multiples of the block, a longer T
SHAPES = [(3, 37, 70, 45, 5), (1, 1, 16, 16, 1), (2, 5, 33, 17, 3), (2, 150, 24, 20, 2)]


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_fp32(backend, device, shape):
    need(backend, device)
    B, T, I, O, n = shape
    a, g = inputs(B, T, I, O, device=device)
    Q = torch.randn(n, O, I, device=device)
    close(ops.grad_dot_queries(a, g, Q, backend=backend), oracle(a, g, Q), torch.float32)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_low_precision_inputs(backend, device, dtype):
    need(backend, device)
    a, g = inputs(2, 23, 36, 20, dtype=dtype, device=device)
    Q = torch.randn(3, 20, 36, device=device, dtype=dtype)
    close(ops.grad_dot_queries(a, g, Q, backend=backend), oracle(a, g, Q), dtype)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_noncontiguous(backend, device):
    need(backend, device)
    a, g = inputs(3, 11, 21, 13, noncontig=True, device=device)
    Q = torch.randn(21, 13, 4, device=device).permute(2, 1, 0)  # [n, O, I] view
    close(ops.grad_dot_queries(a, g, Q, backend=backend), oracle(a, g, Q), torch.float32)


@pytest.mark.parametrize("route", ["factored", "materialized"])
@pytest.mark.parametrize("shape", SHAPES + [(4, 7, 9, 6, 300)], ids=lambda s: "x".join(map(str, s)) if isinstance(s, tuple) else s)
def test_both_torch_routes(route, shape):
    B, T, I, O, n = shape
    a, g = inputs(B, T, I, O, noncontig=True)
    Q = torch.randn(n, O, I)
    close(op.reference(a, g, Q, route), oracle(a, g, Q), torch.float32)


def test_route_formula():
    cf, cm = op.flops(B=8, T=1, O=64, I=512, n=1)
    assert cf < cm and op.route(8, 1, 64, 512, 1) == "factored"  # one query, one token
    cf, cm = op.flops(B=8, T=2048, O=64, I=512, n=16)
    assert cm < cf and op.route(8, 2048, 64, 512, 16) == "materialized"  # many queries, long rows
    assert op.flops(1, 3, 5, 7, 2) == (2 * (2 * 3 * 5 * 7 + 2 * 3 * 5), 2 * 3 * 5 * 7 + 2 * 2 * 5 * 7)


def test_naive_matches_reference():
    a, g = inputs(2, 9, 12, 10)
    Q = torch.randn(3, 10, 12)
    close(naive_grad_dot_queries(a, g, Q), oracle(a, g, Q), torch.float32)


def test_empty_queries():
    a, g = inputs(2, 4, 6, 5)
    assert ops.grad_dot_queries(a, g, torch.randn(0, 5, 6)).shape == (2, 0)


def _bad_cases():
    a, g, Q = torch.randn(2, 3, 6), torch.randn(2, 3, 5), torch.randn(4, 5, 6)
    return [
        ("a", (torch.randn(2, 3), g, Q)),
        ("g", (a, torch.randn(3, 3, 5), Q)),
        ("g", (a, g.half(), Q)),
        ("Q", (a, g, torch.randn(4, 6, 5))),
        ("Q", (a, g, torch.randn(5, 6))),
        ("Q", (a, g, Q.double())),
    ]


@pytest.mark.parametrize("name,args", _bad_cases(), ids=[f"{n}-{i}" for i, (n, _) in enumerate(_bad_cases())])
def test_bad_input_names_argument(name, args):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        ops.grad_dot_queries(*args)
