"""Op 2 at Pythia shapes: naive (all of [B,O,I] at once) vs torch reference vs compiled backends.

FLOPs counted (materialized form, op_grad_dot_queries.flops): 2BTOI + 2BnOI.
"""

import torch

import mda_fast.ops as ops
from mda_fast.ops import op_grad_dot_queries as op
from conftest import BT
from oracles import naive_grad_dot_queries

N = 8


def test_grad_dot_queries(run, device, shape, impl):
    O, I = shape
    B, T = BT
    a, g = torch.randn(B, T, I, device=device), torch.randn(B, T, O, device=device)
    Q = torch.randn(N, O, I, device=device)
    if impl == "naive":
        fn = lambda: naive_grad_dot_queries(a, g, Q)
    else:
        fn = lambda: ops.grad_dot_queries(a, g, Q, backend=impl)
    run(fn, op.flops(B, T, O, I, N)[1], B=B, T=T, O=O, I=I, n=N)
