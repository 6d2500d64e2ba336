"""Op 3 at Pythia shapes: naive (materialize + rotate [B,O,I]) vs torch reference vs compiled backends.

FLOPs counted: the cheaper of the two exact routes, min(op_ekfac_lambda_accumulate.flops(B, T, O, I)).
"""

import torch

import mda_fast.ops as ops
from mda_fast.ops import op_ekfac_lambda_accumulate as op
from conftest import BT
from oracles import naive_ekfac_lambda_accumulate


def test_ekfac_lambda_accumulate(run, device, shape, impl):
    O, I = shape
    B, T = BT
    a, g = torch.randn(B, T, I, device=device), torch.randn(B, T, O, device=device)
    QA = torch.linalg.qr(torch.randn(I, I, device=device))[0]
    QS = torch.linalg.qr(torch.randn(O, O, device=device))[0]
    out = torch.zeros(O, I, device=device)
    if impl == "naive":
        fn = lambda: naive_ekfac_lambda_accumulate(a, g, QA, QS, out)
    else:
        fn = lambda: ops.ekfac_lambda_accumulate(a, g, QA, QS, out, backend=impl)
    run(fn, min(op.flops(B, T, O, I)), B=B, T=T, O=O, I=I)
