"""Triton op 3: out[O, I] += sum_b (Q_S^T G_b Q_A)^2 = sum_b (g'_b^T a'_b)^2, a' = a Q_A, g' = g Q_S.

The rotations a', g' ([B, T, I], [B, T, O], same size as the inputs) are dense GEMMs left to
torch/cuBLAS; the kernel then runs one program per (O tile, I tile, sample range), looping over
the samples of its range: it builds the rotated per-sample tile R_b = g'_b^T a'_b on chip, squares
it and accumulates, so [B, O, I] is never stored. FLOPs: 2BT(I^2 + O^2) for the rotations + 2BTOI
in the kernel. A head-sized block has few tiles (128 x 512 -> 16), so the samples are cut into S
ranges until there are 2 programs per SM; the S partial [O, I] sums are added in a fixed order.
"""

import torch
import triton
import triton.language as tl

from ._common import num_warps, sm_count


@triton.jit
def _lambda_kernel(a_ptr, g_ptr, out_ptr, B, T, I, O, B_SPLIT,
                   s_ab, s_at, s_ai, s_gb, s_gt, s_go, s_os, s_oo, s_oi,
                   BT: tl.constexpr, BO: tl.constexpr, BI: tl.constexpr):
    offs_o = tl.program_id(0) * BO + tl.arange(0, BO)
    offs_i = tl.program_id(1) * BI + tl.arange(0, BI)
    split = tl.program_id(2)
    b0 = split * B_SPLIT
    acc = tl.zeros((BO, BI), dtype=tl.float32)
    # advanced by pointer steps: 64-bit addresses, no int32 b*stride
    a_row, g_row = a_ptr + b0.to(tl.int64) * s_ab, g_ptr + b0.to(tl.int64) * s_gb
    for b in range(b0, tl.minimum(B, b0 + B_SPLIT)):
        R = tl.zeros((BO, BI), dtype=tl.float32)
        for t0 in range(0, T, BT):
            offs_t = t0 + tl.arange(0, BT)
            gt = tl.load(g_row + offs_t[:, None] * s_gt + offs_o[None, :] * s_go,
                         mask=(offs_t[:, None] < T) & (offs_o[None, :] < O), other=0.0)
            at = tl.load(a_row + offs_t[:, None] * s_at + offs_i[None, :] * s_ai,
                         mask=(offs_t[:, None] < T) & (offs_i[None, :] < I), other=0.0)
            R = tl.dot(tl.trans(gt), at, R, input_precision="ieee")
        acc += R * R
        a_row += s_ab
        g_row += s_gb
    mask = (offs_o[:, None] < O) & (offs_i[None, :] < I)
    tl.store(out_ptr + split * s_os + offs_o[:, None] * s_oo + offs_i[None, :] * s_oi, acc, mask=mask)


def ekfac_lambda_accumulate(a, g, Q_A, Q_S, out):
    """a [B,T,I], g [B,T,O], Q_A [I,I], Q_S [O,O] (any float dtype/strides); out [O,I] fp32, in place."""
    B, T, I = a.shape
    O = g.shape[2]
    ar = torch.matmul(a.float(), Q_A.float())  # [B, T, I] fp32
    gr = torch.matmul(g.float(), Q_S.float())  # [B, T, O] fp32
    BO = max(16, min(64, triton.next_power_of_2(O)))
    BI = max(16, min(64, triton.next_power_of_2(I)))
    tiles = (triton.cdiv(O, BO), triton.cdiv(I, BI))
    S = max(1, min(B, triton.cdiv(2 * sm_count(a.device), tiles[0] * tiles[1])))
    b_split = triton.cdiv(B, S)
    S = triton.cdiv(B, b_split)
    part = torch.empty(S, O, I, dtype=torch.float32, device=a.device)
    _lambda_kernel[(*tiles, S)](
        ar, gr, part, B, T, I, O, b_split, *ar.stride(), *gr.stride(), *part.stride(), BT=16, BO=BO, BI=BI,
        num_warps=num_warps(False),  # fp32 rotated operands: exact dots
    )
    out += part[0] if S == 1 else part.sum(0)
    return out
