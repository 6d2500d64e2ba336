"""Tensor helpers shared by the ops' torch references and the C++ adapter."""

from __future__ import annotations

import torch

# Materializing torch code paths process at most this many fp32 elements of [b, O, I] at a time.
CHUNK_ELEMS = 1 << 25  # 128 MiB


def f32(x: torch.Tensor) -> torch.Tensor:
    """fp32 view or copy; keeps the strides of fp32 tensors."""
    return x if x.dtype == torch.float32 else x.float()


def sample_chunks(B: int, per_sample: int):
    """Slices of the B samples, each holding at most CHUNK_ELEMS elements of ``per_sample`` each."""
    step = max(1, CHUNK_ELEMS // max(1, per_sample))
    for s in range(0, B, step):
        yield slice(s, min(B, s + step))
