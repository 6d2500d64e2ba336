"""SeededProjection: the hash of docs/ARCHITECTURE.md, checked against plain Python uint32 arithmetic."""

import math

import pytest
import torch

from mda_fast.ops import SeededProjection
from mda_fast.ops.projection import hash32

M = 0xFFFFFFFF


def py_hash(seed, i, j):
    h = (seed * 0x9E3779B1 + i * 0x85EBCA77 + j * 0xC2B2AE3D) & M
    h ^= h >> 16
    h = (h * 0x7FEB352D) & M
    h ^= h >> 15
    h = (h * 0x846CA68B) & M
    return h ^ (h >> 16)


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**31 + 7, 2**32 - 1])
def test_hash_matches_uint32_arithmetic(seed):
    idx = [0, 1, 2, 63, 64, 65, 4097, 50303, 2**20 + 3]
    i = torch.tensor(idx)[:, None]
    j = torch.tensor(idx)[None, :]
    got = hash32(seed, i, j)
    want = torch.tensor([[py_hash(seed, a, b) for b in idx] for a in idx])
    assert torch.equal(got, want)


def test_materialize_values_scale_and_determinism():
    P = SeededProjection(37, 9, seed=5).materialize()
    assert P.shape == (37, 9) and P.dtype == torch.float32
    assert torch.all(P.abs() == 1 / math.sqrt(9))
    assert torch.equal(P, SeededProjection(37, 9, seed=5).materialize())
    assert not torch.equal(P, SeededProjection(37, 9, seed=6).materialize())
    signs = (P > 0).float().mean().item()
    assert 0.3 < signs < 0.7  # Rademacher, not constant
    bit = py_hash(5, 3, 4) & 1
    assert P[3, 4].item() == pytest.approx((1.0 if bit else -1.0) / 3.0)


def test_materialize_dtype():
    assert SeededProjection(4, 4, 0).materialize(torch.bfloat16).dtype == torch.bfloat16


@pytest.mark.parametrize("kw", [dict(dim=0, k=3), dict(dim=3, k=-1), dict(dim=3, k=2, seed=1.5)])
def test_bad_arguments(kw):
    with pytest.raises(ValueError, match="SeededProjection"):
        SeededProjection(**kw)
