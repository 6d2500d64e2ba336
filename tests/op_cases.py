"""Shared cases for the per-op tests: backends to try, tolerances, input builders.

fp32 accumulates over at most a few hundred terms; low-precision inputs are rounded identically for
the float64 oracle, but GPU kernels may also round an explicit fp32 projection to the input dtype.
"""

import math

import pytest
import torch

import mda_fast.ops as ops
from mda_fast.ops import SeededProjection

ALL = [("torch", "cpu"), ("cpp", "cpu"), ("triton", "cpu"), ("triton", "cuda"), ("cuda", "cuda")]
BACKENDS = [pytest.param(b, d, id=f"{b}-{d}") for b, d in ALL]
# fp32: fp32 accumulation over <= a few hundred terms. Low precision: inputs are rounded identically
# for the oracle, but GPU kernels may also round an explicit fp32 projection to the input dtype.
TOL = {torch.float32: 2e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}


def need(backend, device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    if backend not in ops.available_backends(device):
        pytest.skip(f"{backend}: {ops.backend_status()[backend][1]}")


def close(out, want, dtype):
    assert out.dtype == torch.float32 and out.shape == want.shape
    err = (out.cpu().double() - want).abs().max().item()
    assert err <= TOL[dtype] * max(1.0, want.abs().max().item()), err


def inputs(B, T, I, O, dtype=torch.float32, noncontig=False, device="cpu"):
    gen = torch.Generator().manual_seed(B * 1000 + T * 10 + I + O)
    if noncontig:  # a transposed view and a sliced view
        a = torch.randn(T, B, I, generator=gen).transpose(0, 1)
        g = torch.randn(B, T, O + 3, generator=gen)[:, :, 1:O + 1]
    else:
        a, g = torch.randn(B, T, I, generator=gen), torch.randn(B, T, O, generator=gen)
    return a.to(device=device, dtype=dtype), g.to(device=device, dtype=dtype)


def hash_entry(seed: int, i: int, j: int, k: int) -> float:
    """The ARCHITECTURE.md projection hash in plain Python ints (independent of every backend)."""
    M = 0xFFFFFFFF
    h = (seed * 0x9E3779B1 + i * 0x85EBCA77 + j * 0xC2B2AE3D) & M
    h ^= h >> 16
    h = (h * 0x7FEB352D) & M
    h ^= h >> 15
    h = (h * 0x846CA68B) & M
    h ^= h >> 16
    return (1.0 if h & 1 else -1.0) / math.sqrt(k)


class Seeded(SeededProjection):
    """A SeededProjection(dim, k, seed) with ``dense()``: the float64 [dim, k] matrix from hash_entry
    (an oracle independent of every backend's implementation of the hash)."""

    def dense(self) -> torch.Tensor:
        return torch.tensor([[hash_entry(self.seed, i, j, self.k) for j in range(self.k)]
                             for i in range(self.dim)], dtype=torch.float64)
