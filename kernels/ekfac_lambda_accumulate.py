"""Triton op 3: out[O, I] += sum_b (Q_S^T G_b Q_A)^2 = sum_b (g'_b^T a'_b)^2, a' = a Q_A, g' = g Q_S.

The rotations a', g' ([B, T, I], [B, T, O], same size as the inputs) are dense GEMMs left to
torch/cuBLAS; the kernel then runs one program per (O tile, I tile), looping over b: it builds the
rotated per-sample tile R_b = g'_b^T a'_b on chip, squares it and accumulates, so [B, O, I] is never
stored. FLOPs: 2BT(I^2 + O^2) for the rotations + 2BTOI in the kernel.
"""

import torch
import triton
import triton.language as tl


@triton.jit
def _lambda_kernel(a_ptr, g_ptr, out_ptr, B, T, I, O,
                   s_ab, s_at, s_ai, s_gb, s_gt, s_go, s_oo, s_oi,
                   BT: tl.constexpr, BO: tl.constexpr, BI: tl.constexpr):
    offs_o = tl.program_id(0) * BO + tl.arange(0, BO)
    offs_i = tl.program_id(1) * BI + tl.arange(0, BI)
    acc = tl.zeros((BO, BI), dtype=tl.float32)
    a_row, g_row = a_ptr, g_ptr  # advanced by pointer steps: 64-bit addresses, no int32 b*stride
    for b in range(0, B):
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
    ptrs = out_ptr + offs_o[:, None] * s_oo + offs_i[None, :] * s_oi
    tl.store(ptrs, tl.load(ptrs, mask=mask, other=0.0) + acc, mask=mask)


def ekfac_lambda_accumulate(a, g, Q_A, Q_S, out):
    """a [B,T,I], g [B,T,O], Q_A [I,I], Q_S [O,O] (any float dtype/strides); out [O,I] fp32, in place."""
    B, T, I = a.shape
    O = g.shape[2]
    ar = torch.matmul(a.float(), Q_A.float())  # [B, T, I] fp32
    gr = torch.matmul(g.float(), Q_S.float())  # [B, T, O] fp32
    BO = max(16, min(64, triton.next_power_of_2(O)))
    BI = max(16, min(64, triton.next_power_of_2(I)))
    _lambda_kernel[(triton.cdiv(O, BO), triton.cdiv(I, BI))](
        ar, gr, out, B, T, I, O, *ar.stride(), *gr.stride(), *out.stride(), BT=32, BO=BO, BI=BI,
    )
    return out
