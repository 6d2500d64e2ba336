"""Op 4, kron_inverse_apply (+ grouped): every backend vs a float64 oracle, bad input."""

import pytest
import torch

import mda_fast.ops as ops
from op_cases import BACKENDS, need, close
from oracles import naive_kron_inverse_apply, naive_kron_inverse_apply_grouped


def block(n, O, I, device="cpu", dtype=torch.float32, damping=0.1):
    gen = torch.Generator().manual_seed(n * 97 + O * 7 + I)
    QA = torch.linalg.qr(torch.randn(I, I, generator=gen, dtype=torch.float64))[0]
    QS = torch.linalg.qr(torch.randn(O, O, generator=gen, dtype=torch.float64))[0]
    lam = torch.rand(O, I, generator=gen, dtype=torch.float64)
    V = torch.randn(n, O, I, generator=gen, dtype=torch.float64)
    return tuple(t.to(device=device, dtype=dtype) for t in (QA, QS, lam, V)) + (damping,)


def oracle(Q_A, Q_S, lam, V, damping):
    QA, QS = Q_A.cpu().double(), Q_S.cpu().double()
    return QS @ ((QS.T @ V.cpu().double() @ QA) / (lam.cpu().double() + damping)) @ QA.T


# (n, O, I): odd sizes, n=1, tiles not multiples of the block
SHAPES = [(3, 45, 70), (1, 16, 16), (2, 17, 33), (1, 1, 5)]


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_fp32(backend, device, shape):
    need(backend, device)
    blk = block(*shape, device=device)
    close(ops.kron_inverse_apply(*blk, backend=backend), oracle(*blk), torch.float32)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_low_precision_inputs(backend, device, dtype):
    need(backend, device)
    blk = block(2, 20, 36, device=device, dtype=dtype)
    close(ops.kron_inverse_apply(*blk, backend=backend), oracle(*blk), dtype)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_noncontiguous(backend, device):
    need(backend, device)
    QA, QS, lam, V, d = block(3, 13, 21, device=device)
    V = V.transpose(0, 2).contiguous().transpose(0, 2)  # same values, permuted strides
    lam = lam.T.contiguous().T
    blk = (QA.T, QS[:, :], lam, V, d)
    close(ops.kron_inverse_apply(*blk, backend=backend), oracle(*blk), torch.float32)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_grouped_many_shapes(backend, device):
    need(backend, device)
    shapes = [(2, 5, 7), (1, 40, 33), (3, 16, 16), (1, 1, 1), (2, 24, 70)]
    blocks = [block(*s, device=device, damping=0.05 * (i + 1)) for i, s in enumerate(shapes)]
    blocks[1] = blocks[1][:4] + (torch.tensor(0.3),)  # a 0-d tensor damping is accepted
    outs = ops.kron_inverse_apply_grouped(blocks, backend=backend)
    assert len(outs) == len(blocks)
    for out, blk in zip(outs, blocks):
        close(out, oracle(*blk[:4], float(blk[4])), torch.float32)


def test_grouped_empty_list():
    assert ops.kron_inverse_apply_grouped([]) == []


def test_naive_matches_reference():
    blk = block(3, 9, 11)
    close(naive_kron_inverse_apply(*blk), oracle(*blk), torch.float32)
    close(naive_kron_inverse_apply_grouped([blk])[0], oracle(*blk), torch.float32)


def _bad_cases():
    QA, QS, lam, V = torch.eye(6), torch.eye(5), torch.rand(5, 6), torch.randn(2, 5, 6)
    return [
        ("Q_A", (torch.eye(5), QS, lam, V, 0.1)),
        ("Q_S", (QA, torch.eye(6), lam, V, 0.1)),
        ("lam", (QA, QS, torch.rand(6, 5), V, 0.1)),
        ("V", (QA, QS, lam, torch.randn(5, 6), 0.1)),
        ("V", (QA, QS, lam, V.long(), 0.1)),
        ("damping", (QA, QS, lam, V, float("nan"))),
        ("damping", (QA, QS, lam, V, float("inf"))),
        ("damping", (QA, QS, lam, V, "0.1")),
    ]


@pytest.mark.parametrize("name,args", _bad_cases(), ids=[f"{n}-{i}" for i, (n, _) in enumerate(_bad_cases())])
def test_bad_input_names_argument(name, args):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        ops.kron_inverse_apply(*args)


def test_grouped_bad_block_is_named():
    good = block(1, 4, 5)
    bad = good[:4] + (float("nan"),)
    with pytest.raises(ValueError, match=r"blocks\[1\]\.damping"):
        ops.kron_inverse_apply_grouped([good, bad])
    with pytest.raises(ValueError, match=r"blocks\[0\]"):
        ops.kron_inverse_apply_grouped([good[:3]])
