"""Op 1 at Pythia shapes: naive (materialize [B,O,I]) vs torch reference vs compiled backends.

FLOPs counted (useful work of the factored form): 2BT(I*ki + O*ko) + 2BT*ko*ki.
"""

import pytest
import torch

import mda_fast.ops as ops
from mda_fast.ops import SeededProjection
from conftest import BT
from oracles import naive_project_per_sample_grad

K = 64


def test_project_per_sample_grad(run, device, shape, impl):
    O, I = shape
    B, T = BT
    a, g = torch.randn(B, T, I, device=device), torch.randn(B, T, O, device=device)
    P_in, P_out = SeededProjection(I, K, 1).materialize(device=device), SeededProjection(O, K, 2).materialize(device=device)
    if impl == "naive":
        fn = lambda: naive_project_per_sample_grad(a, g, P_in, P_out)
    else:
        fn = lambda: ops.project_per_sample_grad(a, g, P_in, P_out, backend=impl)
    flops = 2 * B * T * (I * K + O * K) + 2 * B * T * K * K
    run(fn, flops, B=B, T=T, O=O, I=I, k=K)


def test_project_per_sample_grad_seeded(run, device, shape, impl):
    """TRAK-style use: P given as a seed. torch must materialize P each call; compiled backends
    generate it in the kernel (C++: while packing; Triton/CUDA: per tile)."""
    if impl == "naive":
        pytest.skip("naive = the dense case plus materializing P")
    O, I = shape
    B, T = BT
    a, g = torch.randn(B, T, I, device=device), torch.randn(B, T, O, device=device)
    P_in, P_out = SeededProjection(I, K, 1), SeededProjection(O, K, 2)
    fn = lambda: ops.project_per_sample_grad(a, g, P_in, P_out, backend=impl)
    run(fn, 2 * B * T * (I * K + O * K) + 2 * B * T * K * K, B=B, T=T, O=O, I=I, k=K)
