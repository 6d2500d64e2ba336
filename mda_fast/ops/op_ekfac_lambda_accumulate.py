"""Op 3, ekfac_lambda_accumulate: the EK-FAC eigenvalue correction, accumulated in place.

    out[O, I] += sum_b (Q_S^T G_b Q_A)^2,      G_b = sum_t g_bt a_bt^T [O, I]

Two exact routes (``route`` below picks the cheaper; the torch and C++ backends use it): factored
rotates the factors first (a Q_A, g Q_S) and builds the rotated R_b from them; materialized builds
G_b and rotates it. Both bound the slice of [B, O, I] that exists at once. The CUDA backend has the
materialized route only, the Triton kernel the factored one (rotations by cuBLAS, R_b on chip).

Files of this op: reference below; kernels/ekfac_lambda_accumulate.py (Triton);
csrc/cpu/ekfac_lambda_accumulate.cpp (C++); csrc/cuda/ekfac_lambda_accumulate.cu (CUDA);
tests/test_op_ekfac_lambda_accumulate.py; benchmarks/bench_op_ekfac_lambda_accumulate.py.
"""

from __future__ import annotations

import torch

from . import backends, validate
from .tensors import f32, sample_chunks

ROUTES = ("factored", "materialized")


def flops(B: int, T: int, O: int, I: int) -> tuple[int, int]:
    """(factored, materialized) FLOPs of out += sum_b (Q_S^T G_b Q_A)^2.

    factored:     a' = a Q_A, g' = g Q_S, R_b = g'_b^T a'_b       C_f = 2BT(I^2 + O^2) + 2BTOI
    materialized: G_b = g_b^T a_b, R_b = Q_S^T G_b Q_A            C_m = 2BTOI + 2B*O*I*(O + I)
    Factored wins when T*(I^2 + O^2) < O*I*(O + I) (short rows).
    """
    return 2 * B * T * (I * I + O * O) + 2 * B * T * O * I, 2 * B * T * O * I + 2 * B * O * I * (O + I)


def route(B: int, T: int, O: int, I: int) -> str:
    """"factored" or "materialized", whichever needs fewer FLOPs (``flops``); the single routing rule
    of the torch and C++ backends."""
    c_f, c_m = flops(B, T, O, I)
    return "factored" if c_f < c_m else "materialized"


def prefers_cpp() -> bool:
    """CPU rule: C++ was 0.93-1.0x torch at 2 threads and tied at 1 (benchmarks/RESULTS.md,
    2026-11-24; GEMM-bound, where MKL is as good), so backend="auto" runs torch on CPU tensors."""
    return False


def reference(a, g, Q_A, Q_S, out, route: str) -> torch.Tensor:
    """The torch backend, by ``route`` ("factored" | "materialized"); accumulates in fp32."""
    B, T, I = a.shape
    O = g.shape[2]
    a32, g32, QA, QS = f32(a), f32(g), f32(Q_A), f32(Q_S)
    if route == "factored":
        a32, g32 = torch.matmul(a32, QA), torch.matmul(g32, QS)
    elif route != "materialized":
        raise ValueError(f"route must be one of {ROUTES}, got {route!r}")
    acc = torch.zeros(O, I, dtype=torch.float32, device=out.device)
    for sl in sample_chunks(B, 2 * O * I):
        R = torch.bmm(g32[sl].transpose(1, 2), a32[sl])  # [b, O, I]
        if route == "materialized":
            R = QS.T @ R @ QA
        acc += (R * R).sum(0)
    out += acc.to(out.dtype)
    return out


def ekfac_lambda_accumulate(a, g, Q_A, Q_S, out, *, backend: str = "auto") -> torch.Tensor:
    """out[O, I] (fp32, in place) += sum_b (Q_S^T G_b Q_A)^2; returns out.

    a [B, T, I], g [B, T, O], Q_A [I, I], Q_S [O, O] (eigenbases, columns = eigenvectors).
    """
    B, T, I, O = validate.activations(a, g)
    validate.lambda_operands(Q_A, Q_S, out, I, O, a.device)
    name = backends.choose(backend, a.device, empty=a.numel() == 0 or g.numel() == 0, prefer_cpp=prefers_cpp())
    return backends.implementation(name, "ekfac_lambda_accumulate", reference)(a, g, Q_A, Q_S, out,
                                                                              route(B, T, O, I))
