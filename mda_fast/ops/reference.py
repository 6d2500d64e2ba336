"""Plain torch references of the four ops (the "torch" backend), plus naive materializing versions.

Shapes: a [B, T, I] block inputs, g [B, T, O] output gradients, per-sample gradient
G_b = sum_t g[b, t] a[b, t]^T  [O, I]. Low-precision inputs are upcast to fp32 first, so every
product and sum accumulates in fp32; outputs are fp32. Inputs are assumed validated
(mda_fast.ops.dispatch does that once, before any backend runs).

The ``naive_*`` functions build all per-sample gradients [B, O, I] at once (what a hook-based
per-sample-gradient pipeline does); benchmarks use them as the materializing baseline.
"""

from __future__ import annotations

import torch

from .projection import SeededProjection

# Materializing code paths process at most this many fp32 elements of [b, O, I] at a time.
_CHUNK_ELEMS = 1 << 25  # 128 MiB


def _f32(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float32 else x.float()


def as_matrix(P, device) -> torch.Tensor:
    """Tensor [dim, k] fp32 for a projection given as a tensor or a SeededProjection."""
    if isinstance(P, SeededProjection):
        return P.materialize(torch.float32, device)
    return _f32(P)


def _b_chunks(B: int, per_sample: int):
    step = max(1, _CHUNK_ELEMS // max(1, per_sample))
    for s in range(0, B, step):
        yield slice(s, min(B, s + step))


# ---- op 1 -----------------------------------------------------------------------------------------
def project_per_sample_grad(a, g, P_in, P_out) -> torch.Tensor:
    """[B, ko, ki] = P_out^T G_b P_in = sum_t (P_out^T g_bt)(P_in^T a_bt)^T, via [B,T,k] projections."""
    ap = torch.matmul(_f32(a), as_matrix(P_in, a.device))  # [B, T, ki]
    gp = torch.matmul(_f32(g), as_matrix(P_out, g.device))  # [B, T, ko]
    return torch.bmm(gp.transpose(1, 2), ap)


def naive_project_per_sample_grad(a, g, P_in, P_out) -> torch.Tensor:
    """Materialize G [B, O, I], then project both sides."""
    G = torch.bmm(_f32(g).transpose(1, 2), _f32(a))
    return as_matrix(P_out, g.device).T @ G @ as_matrix(P_in, a.device)


# ---- op 2 -----------------------------------------------------------------------------------------
def grad_dot_flops(B: int, T: int, O: int, I: int, n: int) -> tuple[int, int]:
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


def grad_dot_queries(a, g, Q, route: str = "auto") -> torch.Tensor:
    """[B, n] = <G_b, Q_n>; ``route`` = "auto" (cheaper by grad_dot_flops) | "factored" | "materialized"."""
    B, T, I = a.shape
    O, n = g.shape[2], Q.shape[0]
    if route == "auto":
        cf, cm = grad_dot_flops(B, T, O, I, n)
        route = "factored" if cf < cm else "materialized"
    a32, g32, Q32 = _f32(a), _f32(g), _f32(Q)
    out = torch.empty(B, n, dtype=torch.float32, device=a.device)
    if route == "factored":
        Qt = Q32.permute(2, 0, 1).reshape(I, n * O)  # [I, n*O]: all queries in one GEMM
        for sl in _b_chunks(B, T * n * O):
            X = torch.matmul(a32[sl], Qt).view(sl.stop - sl.start, T, n, O)  # [b, T, n, O] = Q_n a_bt
            out[sl] = torch.einsum("btno,bto->bn", X, g32[sl])
    elif route == "materialized":
        Qf = Q32.reshape(n, O * I)
        for sl in _b_chunks(B, O * I):
            G = torch.bmm(g32[sl].transpose(1, 2), a32[sl])  # [b, O, I]
            out[sl] = G.reshape(G.shape[0], O * I) @ Qf.T
    else:
        raise ValueError(f"route must be 'auto', 'factored' or 'materialized', got {route!r}")
    return out


def naive_grad_dot_queries(a, g, Q) -> torch.Tensor:
    """Materialize all of G [B, O, I] at once, then contract with Q."""
    G = torch.bmm(_f32(g).transpose(1, 2), _f32(a))
    return torch.einsum("boi,noi->bn", G, _f32(Q))


# ---- op 3 -----------------------------------------------------------------------------------------
def ekfac_flops(B: int, T: int, O: int, I: int) -> tuple[int, int]:
    """(rotate-inputs, rotate-gradients) FLOPs of out += sum_b (Q_S^T G_b Q_A)^2.

    rotate inputs:    a' = a Q_A, g' = g Q_S, R_b = g'_b^T a'_b      C_in = 2BT(I^2 + O^2) + 2BTOI
    rotate gradients: G_b = g_b^T a_b, R_b = Q_S^T G_b Q_A         C_g  = 2BTOI + 2B*O*I*(O + I)
    Rotating inputs wins when T*(I^2 + O^2) < O*I*(O + I) (short rows); both chunk B so at most a
    bounded slice of [B, O, I] exists at once.
    """
    return 2 * B * T * (I * I + O * O) + 2 * B * T * O * I, 2 * B * T * O * I + 2 * B * O * I * (O + I)


def ekfac_lambda_accumulate(a, g, Q_A, Q_S, out, route: str = "auto") -> torch.Tensor:
    """out[O, I] += sum_b (Q_S^T G_b Q_A)^2; ``route`` = "auto" | "inputs" | "gradients" (ekfac_flops)."""
    B, T, I = a.shape
    O = g.shape[2]
    if route == "auto":
        c_in, c_g = ekfac_flops(B, T, O, I)
        route = "inputs" if c_in < c_g else "gradients"
    a32, g32, QA, QS = _f32(a), _f32(g), _f32(Q_A), _f32(Q_S)
    if route == "inputs":
        a32, g32 = torch.matmul(a32, QA), torch.matmul(g32, QS)
    elif route != "gradients":
        raise ValueError(f"route must be 'auto', 'inputs' or 'gradients', got {route!r}")
    acc = torch.zeros(O, I, dtype=torch.float32, device=out.device)
    for sl in _b_chunks(B, 2 * O * I):
        R = torch.bmm(g32[sl].transpose(1, 2), a32[sl])  # [b, O, I]
        if route == "gradients":
            R = QS.T @ R @ QA
        acc += (R * R).sum(0)
    out += acc.to(out.dtype)
    return out


def naive_ekfac_lambda_accumulate(a, g, Q_A, Q_S, out) -> torch.Tensor:
    """Materialize G [B, O, I], rotate each into the eigenbasis, square, sum."""
    G = torch.bmm(_f32(g).transpose(1, 2), _f32(a))
    R = _f32(Q_S).T @ G @ _f32(Q_A)
    out += (R * R).sum(0).to(out.dtype)
    return out


# ---- op 4 -----------------------------------------------------------------------------------------
def kron_inverse_apply(Q_A, Q_S, lam, V, damping: float) -> torch.Tensor:
    """[n, O, I] = Q_S [(Q_S^T V_n Q_A) / (lam + damping)] Q_A^T, batched over n."""
    QA, QS = _f32(Q_A), _f32(Q_S)
    R = (QS.T @ _f32(V) @ QA) / (_f32(lam) + float(damping))
    return QS @ R @ QA.T


def kron_inverse_apply_grouped(blocks) -> list[torch.Tensor]:
    """One kron_inverse_apply per (Q_A, Q_S, lam, V, damping) block."""
    return [kron_inverse_apply(*blk) for blk in blocks]


def naive_kron_inverse_apply(Q_A, Q_S, lam, V, damping: float) -> torch.Tensor:
    """A Python loop of 2-D matmuls over the n queries (the unbatched baseline)."""
    QA, QS, d = _f32(Q_A), _f32(Q_S), _f32(lam) + float(damping)
    return torch.stack([QS @ ((QS.T @ v @ QA) / d) @ QA.T for v in _f32(V)])


def naive_kron_inverse_apply_grouped(blocks) -> list[torch.Tensor]:
    return [naive_kron_inverse_apply(*blk) for blk in blocks]
