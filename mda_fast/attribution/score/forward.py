"""One model pass per batch: row losses, sampled labels, and the captured (a, g) of each block.

A row of L tokens gives inputs ``tokens[:, :-1]`` and labels ``tokens[:, 1:]`` (T = L - 1), as in
Pythia's 2049-token rows. The loss is the summed next-token cross-entropy over the row. The LM head,
the cross-entropy, the label draw and the gradient into the final hidden state run in token chunks
(``ops.op_linear_cross_entropy``): no [B, T, V] tensor is ever formed; attention runs as fused SDPA
(``models.attention``): no [B, H, T, T] weights are kept either.
"""

from __future__ import annotations

import torch

from mda_fast.attribution.fit.factors import check_finite_views
from mda_fast.errors import DataError
from mda_fast.models.attention import fused_attention
from mda_fast.models.loss import final_hidden, lm_head, split_rows
from mda_fast.ops import op_linear_cross_entropy as lce
from mda_fast.capture import Capture

_MIX = 0x9E3779B97F4A7C15  # row-seed mixing constant (golden ratio, 64 bit)


def row_seed(seed: int, row_id: int) -> int:
    """Seed of one row's label sample: depends on (seed, row id) only, not on batch or rank."""
    return (int(seed) * _MIX + int(row_id) * 0xBF58476D1CE4E5B9 + 1) % (1 << 63)


def row_uniforms(row_ids: torch.Tensor, seed: int, T: int) -> torch.Tensor:
    """Uniforms [B, T] float64 of the label draw: one generator per row seeded by (seed, row id),
    so the draw depends on neither batch size nor world size; T numbers per row (Gumbel-max would
    need T * V)."""
    rows = [torch.rand(T, generator=torch.Generator().manual_seed(row_seed(seed, int(r))), dtype=torch.float64)
            for r in row_ids]
    return torch.stack(rows) if rows else torch.empty(0, T, dtype=torch.float64)


def rows_where(row_ids) -> str:
    """How errors name a batch: "the batch of rows 1000..1003"."""
    return f"the batch of rows {int(row_ids[0])}..{int(row_ids[-1])}" if len(row_ids) else "an empty batch"


def split_tokens(tokens: torch.Tensor, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs [B, T], labels [B, T]) from rows [B, L]; rows need at least 2 tokens."""
    if tokens.dim() != 2 or tokens.shape[1] < 2:
        raise DataError(f"{where}: rows must be [B, L] with L >= 2 tokens, got shape {tuple(tokens.shape)}")
    return split_rows(tokens)


def head_losses(model, hidden: torch.Tensor, targets: torch.Tensor, row_ids: torch.Tensor, seed: int,
                kinds: tuple[str, ...], backend: str = "auto") -> list[torch.Tensor]:
    """Row losses [B] (differentiable w.r.t. ``hidden`` [B, T, d]) for each of ``kinds``: "data"
    (``targets``) or "sampled" (drawn from the model); one chunked LM-head pass serves all.
    ``backend``: the run's setting; op 5 has only torch and triton, so any other name means auto."""
    weight, bias = lm_head(model)
    data = [targets] if "data" in kinds else []
    u = row_uniforms(row_ids, seed, hidden.shape[1]).to(hidden.device) if "sampled" in kinds else None
    losses, grads, _ = lce.chunked(hidden, weight, bias, data, u,
                                   backend=backend if backend in lce.HAS else "auto")
    order = ["data"] * len(data) + ["sampled"] * (u is not None)
    return [lce.attach(hidden, losses[order.index(k)], grads[order.index(k)]) for k in kinds]


def captured_pass(model, adapter, blocks, tokens: torch.Tensor, row_ids: torch.Tensor, *,
                  labels: str = "data", seed: int = 0, where: str | None = None, backend: str = "auto"):
    """Forward + backward of the summed row loss with capture hooks.

    labels: "data" (the row's next tokens; used for scoring and the empirical Fisher) or
    "sampled" (drawn from the model's own softmax; the true Fisher).
    Returns (a {block: [B, T, I]}, g {block: [B, T, O]}, loss [B] detached fp32), checked finite
    (NumericalError naming the block and ``where``, default :func:`rows_where`). Backward stops at the captured outputs; no
    weight gradient is computed.
    """
    a, gs, losses = captured_multi_pass(model, adapter, blocks, tokens, row_ids, (labels,), seed=seed, where=where,
                                        backend=backend)
    return a, gs[0], losses[0]


def captured_multi_pass(model, adapter, blocks, tokens: torch.Tensor, row_ids: torch.Tensor,
                        kinds: tuple[str, ...], *, seed: int = 0, where: str | None = None, backend: str = "auto"):
    """One forward, then one truncated backward per label kind in ``kinds`` (see captured_pass).

    Returns (a {block: [B, T, I]}, [g {block: [B, T, O]} per kind], [loss [B] per kind]).
    """
    where = where or rows_where(row_ids)
    inputs, targets = split_tokens(tokens, where)
    gs, out = [], []
    with fused_attention(model), Capture(model, blocks, grad_only_from_layer=True, adapter=adapter) as cap:
        hidden = final_hidden(model, inputs)  # [B, T, d]
        losses = head_losses(model, hidden, targets, row_ids, seed, kinds, backend)
        for i, loss in enumerate(losses):
            loss.sum().backward(retain_graph=i + 1 < len(losses))
            gs.append(cap.g)  # the hooks replace the dict's entries, never these tensors
            out.append(loss.detach())
        a = cap.a
    check_finite_views(a, "input activation", where)
    for g in gs:
        check_finite_views(g, "output gradient", where)
    return a, gs, out
