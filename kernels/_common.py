"""Triton helpers shared by the op kernels: the seeded projection hash and the tile loaders."""

import os

import torch
import triton
import triton.language as tl

# Fixed when the @triton.jit decorators below run, exactly like Triton's own choice.
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

# The projection hash of mda_fast/ops/projection.py, mod 2^32 (uint32 wraps), ">>" logical.
SEED_MUL = 0x9E3779B1


def lowp_dot(dtype: torch.dtype) -> bool:
    """Dot in bf16/fp16 (fp32 accumulate) for low-precision inputs. The interpreter's bf16 dot
    multiplies the raw bits, so there inputs are upcast to fp32 first (same products, exact)."""
    return dtype != torch.float32 and not INTERPRET


def sm_count(device) -> int:
    """Streaming multiprocessors of a CUDA device (sizes grids); 8 for CPU tensors (interpreter)."""
    device = torch.device(device)
    if device.type != "cuda":
        return 8
    return torch.cuda.get_device_properties(device).multi_processor_count


def num_warps(tensor_core: bool) -> int:
    """Warps for a kernel holding 64x64 fp32 tiles: 4 when its dots are bf16/fp16 tensor-core MMAs,
    else 8 (exact fp32 dots, or an in-kernel hashed projection: with 4 warps ptxas spilled up to
    1.3 KiB per thread on sm_80/sm_90; tests/triton_aot.py and test_triton_compile.py check)."""
    return 4 if tensor_core else 8


def seed_term(seed: int) -> int:
    """seed * 0x9E3779B1 mod 2^32, folded on the host (passed to kernels as an int)."""
    return (int(seed) & 0xFFFFFFFF) * SEED_MUL & 0xFFFFFFFF


@triton.jit
def rademacher_signs(seed_term, offs_i, offs_j):
    """[len(offs_i), len(offs_j)] fp32 tile of ±1 (scale by 1/sqrt(k) separately, exactly)."""
    h = seed_term.to(tl.uint32) + offs_i[:, None].to(tl.uint32) * tl.full((), 0x85EBCA77, tl.uint32)
    h = h + offs_j[None, :].to(tl.uint32) * tl.full((), 0xC2B2AE3D, tl.uint32)
    h = h ^ (h >> 16)
    h = h * tl.full((), 0x7FEB352D, tl.uint32)
    h = h ^ (h >> 15)
    h = h * tl.full((), 0x846CA68B, tl.uint32)
    h = h ^ (h >> 16)
    return tl.where((h & 1) == 1, 1.0, -1.0)


@triton.jit
def project_rows(x_ptr, s_t, s_d, t0, T, D, p_ptr, s_pd, s_pk, k0, K, seed_term,
                 SEEDED: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr, BK: tl.constexpr,
                 LOWP: tl.constexpr):
    """[BT, BK] fp32 = x[t0:t0+BT, :D] @ P[:D, k0:k0+BK] (unscaled ±1 when SEEDED).

    LOWP: x is bf16/fp16, so the dot runs in that dtype (P cast to it; ±1 is exact) with fp32 accumulate.
    """
    offs_t = t0 + tl.arange(0, BT)
    offs_k = k0 + tl.arange(0, BK)
    acc = tl.zeros((BT, BK), dtype=tl.float32)
    for d0 in range(0, D, BD):
        offs_d = d0 + tl.arange(0, BD)
        x = tl.load(x_ptr + offs_t[:, None] * s_t + offs_d[None, :] * s_d,
                    mask=(offs_t[:, None] < T) & (offs_d[None, :] < D), other=0.0)
        if SEEDED:
            p = rademacher_signs(seed_term, offs_d, offs_k)
        else:
            p = tl.load(p_ptr + offs_d[:, None] * s_pd + offs_k[None, :] * s_pk,
                        mask=(offs_d[:, None] < D) & (offs_k[None, :] < K), other=0.0)
        if LOWP:
            acc = tl.dot(x, p.to(x.dtype), acc)
        else:
            acc = tl.dot(x.to(tl.float32), p.to(tl.float32), acc, input_precision="ieee")
    return acc
