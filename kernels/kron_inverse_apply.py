"""Triton op 4: W_n = Q_S [(Q_S^T V_n Q_A) / (lam + damping)] Q_A^T for many blocks at once.

All blocks' operands are packed into one flat fp32 buffer; a problem table (offsets, strides,
M/N/K per block) and a tile table (block, query, m-tile, n-tile) drive a grouped GEMM kernel, so
each of the four stages is ONE launch over every block and query, whatever their shapes:

    S1  X = Q_S^T V            S2  Y = (X Q_A) / (lam + damping)   (divide fused as epilogue)
    S3  X = Q_S Y              S4  Y = X Q_A^T
FLOPs per block: 4 n O I (O + I). Transposes are strides in the problem table, never copies.
"""

import torch
import triton
import triton.language as tl

from ._common import INTERPRET, num_warps

_NF = 16  # problem-table fields, see _problems


@triton.jit
def _grouped_gemm(A, Bm, C, D, damp_ptr, prob_ptr, tile_ptr,
                  HAS_D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    pid = tl.program_id(0)
    p = tl.load(tile_ptr + pid * 4)
    batch = tl.load(tile_ptr + pid * 4 + 1).to(tl.int64)
    tm = tl.load(tile_ptr + pid * 4 + 2)
    tn = tl.load(tile_ptr + pid * 4 + 3)
    row = prob_ptr + p * 16
    M, N, K = tl.load(row + 0), tl.load(row + 1), tl.load(row + 2)
    a_base = A + tl.load(row + 3) + batch * tl.load(row + 4)
    s_am, s_ak = tl.load(row + 5), tl.load(row + 6)
    b_base = Bm + tl.load(row + 7) + batch * tl.load(row + 8)
    s_bk, s_bn = tl.load(row + 9), tl.load(row + 10)
    c_base = C + tl.load(row + 11) + batch * tl.load(row + 12)
    offs_m = tm * BM + tl.arange(0, BM)
    offs_n = tn * BN + tl.arange(0, BN)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(0, K, BK):
        offs_k = k0 + tl.arange(0, BK)
        a = tl.load(a_base + offs_m[:, None] * s_am + offs_k[None, :] * s_ak,
                    mask=(offs_m[:, None] < M) & (offs_k[None, :] < K), other=0.0)
        b = tl.load(b_base + offs_k[:, None] * s_bk + offs_n[None, :] * s_bn,
                    mask=(offs_k[:, None] < K) & (offs_n[None, :] < N), other=0.0)
        acc = tl.dot(a, b, acc, input_precision="ieee")
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    if HAS_D:
        d = tl.load(D + tl.load(row + 13) + offs_m[:, None] * N + offs_n[None, :], mask=mask, other=1.0)
        acc = acc / (d + tl.load(damp_ptr + p))
    tl.store(c_base + offs_m[:, None] * N + offs_n[None, :], acc, mask=mask)


def _blocks_for(M, N):
    if INTERPRET:  # fewer, larger numpy steps
        return 32, 32, 32
    return 64, 64, 32


def kron_inverse_apply_grouped(blocks):
    """blocks: list of (Q_A [I,I], Q_S [O,O], lam [O,I], V [n,O,I], damping float) -> list of fp32 [n,O,I]."""
    device = blocks[0][3].device
    parts, offs, pos = [], [], 0
    for Q_A, Q_S, lam, V, _ in blocks:  # pack operands: one flat fp32 buffer
        o = {}
        for name, t in (("QA", Q_A), ("QS", Q_S), ("lam", lam), ("V", V)):
            parts.append(t.float().reshape(-1))
            o[name] = pos
            pos += t.numel()
        offs.append(o)
    src = torch.cat(parts)
    sizes = [V.numel() for _, _, _, V, _ in blocks]
    out_offs = [sum(sizes[:i]) for i in range(len(sizes))]
    X = torch.empty(sum(sizes), dtype=torch.float32, device=device)
    Y = torch.empty_like(X)
    BM, BN, BK = _blocks_for(0, 0)

    tiles = []
    for p, (_, _, _, V, _) in enumerate(blocks):
        n, O, I = V.shape
        for q in range(n):
            for tm in range(triton.cdiv(O, BM)):
                for tn in range(triton.cdiv(I, BN)):
                    tiles.append((p, q, tm, tn))
    tile_t = torch.tensor(tiles, dtype=torch.int32, device=device)
    damp = torch.tensor([float(b[4]) for b in blocks], dtype=torch.float32, device=device)

    def table(stage):
        rows = []
        for p, (_, _, _, V, _) in enumerate(blocks):
            n, O, I = V.shape
            o, c = offs[p], out_offs[p]
            # fields: M N K | A off, batch stride, s_m, s_k | B off, batch stride, s_k, s_n | C off, batch stride | D off
            if stage == 1:    # X = Q_S^T V
                r = (O, I, O, o["QS"], 0, 1, O, o["V"], O * I, I, 1, c, O * I, 0)
            elif stage == 2:  # Y = (X Q_A) / (lam + d)
                r = (O, I, I, c, O * I, I, 1, o["QA"], 0, I, 1, c, O * I, o["lam"])
            elif stage == 3:  # X = Q_S Y
                r = (O, I, O, o["QS"], 0, O, 1, c, O * I, I, 1, c, O * I, 0)
            else:             # Y = X Q_A^T
                r = (O, I, I, c, O * I, I, 1, o["QA"], 0, 1, I, c, O * I, 0)
            rows.append(r + (0,) * (_NF - len(r)))
        return torch.tensor(rows, dtype=torch.int64, device=device)

    grid = (len(tiles),)
    stages = ((1, src, src, X, False), (2, X, src, Y, True), (3, src, Y, X, False), (4, X, src, Y, False))
    for stage, A, Bm, C, has_d in stages:
        _grouped_gemm[grid](A, Bm, C, src, damp, table(stage), tile_t, HAS_D=has_d, BM=BM, BN=BN, BK=BK,
                            num_warps=num_warps(False))  # fp32 operands: exact dots
    return [Y[c:c + V.numel()].view(V.shape) for c, (_, _, _, V, _) in zip(out_offs, blocks)]


def kron_inverse_apply(Q_A, Q_S, lam, V, damping):
    """Single block: [n, O, I] fp32."""
    return kron_inverse_apply_grouped([(Q_A, Q_S, lam, V, damping)])[0]
