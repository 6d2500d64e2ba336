"""Op 2, grad_dot_queries: every per-sample gradient against every query, [B, n] fp32.

    out[b, q] = sum_t g_bt^T Q_q a_bt = <G_b, Q_q>_F,      G_b = sum_t g_bt a_bt^T [O, I]

Two exact routes (``route`` below picks the cheaper, every backend with both routes uses it):
factored contracts the queries with the factors a, g; materialized builds G_b (bounded chunks,
never all of [B, O, I]) and contracts it. The Triton kernel has one fused route (G_b tiles on chip).

Files of this op: reference below; kernels/grad_dot_queries.py (Triton);
csrc/cpu/grad_dot_queries.cpp (C++); csrc/cuda/grad_dot_queries.cu (CUDA);
tests/test_op_grad_dot_queries.py; benchmarks/bench_op_grad_dot_queries.py.
"""

from __future__ import annotations

import torch

from . import backends, validate
from .tensors import f32, sample_chunks

ROUTES = ("factored", "materialized")
L3_BYTES = 8 << 20  # this CPU's last-level cache; a larger one only moves the crossover


def flops(B: int, T: int, O: int, I: int, n: int) -> tuple[int, int]:
    """(factored, materialized) FLOPs of out[b, n] = sum_t g_bt^T Q_n a_bt = <G_b, Q_n>_F.

    factored:     X = a_b Q_n^T  ([T,I] x [I,O] per b and n), then sum(X * g_b)
                  C_f = B * n * (2*T*O*I + 2*T*O)
    materialized: G_b = g_b^T a_b once per b, then one [B, O*I] x [O*I, n] GEMM
                  C_m = B * 2*T*O*I + B * n * 2*O*I
    With dense queries C_f < C_m  <=>  n*T*(I+1) < T*I + n*I, i.e. only for n == 1 (and T < I) or
    T == 1 (dattri-llm's "factored when T < O*I/(O+I)" assumes the query itself is rank-T factored).
    Factored also never holds [b, O, I]; the materialized route chunks B to bound that memory.
    """
    return B * n * (2 * T * O * I + 2 * T * O), 2 * B * T * O * I + 2 * B * n * O * I


def route(B: int, T: int, O: int, I: int, n: int) -> str:
    """"factored" or "materialized", whichever needs fewer FLOPs (``flops``); the single routing rule
    of the torch, C++ and CUDA backends."""
    c_f, c_m = flops(B, T, O, I, n)
    return "factored" if c_f < c_m else "materialized"


def prefers_cpp(n: int, O: int, I: int) -> bool:
    """CPU rule: C++ streams the queries once per group of samples, torch's materialized route once
    per sample. It pays off (1.09-1.17x torch, 2 threads; benchmarks/RESULTS.md, 2026-11-24) once Q's
    4*n*O*I bytes no longer fit in L3, and ties or loses (0.90-1.0x) below that, or with one thread
    (no second core to hide the dots)."""
    return torch.get_num_threads() > 1 and 4 * n * O * I > L3_BYTES


def reference(a, g, Q, route: str) -> torch.Tensor:
    """The torch backend, by ``route`` ("factored" | "materialized"); fp32 throughout."""
    B, T, I = a.shape
    O, n = g.shape[2], Q.shape[0]
    a32, g32, Q32 = f32(a), f32(g), f32(Q)
    out = torch.empty(B, n, dtype=torch.float32, device=a.device)
    if route == "factored":
        Qt = Q32.permute(2, 0, 1).reshape(I, n * O)  # [I, n*O]: all queries in one GEMM
        for sl in sample_chunks(B, T * n * O):
            X = torch.matmul(a32[sl], Qt).view(sl.stop - sl.start, T, n, O)  # [b, T, n, O] = Q_n a_bt
            out[sl] = torch.einsum("btno,bto->bn", X, g32[sl])
    elif route == "materialized":
        Qf = Q32.reshape(n, O * I)
        for sl in sample_chunks(B, O * I):
            G = torch.bmm(g32[sl].transpose(1, 2), a32[sl])  # [b, O, I]
            out[sl] = G.reshape(G.shape[0], O * I) @ Qf.T
    else:
        raise ValueError(f"route must be one of {ROUTES}, got {route!r}")
    return out


def grad_dot_queries(a, g, Q, *, backend: str = "auto") -> torch.Tensor:
    """[B, n] fp32 = sum_t g_bt^T Q_n a_bt = <G_b, Q_n>. a [B, T, I], g [B, T, O], Q [n, O, I]."""
    B, T, I, O = validate.activations(a, g)
    n = validate.queries(Q, O, I, a.device)
    name = backends.choose(backend, a.device, empty=a.numel() == 0 or Q.numel() == 0,
                           prefer_cpp=prefers_cpp(n, O, I))
    return backends.implementation(name, "grad_dot_queries", reference)(a, g, Q, route(B, T, O, I, n))
