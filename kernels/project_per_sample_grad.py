"""Triton op 1: out[b] = sum_t (P_out^T g_bt)(P_in^T a_bt)^T  [B, ko, ki], fused.

One program per (b, token split, ko tile, ki tile): for each block of BT tokens of its split it
projects g and a on chip (seeded P generated in-kernel from the hash, never stored) and accumulates
the [BKO, BKI] outer-product sum; the [B, O, I] per-sample gradient never exists. Projections are
recomputed per output tile, which costs nothing extra when k <= 64 (one tile per side, the usual case).

Splitting T: with k <= 64 there is one output tile per sample, so B programs alone leave most of a
GPU idle (B=16 on 132 SMs). _token_splits cuts T into S ranges so that B*S*tiles >= 2 programs per
SM (each range >= MIN_SPLIT tokens); partial tiles [B, S, ko, ki] are summed on the host in a fixed
order: deterministic, and the extra traffic (B*S*ko*ki floats) is negligible next to reading a, g.
"""

import torch
import triton
import triton.language as tl

from ._common import lowp_dot, num_warps, project_rows, seed_term, sm_count

BT = 32  # tokens per inner step
MIN_SPLIT = 2 * BT  # fewest tokens one program handles when T is split


@triton.jit
def _ppsg_kernel(a_ptr, g_ptr, pin_ptr, pout_ptr, out_ptr, T, I, O, KI, KO, T_SPLIT, N_KI,
                 s_ab, s_at, s_ai, s_gb, s_gt, s_go, s_pid, s_pik, s_pod, s_pok, s_ob, s_os, s_or, s_oc,
                 seed_in, seed_out, scale,
                 SEEDED_IN: tl.constexpr, SEEDED_OUT: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr,
                 BKI: tl.constexpr, BKO: tl.constexpr, LOWP: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1)
    ko0 = (tl.program_id(2) // N_KI) * BKO
    ki0 = (tl.program_id(2) % N_KI) * BKI
    t_end = tl.minimum(T, (split + 1) * T_SPLIT)
    acc = tl.zeros((BKO, BKI), dtype=tl.float32)
    for t0 in range(split * T_SPLIT, t_end, BT):
        gp = project_rows(g_ptr + b * s_gb, s_gt, s_go, t0, t_end, O, pout_ptr, s_pod, s_pok, ko0, KO,
                          seed_out, SEEDED_OUT, BT, BD, BKO, LOWP)
        ap = project_rows(a_ptr + b * s_ab, s_at, s_ai, t0, t_end, I, pin_ptr, s_pid, s_pik, ki0, KI,
                          seed_in, SEEDED_IN, BT, BD, BKI, LOWP)
        acc = tl.dot(tl.trans(gp), ap, acc, input_precision="ieee")
    offs_o = ko0 + tl.arange(0, BKO)
    offs_i = ki0 + tl.arange(0, BKI)
    tl.store(out_ptr + b * s_ob + split * s_os + offs_o[:, None] * s_or + offs_i[None, :] * s_oc, acc * scale,
             mask=(offs_o[:, None] < KO) & (offs_i[None, :] < KI))


def _block(k: int) -> int:
    return max(16, min(64, triton.next_power_of_2(k)))


def _token_splits(B: int, T: int, tiles: int, device) -> int:
    """S: token ranges per sample so that B*S*tiles reaches 2 programs per SM, each >= MIN_SPLIT tokens."""
    want = triton.cdiv(2 * sm_count(device), max(1, B * tiles))
    return max(1, min(want, triton.cdiv(T, MIN_SPLIT)))


def project_per_sample_grad(a, g, P_in, P_out, seeds=(None, None), scale=1.0):
    """a [B,T,I], g [B,T,O] (same float dtype, any strides); P_in [I,ki], P_out [O,ko] tensors, or
    None with ``seeds`` = (seed_in, seed_out) for seeded ±1 projections (``scale`` applied at the end).
    Returns fp32 [B, ko, ki]."""
    B, T, I = a.shape
    O = g.shape[2]
    seed_in, seed_out = seeds
    KI = P_in.shape[1] if P_in is not None else seed_in[1]
    KO = P_out.shape[1] if P_out is not None else seed_out[1]
    BKI, BKO = _block(KI), _block(KO)
    n_ki = triton.cdiv(KI, BKI)
    tiles = triton.cdiv(KO, BKO) * n_ki
    S = _token_splits(B, T, tiles, a.device)
    t_split = triton.cdiv(triton.cdiv(T, S), BT) * BT
    S = triton.cdiv(T, t_split) if T else 1
    part = torch.empty(B, S, KO, KI, dtype=torch.float32, device=a.device)
    pin = P_in if P_in is not None else part  # unused pointer when the projection is seeded
    pout = P_out if P_out is not None else part
    lowp = lowp_dot(a.dtype)
    dense = P_in is not None and P_out is not None
    # Tile depth and warps from tests/triton_aot.py (no spills on sm_80/sm_90): the in-kernel hash of a
    # seeded P and exact fp32 dots both need short BD and 8 warps; bf16 x dense P runs BD=64, 4 warps.
    fast = lowp and dense
    _ppsg_kernel[(B, S, tiles)](
        a, g, pin, pout, part, T, I, O, KI, KO, t_split, n_ki,
        *a.stride(), *g.stride(),
        pin.stride(0), pin.stride(1), pout.stride(0), pout.stride(1), *part.stride(),
        seed_term(seed_in[0]) if P_in is None else 0, seed_term(seed_out[0]) if P_out is None else 0,
        float(scale),
        SEEDED_IN=P_in is None, SEEDED_OUT=P_out is None, BT=BT, BD=64 if fast else 16, BKI=BKI, BKO=BKO, LOWP=lowp,
        num_warps=num_warps(fast),
    )
    return part[:, 0] if S == 1 else part.sum(1)
