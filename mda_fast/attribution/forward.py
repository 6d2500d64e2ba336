"""One model pass per batch: row losses, sampled labels, and the captured (a, g) of each block.

A row of L tokens gives inputs ``tokens[:, :-1]`` and labels ``tokens[:, 1:]`` (T = L - 1), as in
Pythia's 2049-token rows. The loss is the summed next-token cross-entropy over the row.
"""

from __future__ import annotations

import torch

from mda_fast.errors import DataError
from mda_fast.models.loss import row_losses
from mda_fast.units import Capture

_MIX = 0x9E3779B97F4A7C15  # row-seed mixing constant (golden ratio, 64 bit)


def row_seed(seed: int, row_id: int) -> int:
    """Seed of one row's label sample: depends on (seed, row id) only, not on batch or rank."""
    return (int(seed) * _MIX + int(row_id) * 0xBF58476D1CE4E5B9 + 1) % (1 << 63)


def sample_labels(logits: torch.Tensor, row_ids: torch.Tensor, seed: int, chunk: int = 256) -> torch.Tensor:
    """Labels [B, T] drawn from softmax(logits [B, T, V]) by inverse-CDF sampling.

    The uniforms come from one generator per row, so the draw depends on (seed, row id) only and
    not on batch size or world size; only T random numbers per row (Gumbel-max would need T * V).
    The CDF is float64 (no rounding gaps) in chunks of ``chunk`` positions to bound memory.
    """
    B, T, V = logits.shape
    out = torch.empty(B, T, dtype=torch.long, device=logits.device)
    for b in range(B):
        gen = torch.Generator().manual_seed(row_seed(seed, int(row_ids[b])))
        u = torch.rand(T, 1, generator=gen, dtype=torch.float64).to(logits.device)
        for t0 in range(0, T, chunk):
            cdf = torch.softmax(logits[b, t0 : t0 + chunk].double(), dim=-1).cumsum_(-1)  # [t, V]
            out[b, t0 : t0 + chunk] = torch.searchsorted(cdf, u[t0 : t0 + chunk] * cdf[:, -1:]).squeeze(-1)
    return out.clamp_(max=V - 1)


def split_tokens(tokens: torch.Tensor, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs [B, T], labels [B, T]) from rows [B, L]; rows need at least 2 tokens."""
    if tokens.dim() != 2 or tokens.shape[1] < 2:
        raise DataError(f"{where}: rows must be [B, L] with L >= 2 tokens, got shape {tuple(tokens.shape)}")
    return tokens[:, :-1], tokens[:, 1:]


def captured_pass(model, adapter, blocks, tokens: torch.Tensor, row_ids: torch.Tensor, *,
                  labels: str = "data", seed: int = 0, where: str = "a batch"):
    """Forward + backward of the summed row loss with capture hooks.

    labels: "data" (the row's next tokens; used for scoring and the empirical Fisher) or
    "sampled" (drawn from the model's own softmax; the true Fisher).
    Returns (a {block: [B, T, I]}, g {block: [B, T, O]}, loss [B] detached fp32).
    Backward stops at the lowest target layer; no weight gradient is computed.
    """
    inputs, targets = split_tokens(tokens, where)
    with Capture(model, blocks, grad_only_from_layer=True, adapter=adapter) as cap:
        logits = model(input_ids=inputs).logits  # [B, T, V]
        if labels == "sampled":
            with torch.no_grad():
                targets = sample_labels(logits.detach(), row_ids, seed)
        loss = row_losses(logits, targets)  # [B]
        loss.sum().backward()
        a, g = cap.a, cap.g
    return a, g, loss.detach()
