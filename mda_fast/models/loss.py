"""The training objective per row: a row's loss is its summed next-token cross-entropy.

A row of L tokens gives inputs ``tokens[:, :-1]`` and labels ``tokens[:, 1:]`` (T = L - 1 next-token
predictions, as in Pythia's 2049-token rows; :func:`split_rows`, the one place the split is written).
Training computes it from the logits (:func:`row_losses`); fitting and scoring compute the same loss
without forming the logits, from :func:`final_hidden` and the LM head (:func:`lm_head`) through op 5
(``ops.op_linear_cross_entropy``, in ``attribution.score.forward.head_losses``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def row_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy per row: logits [B, T, V], labels [B, T] -> [B] (fp32)."""
    B, T, V = logits.shape
    ce = F.cross_entropy(logits.float().reshape(B * T, V), labels.reshape(B * T), reduction="none")
    return ce.view(B, T).sum(1)


def split_rows(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs [B, T], labels [B, T]) of rows [B, L]: ``tokens[:, :-1]`` and ``tokens[:, 1:]``."""
    return tokens[:, :-1], tokens[:, 1:]


def model_row_losses(model, tokens: torch.Tensor) -> torch.Tensor:
    """:func:`row_losses` of ``model`` on rows [B, L] -> [B] fp32 (differentiable)."""
    inputs, labels = split_rows(tokens)
    return row_losses(model(input_ids=inputs).logits, labels)


def lm_head(model) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight [V, d], bias [V] | None) of the model's output embedding (the LM head)."""
    head = model.get_output_embeddings()
    if not isinstance(head, torch.nn.Linear):
        raise TypeError(f"{type(model).__name__}'s output embedding is {type(head).__name__}, not a Linear LM head")
    return head.weight, head.bias


def final_hidden(model, inputs: torch.Tensor) -> torch.Tensor:
    """The hidden state [B, T, d] the LM head reads (after the final norm): ``model(inputs).logits``
    is ``F.linear(final_hidden(model, inputs), *lm_head(model))``, without forming the logits."""
    return model.base_model(input_ids=inputs).last_hidden_state
