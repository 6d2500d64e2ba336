"""Op 4 at Pythia shapes, single block and 64 head blocks grouped, vs torch and a Python loop.

FLOPs counted: 4 n O I (O + I) per block. "naive" = a Python loop of 2-D torch matmuls over queries
(single) / over blocks (grouped).
"""

import pytest
import torch

import mda_fast.ops as ops
from conftest import CUDA, LARGE, PYTHIA
from oracles import naive_kron_inverse_apply, naive_kron_inverse_apply_grouped

N = 4


def _block(O, I, n, device):
    QA = torch.linalg.qr(torch.randn(I, I, device=device))[0]
    QS = torch.linalg.qr(torch.randn(O, O, device=device))[0]
    return QA, QS, torch.rand(O, I, device=device), torch.randn(n, O, I, device=device), 0.1


def test_kron_inverse_apply(run, device, shape, impl):
    O, I = shape
    if not LARGE and O * I * (O + I) > 1536 * 512 * 2048:
        pytest.skip("above the 70m layer: minutes on a 2-core CPU (set MDA_BENCH_LARGE=1)")
    blk = _block(O, I, N, device)
    fn = (lambda: naive_kron_inverse_apply(*blk)) if impl == "naive" else \
        (lambda: ops.kron_inverse_apply(*blk, backend=impl))
    run(fn, 4 * N * O * I * (O + I), O=O, I=I, n=N)


@pytest.mark.parametrize("model", ["14m", "70m"] + (["160m", "1b"] if CUDA else []))
def test_kron_inverse_apply_grouped_64_heads(run, device, model, impl):
    d, dh = PYTHIA[model]
    O, I = 2 * dh, d
    blocks = [_block(O, I, N, device) for _ in range(64)]
    fn = (lambda: naive_kron_inverse_apply_grouped(blocks)) if impl == "naive" else \
        (lambda: ops.kron_inverse_apply_grouped(blocks, backend=impl))
    run(fn, 64 * 4 * N * O * I * (O + I), blocks=64, O=O, I=I, n=N)
