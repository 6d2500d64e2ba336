"""The training objective per row, one definition for training, fitting and scoring.

A row of L tokens gives inputs ``tokens[:, :-1]`` and labels ``tokens[:, 1:]`` (T = L - 1 next-token
predictions, as in Pythia's 2049-token rows). A row's loss is its summed next-token cross-entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def row_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy per row: logits [B, T, V], labels [B, T] -> [B] (fp32)."""
    B, T, V = logits.shape
    ce = F.cross_entropy(logits.float().reshape(B * T, V), labels.reshape(B * T), reduction="none")
    return ce.view(B, T).sum(1)


def model_row_losses(model, tokens: torch.Tensor) -> torch.Tensor:
    """:func:`row_losses` of ``model`` on rows [B, L] -> [B] fp32 (differentiable)."""
    return row_losses(model(input_ids=tokens[:, :-1]).logits, tokens[:, 1:])


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
