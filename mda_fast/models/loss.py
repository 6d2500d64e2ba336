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
