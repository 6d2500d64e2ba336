"""Op 1, project_per_sample_grad: every backend vs a float64 oracle, seeded vs explicit, bad input."""

import pytest
import torch

import mda_fast.ops as ops
from mda_fast.ops import SeededProjection
from op_cases import BACKENDS, need, close, inputs
from oracles import naive_project_per_sample_grad


def oracle(a, g, P_in, P_out):
    P_in = P_in.materialize() if isinstance(P_in, SeededProjection) else P_in
    P_out = P_out.materialize() if isinstance(P_out, SeededProjection) else P_out
    d = torch.float64
    G = torch.einsum("bto,bti->boi", g.cpu().to(d), a.cpu().to(d))
    return P_out.cpu().to(d).T @ G @ P_in.cpu().to(d)


# (B, T, I, O, ki, ko): odd sizes, T=1/B=1, k not a multiple of the block, a longer T
SHAPES = [(3, 37, 70, 45, 20, 9), (1, 1, 16, 16, 16, 16), (2, 5, 33, 17, 65, 3), (2, 150, 24, 20, 8, 8)]


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_explicit_fp32(backend, device, shape):
    need(backend, device)
    B, T, I, O, ki, ko = shape
    a, g = inputs(B, T, I, O, device=device)
    P_in, P_out = torch.randn(I, ki, device=device), torch.randn(O, ko, device=device)
    out = ops.project_per_sample_grad(a, g, P_in, P_out, backend=backend)
    close(out, oracle(a, g, P_in, P_out), torch.float32)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_seeded_equals_explicit(backend, device):
    need(backend, device)
    a, g = inputs(2, 19, 40, 24, device=device)
    S_in, S_out = SeededProjection(40, 18, seed=3), SeededProjection(24, 5, seed=2**32 - 5)
    seeded = ops.project_per_sample_grad(a, g, S_in, S_out, backend=backend)
    explicit = ops.project_per_sample_grad(
        a, g, S_in.materialize(device=device), S_out.materialize(device=device), backend=backend)
    close(seeded, explicit.cpu().double(), torch.float32)
    close(seeded, oracle(a, g, S_in, S_out), torch.float32)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_low_precision_inputs(backend, device, dtype):
    need(backend, device)
    a, g = inputs(2, 23, 36, 20, dtype=dtype, device=device)
    S_in = SeededProjection(36, 12, seed=1)
    P_out = torch.randn(20, 7, device=device)
    out = ops.project_per_sample_grad(a, g, S_in, P_out, backend=backend)
    close(out, oracle(a, g, S_in, P_out), dtype)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_noncontiguous(backend, device):
    need(backend, device)
    a, g = inputs(3, 11, 21, 13, noncontig=True, device=device)
    P_in = torch.randn(5, 21, device=device).T  # transposed projection too
    P_out = torch.randn(13, 8, device=device)[:, ::2]
    out = ops.project_per_sample_grad(a, g, P_in, P_out, backend=backend)
    close(out, oracle(a, g, P_in, P_out), torch.float32)


def test_naive_matches_reference():
    a, g = inputs(2, 9, 12, 10)
    P_in, P_out = SeededProjection(12, 4, 0), torch.randn(10, 3)
    close(naive_project_per_sample_grad(a, g, P_in, P_out), oracle(a, g, P_in, P_out), torch.float32)


def test_empty_batch():
    a, g = inputs(1, 4, 6, 5)
    out = ops.project_per_sample_grad(a[:0], g[:0], torch.randn(6, 2), torch.randn(5, 3))
    assert out.shape == (0, 3, 2)


def _bad_cases():
    a, g = torch.randn(2, 3, 6), torch.randn(2, 3, 5)
    Pi, Po = torch.randn(6, 4), torch.randn(5, 2)
    return [
        ("a", (a[0], g, Pi, Po)),
        ("g", (a, torch.randn(2, 4, 5), Pi, Po)),
        ("g", (a, g.double(), Pi, Po)),
        ("a", (a.long(), g, Pi, Po)),
        ("P_in", (a, g, torch.randn(7, 4), Po)),
        ("P_in", (a, g, SeededProjection(7, 4), Po)),
        ("P_out", (a, g, Pi, torch.randn(6, 2))),
        ("P_out", (a, g, Pi, "not a matrix")),
    ]


@pytest.mark.parametrize("name,args", _bad_cases(), ids=[f"{n}-{i}" for i, (n, _) in enumerate(_bad_cases())])
def test_bad_input_names_argument(name, args):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        ops.project_per_sample_grad(*args)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_device_mismatch():
    a, g = torch.randn(2, 3, 6), torch.randn(2, 3, 5, device="cuda")
    with pytest.raises(ValueError, match=r"\bg\b"):
        ops.project_per_sample_grad(a, g, torch.randn(6, 2), torch.randn(5, 2))
