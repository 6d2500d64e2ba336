"""Op 4, kron_inverse_apply (+ _grouped): the damped inverse of an EK-FAC block applied to queries.

    out_n = Q_S [(Q_S^T V_n Q_A) / (lam + damping)] Q_A^T      [n, O, I] fp32

Cost 4*n*O*I*(O + I) FLOPs per block. The grouped form takes many blocks of different shapes at
once (one parallel region on CPU, one launch per stage on GPU).

Files of this op: reference below; kernels/kron_inverse_apply.py (Triton);
csrc/cpu/kron_inverse_apply.cpp (C++); csrc/cuda/kron_inverse_apply.cu (CUDA);
tests/test_op_kron_inverse_apply.py; benchmarks/bench_op_kron_inverse_apply.py.
"""

from __future__ import annotations

import torch

from . import backends, validate
from .tensors import f32


def prefers_cpp(grouped: bool) -> bool:
    """CPU rule (benchmarks/RESULTS.md, 2026-11-24): one block, C++ was 0.95-1.0x torch at 2 threads
    (ties at 1), so torch runs it; grouped, C++ runs all blocks in one parallel region: 1.01-1.08x."""
    return grouped


def reference(Q_A, Q_S, lam, V, damping: float) -> torch.Tensor:
    """The torch backend: [n, O, I] = Q_S [(Q_S^T V_n Q_A) / (lam + damping)] Q_A^T, batched over n."""
    QA, QS = f32(Q_A), f32(Q_S)
    R = (QS.T @ f32(V) @ QA) / (f32(lam) + float(damping))
    return QS @ R @ QA.T


def reference_grouped(blocks) -> list[torch.Tensor]:
    """The torch backend of the grouped op: one ``reference`` per (Q_A, Q_S, lam, V, damping) block."""
    return [reference(*blk) for blk in blocks]


def kron_inverse_apply(Q_A, Q_S, lam, V, damping, *, backend: str = "auto") -> torch.Tensor:
    """[n, O, I] fp32 = Q_S [(Q_S^T V_n Q_A) / (lam + damping)] Q_A^T.

    Q_A [I, I], Q_S [O, O], lam [O, I], V [n, O, I], damping a finite float.
    """
    damping = validate.kron_block(Q_A, Q_S, lam, V, damping)[4]
    name = backends.choose(backend, V.device, empty=V.numel() == 0, prefer_cpp=prefers_cpp(grouped=False))
    return backends.implementation(name, "kron_inverse_apply", reference)(Q_A, Q_S, lam, V, damping)


def kron_inverse_apply_grouped(blocks, *, backend: str = "auto") -> list[torch.Tensor]:
    """kron_inverse_apply over many blocks of different shapes (one launch per stage on GPU).

    blocks: list of (Q_A, Q_S, lam, V, damping) tuples, all on one device. Returns a list of [n, O, I].
    """
    checked = validate.kron_blocks(blocks)
    if not checked:
        return []
    empty = any(b[3].numel() == 0 for b in checked)
    name = backends.choose(backend, checked[0][3].device, empty=empty, prefer_cpp=prefers_cpp(grouped=True))
    return backends.implementation(name, "kron_inverse_apply_grouped", reference_grouped)(checked)
