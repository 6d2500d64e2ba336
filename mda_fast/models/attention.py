"""Which attention kernel a pass runs: models load with eager attention (probes read attention
weights), but the fit and score passes never read them, and PyTorch's fused scaled-dot-product
attention computes the same function without the [B, H, T, T] weights held for backward (half the
time and a third less memory at 2048 tokens on one CPU core; benchmarks/RESULTS.md)."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def fused_attention(model):
    """Run ``model`` with SDPA attention inside the block (where the model class supports it),
    restoring its own implementation after."""
    before = getattr(model.config, "_attn_implementation", None)
    switch = before == "eager" and bool(getattr(model, "_supports_sdpa", False))
    if switch:
        model.set_attn_implementation("sdpa")
    try:
        yield model
    finally:
        if switch:
            model.set_attn_implementation(before)
