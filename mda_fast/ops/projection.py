"""Seeded Rademacher projections that are never stored.

Entry (i, j) of a ``SeededProjection(dim, k, seed)`` is generated from a 32-bit hash (all arithmetic
mod 2^32, ``>>`` logical), identically by every backend (torch here, C++/CUDA/Triton on the fly)::

    h = seed * 0x9E3779B1 + i * 0x85EBCA77 + j * 0xC2B2AE3D
    h ^= h >> 16; h *= 0x7FEB352D; h ^= h >> 15; h *= 0x846CA68B; h ^= h >> 16
    P[i, j] = (1.0 if (h & 1) else -1.0) / sqrt(k)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

MASK32 = 0xFFFFFFFF
C_SEED, C_ROW, C_COL = 0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D
C_MIX1, C_MIX2 = 0x7FEB352D, 0x846CA68B


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2^32 for int64 x in [0, 2^32): split x in 16-bit halves so no product overflows int64."""
    lo, hi = x & 0xFFFF, x >> 16
    return (lo * c + (((hi * c) & 0xFFFF) << 16)) & MASK32


def hash32(seed: int, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """The projection hash for broadcastable int64 index tensors ``i``, ``j`` (values < 2^32)."""
    s = (int(seed) & MASK32) * C_SEED & MASK32
    h = (s + _mul32(i, C_ROW) + _mul32(j, C_COL)) & MASK32
    h = h ^ (h >> 16)
    h = _mul32(h, C_MIX1)
    h = h ^ (h >> 15)
    h = _mul32(h, C_MIX2)
    return h ^ (h >> 16)


@dataclass(frozen=True)
class SeededProjection:
    """A ``[dim, k]`` Rademacher matrix (entries ±1/sqrt(k)) defined by ``seed``; see module docstring."""

    dim: int
    k: int
    seed: int = 0

    def __post_init__(self):
        for name in ("dim", "k"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"SeededProjection.{name} must be a positive int, got {v!r}")
        if not isinstance(self.seed, int):
            raise ValueError(f"SeededProjection.seed must be an int, got {self.seed!r}")

    @property
    def shape(self) -> tuple[int, int]:
        return (self.dim, self.k)

    @property
    def scale(self) -> float:
        return 1.0 / math.sqrt(self.k)

    def materialize(self, dtype: torch.dtype = torch.float32, device="cpu") -> torch.Tensor:
        """Return the explicit ``[dim, k]`` matrix."""
        i = torch.arange(self.dim, dtype=torch.int64, device=device)[:, None]
        j = torch.arange(self.k, dtype=torch.int64, device=device)[None, :]
        bit = (hash32(self.seed, i, j) & 1).to(torch.float32)
        return ((2.0 * bit - 1.0) * self.scale).to(dtype)


def dense(P, device) -> torch.Tensor:
    """[dim, k] fp32 tensor of a projection given as a tensor or a SeededProjection (torch references)."""
    if isinstance(P, SeededProjection):
        return P.materialize(torch.float32, device)
    return P if P.dtype == torch.float32 else P.float()


def parts(P) -> tuple[Optional[torch.Tensor], int, int]:
    """(tensor or None, 32-bit seed, k) of a validated projection: what the compiled backends take
    (None = generate the seeded entries in the kernel)."""
    if isinstance(P, SeededProjection):
        return None, P.seed & MASK32, P.k
    return P, 0, int(P.shape[1])
