"""Weight initialization for models trained from scratch (the demo; users training toy models).

GPT-NeoX, which trained Pythia, does not use Hugging Face's single ``initializer_range``
(std 0.02 everywhere). Its configs use ``small_init`` for embeddings, QKV, MLP-in and the LM head,
std sqrt(2 / (5 d)), and ``wang_init`` for the two output projections (attention dense and
MLP-out), std 2 / (L sqrt(d)); biases are 0 and LayerNorms keep weight 1. At the demo's
d 128, L 2 that is 0.056 and 0.088: with HF's 0.02 the demo's induction head did not form in
6,000 steps, with these it forms at ~1,900 (README, "the induction head").
"""

from __future__ import annotations

import math

import torch

from mda_fast.errors import ConfigError

OUTPUT_PROJECTIONS = ("attention.dense.weight", "mlp.dense_4h_to_h.weight")


@torch.no_grad()
def neox_init(model: torch.nn.Module, seed: int | None = None) -> torch.nn.Module:
    """Re-initialize a GPT-NeoX model in place with GPT-NeoX's small_init / wang_init; returns it.

    Matrices (ndim >= 2) are drawn from N(0, std^2) in ``named_parameters`` order from a generator
    seeded with ``seed`` (the global RNG when None); vectors (biases, LayerNorm) are left as the
    model built them.
    """
    cfg = model.config
    if getattr(cfg, "model_type", None) != "gpt_neox":
        raise ConfigError(f"neox_init needs a GPT-NeoX model, got model_type {getattr(cfg, 'model_type', None)!r}")
    d, n_layers = int(cfg.hidden_size), int(cfg.num_hidden_layers)
    small, wang = math.sqrt(2.0 / (5.0 * d)), 2.0 / (n_layers * math.sqrt(d))
    gen = None if seed is None else torch.Generator().manual_seed(int(seed))
    for name, p in model.named_parameters():
        if p.ndim < 2:
            continue
        std = wang if name.endswith(OUTPUT_PROJECTIONS) else small
        p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.dtype) * std)
    return model
