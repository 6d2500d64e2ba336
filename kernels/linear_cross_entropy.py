"""Triton op 5, linear_cross_entropy: the per-chunk softmax / logsumexp / losses / label draw.

Given one chunk's fp32 logits z [c, V] (from the torch GEMM F.linear, as Liger-Kernel does), one
program per token row, looping over V:

    sweep 1  read z: running max m and sum s of exp(z - m) (online); lse = m + log s;
             loss_k = lse - z[y_k] for each given label set (read before z is overwritten)
    sweep 2  read z, write p = exp(z - m) / s in place (z's storage: the caller's p @ W forms pW);
             when drawing, the fp32 sum of each 1024-block of p and their float64 total
    draw     target = u * total; the float64 running sum over the block sums picks block k, the
             float64 cumulative sum inside block k (re-read, 4 KiB) picks the label

This is mda_fast/ops/op_linear_cross_entropy.inverse_cdf step for step (same 1024 blocks, fp32 block
sums, float64 cumulative, first index with cdf >= target), so draws equal the torch path's unless
u * total lies within the fp32 rounding of a block sum (~1e-7 of it) of a CDF boundary.
Bytes per row: 12 V (read, read, write) + 4 KiB, against ~36 V for torch's amax/sub/exp/sum/div
passes and block sums, plus its [c, 1024] int64/float64 gathers.
"""

import torch
import triton
import triton.language as tl

DRAW_BLOCK = 1024  # inverse_cdf's block: the block sums must be the same sums
SWEEP_BLOCK = 4096  # sweep 1 has no block structure to keep: wider loads, fewer reductions


@triton.jit
def _lce_kernel(z_ptr, s_zc, y_ptr, s_yk, u_ptr, bsum_ptr, s_bc, lse_ptr, loss_ptr, s_lk, drawn_ptr,
                V, K, NB, DRAW: tl.constexpr, BV: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    zr = z_ptr + row * s_zc
    # sweep 1: online max / sum of exp, one max and one sum per tile (masked lanes: exp(-inf) = 0)
    offs = tl.arange(0, BV)
    m = float("-inf")
    s = 0.0
    for v0 in range(0, V, BV):
        z = tl.load(zr + v0 + offs, mask=v0 + offs < V, other=float("-inf"))
        m_new = tl.maximum(m, tl.max(z, 0))
        s = s * tl.exp(m - m_new) + tl.sum(tl.exp(z - m_new), 0)
        m = m_new
    lse = m + tl.log(s)
    tl.store(lse_ptr + row, lse)
    for k in range(0, K):
        y = tl.load(y_ptr + k * s_yk + row)
        tl.store(loss_ptr + k * s_lk + row, lse - tl.load(zr + y))
    tl.debug_barrier()  # every warp has read z[y] before any warp overwrites z with p
    # sweep 2: p in place; the draw's fp32 block sums and their float64 total
    offs = tl.arange(0, BLOCK)
    total = tl.zeros([], tl.float64)
    for i in range(0, NB):
        idx = i * BLOCK + offs
        z = tl.load(zr + idx, mask=idx < V, other=float("-inf"))
        p = tl.exp(z - m) / s  # divide like softmax_lse's div_, not times 1/s
        tl.store(zr + idx, p, mask=idx < V)
        if DRAW:
            bs = tl.sum(p, 0)
            tl.store(bsum_ptr + row * s_bc + i, bs)
            total += bs.to(tl.float64)
    if DRAW:
        tl.debug_barrier()  # the block sums and p written above are read by other warps below
        target = tl.load(u_ptr + row) * total
        cum = tl.zeros([], tl.float64)
        before = tl.zeros([], tl.float64)
        kb = tl.zeros([], tl.int32)
        for i in range(0, NB):  # sequential like torch's CPU cumsum: the same float64 CDF
            cum += tl.load(bsum_ptr + row * s_bc + i).to(tl.float64)
            lt = cum < target
            kb += lt.to(tl.int32)
            before = tl.where(lt, cum, before)
        kb = tl.minimum(kb, NB - 1)
        idx = kb * BLOCK + offs
        inner = tl.cumsum(tl.load(zr + idx, mask=idx < V, other=0.0).to(tl.float64), 0) + before
        j = tl.minimum(tl.sum((inner < target).to(tl.int32), 0), BLOCK - 1)  # searchsorted, left
        tl.store(drawn_ptr + row, tl.minimum(kb * BLOCK + j, V - 1).to(tl.int64))


def linear_cross_entropy_head(z, labels, u):
    """z [c, V] fp32 with unit column stride (overwritten by softmax(z)); labels: list of K LongTensors
    [c]; u [c] float64 or None (no draw). Returns (lse [c] fp32, losses [K, c] fp32 = lse - z[y_k],
    drawn [c] int64 or None)."""
    c, V = z.shape
    assert z.dtype == torch.float32 and z.stride(1) == 1, "z must be fp32 with unit column stride"
    dev, K, NB = z.device, len(labels), triton.cdiv(V, DRAW_BLOCK)
    ys = torch.stack(labels) if K else torch.zeros(1, c, dtype=torch.long, device=dev)
    draw = u is not None
    uu = u.to(device=dev, dtype=torch.float64).contiguous() if draw else torch.zeros(1, dtype=torch.float64, device=dev)
    bsum = torch.empty(c if draw else 1, NB, dtype=torch.float32, device=dev)
    lse = torch.empty(c, dtype=torch.float32, device=dev)
    losses = torch.empty(max(K, 1), c, dtype=torch.float32, device=dev)
    drawn = torch.empty(c, dtype=torch.long, device=dev)
    _lce_kernel[(c,)](z, z.stride(0), ys, ys.stride(0), uu, bsum, bsum.stride(0), lse, losses, losses.stride(0),
                      drawn, V, K, NB, DRAW=draw, BV=SWEEP_BLOCK, BLOCK=DRAW_BLOCK, num_warps=8)
    return lse, losses[:K], drawn if draw else None
