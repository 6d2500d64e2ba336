"""Triton op 2: out[b, n] = sum_t g_bt^T Q_n a_bt = <G_b, Q_n>_F  [B, n].

One program per (b, O tile, I tile): the G_b tile [BO, BI] = g_b[:, tile]^T a_b[:, tile] is built
on chip over T and contracted with every query's matching tile; per-tile partial sums
[B, tiles, n] are reduced on the host (deterministic, no atomics). FLOPs 2*B*T*O*I + 2*B*n*O*I
(the materialized count of flops() in mda_fast/ops/op_grad_dot_queries.py) without ever storing G.
"""

import torch
import triton
import triton.language as tl

from ._common import lowp_dot, num_warps


@triton.jit
def _gdq_kernel(a_ptr, g_ptr, q_ptr, part_ptr, T, I, O, N, n_tiles_i,
                s_ab, s_at, s_ai, s_gb, s_gt, s_go, s_qn, s_qo, s_qi, s_pb, s_pt,
                BT: tl.constexpr, BO: tl.constexpr, BI: tl.constexpr, LOWP: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    po, pi = tl.program_id(1), tl.program_id(2)
    offs_o = po * BO + tl.arange(0, BO)
    offs_i = pi * BI + tl.arange(0, BI)
    G = tl.zeros((BO, BI), dtype=tl.float32)
    for t0 in range(0, T, BT):
        offs_t = t0 + tl.arange(0, BT)
        gt = tl.load(g_ptr + b * s_gb + offs_t[:, None] * s_gt + offs_o[None, :] * s_go,
                     mask=(offs_t[:, None] < T) & (offs_o[None, :] < O), other=0.0)
        at = tl.load(a_ptr + b * s_ab + offs_t[:, None] * s_at + offs_i[None, :] * s_ai,
                     mask=(offs_t[:, None] < T) & (offs_i[None, :] < I), other=0.0)
        if LOWP:
            G = tl.dot(tl.trans(gt), at, G)
        else:
            G = tl.dot(tl.trans(gt.to(tl.float32)), at.to(tl.float32), G, input_precision="ieee")
    qmask = (offs_o[:, None] < O) & (offs_i[None, :] < I)
    tile = po * n_tiles_i + pi
    for n in range(0, N):
        q = tl.load(q_ptr + n * s_qn + offs_o[:, None] * s_qo + offs_i[None, :] * s_qi, mask=qmask, other=0.0)
        tl.store(part_ptr + b * s_pb + tile * s_pt + n, tl.sum(tl.sum(G * q.to(tl.float32), axis=1), axis=0))


def grad_dot_queries(a, g, Q):
    """a [B,T,I], g [B,T,O] (same float dtype, any strides), Q [n,O,I] -> fp32 [B, n]."""
    B, T, I = a.shape
    O, N = g.shape[2], Q.shape[0]
    BO = max(16, min(64, triton.next_power_of_2(O)))
    BI = max(16, min(64, triton.next_power_of_2(I)))
    to, ti = triton.cdiv(O, BO), triton.cdiv(I, BI)
    part = torch.empty(B, to * ti, N, dtype=torch.float32, device=a.device)
    _gdq_kernel[(B, to, ti)](
        a, g, Q, part, T, I, O, N, ti, *a.stride(), *g.stride(), *Q.stride(), part.stride(0), part.stride(1),
        BT=32, BO=BO, BI=BI, LOWP=lowp_dot(a.dtype), num_warps=num_warps(lowp_dot(a.dtype)),
    )
    return part.sum(1)
