"""C++ CPU backend ("cpp"): a thin adapter over the pybind11 extension ``mda_fast._C`` (csrc/cpu/<op>.cpp).

Arguments arrive validated and non-empty from the op's front door (mda_fast/ops/op_<op>.py), with
the route its FLOP rule chose; outputs are allocated here with torch BEFORE any call into C++, which
only sees raw addresses, shapes and element strides of fp32 buffers. bf16/fp16 inputs are upcast to
fp32 here (bf16 matmul on this class of CPU is ~100x slower than fp32, so converting once is the
fast path); accumulation and outputs are fp32. ``a`` and ``g`` may be non-contiguous: their
strides go to the kernels as is. Threads: ``torch.get_num_threads()`` (so ``torch.set_num_threads``
governs both).
"""

from __future__ import annotations

import torch

from . import backends
from .projection import parts
from .tensors import f32

_C = backends.extension("_C")[0]


def _ext():
    if _C is None:
        raise RuntimeError(backends.status("cpp")[1])
    return _C


def _dense(x: torch.Tensor) -> torch.Tensor:
    return f32(x).contiguous()


def _strides(x: torch.Tensor) -> tuple[int, int, int]:
    return tuple(int(s) for s in x.stride())  # type: ignore[return-value]


def _threads() -> int:
    return max(1, torch.get_num_threads())


def _projection(P):
    """(address or 0 for seeded, fp32 tensor to keep alive or None, seed, k)."""
    P, seed, k = parts(P)
    P = None if P is None else _dense(P)
    return (0 if P is None else P.data_ptr()), P, seed, k


def project_per_sample_grad(a, g, P_in, P_out) -> torch.Tensor:
    """[B, ko, ki] fp32; a seeded projection is generated while C++ packs it."""
    a, g = f32(a), f32(g)
    (B, T, I), O = a.shape, g.shape[2]
    pin, keep_in, pin_seed, ki = _projection(P_in)
    pout, keep_out, pout_seed, ko = _projection(P_out)
    out = torch.zeros(B, ko, ki, dtype=torch.float32)
    _ext().project_per_sample_grad(a.data_ptr(), _strides(a), g.data_ptr(), _strides(g), B, T, I, O,
                                   pin, pin_seed, ki, pout, pout_seed, ko, out.data_ptr(), _threads())
    return out


def grad_dot_queries(a, g, Q, route: str) -> torch.Tensor:
    """[B, n] fp32 by ``route``; the factored kernel reads a as [B*T, I] rows."""
    a, g = f32(a), f32(g)
    (B, T, I), O, n = a.shape, g.shape[2], Q.shape[0]
    out = torch.zeros(B, n, dtype=torch.float32)
    sa = _strides(a)
    if route == "factored":
        # explicit strides: torch ignores the strides of size-1 dims when calling a tensor contiguous
        a, sa = a.contiguous(), (T * I, I, 1)
    Q = _dense(Q)
    _ext().grad_dot_queries(a.data_ptr(), sa, g.data_ptr(), _strides(g), B, T, I, O, Q.data_ptr(), n,
                            out.data_ptr(), route, _threads())
    return out


def ekfac_lambda_accumulate(a, g, Q_A, Q_S, out, route: str) -> torch.Tensor:
    """out += sum_b (Q_S^T G_b Q_A)^2 in place by ``route``; one G_b per thread at a time,
    per-thread partial sums reduced in a fixed order."""
    a, g = f32(a), f32(g)
    (B, T, I), O = a.shape, g.shape[2]
    QA, QS = _dense(Q_A), _dense(Q_S)
    dst = out if out.is_contiguous() else torch.zeros(O, I, dtype=torch.float32)
    _ext().ekfac_lambda_accumulate(a.data_ptr(), _strides(a), g.data_ptr(), _strides(g), B, T, I, O,
                                   QA.data_ptr(), QS.data_ptr(), dst.data_ptr(), route, _threads())
    if dst is not out:
        out += dst
    return out


def kron_inverse_apply_grouped(blocks) -> list[torch.Tensor]:
    """All (block, query) pairs of all blocks in one parallel region; a list of [n, O, I] fp32."""
    dense, outs, args = [], [], []
    for blk in blocks:
        QA, QS, lam, V = (_dense(x) for x in blk[:4])
        n, O, I = V.shape
        out = torch.empty(n, O, I, dtype=torch.float32)
        outs.append(out)
        dense.append((QA, QS, lam, V))  # keep alive until the call returns
        args.append((QA.data_ptr(), QS.data_ptr(), lam.data_ptr(), V.data_ptr(), out.data_ptr(), O, I, n, blk[4]))
    _ext().kron_inverse_apply_grouped(args, _threads())
    return outs


def kron_inverse_apply(Q_A, Q_S, lam, V, damping) -> torch.Tensor:
    """[n, O, I] fp32: the grouped kernel with one block."""
    return kron_inverse_apply_grouped([(Q_A, Q_S, lam, V, damping)])[0]
