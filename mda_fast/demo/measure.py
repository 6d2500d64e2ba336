"""Induction tracking for the demo: per-head scores (from :mod:`mda_fast.heads`) and the formation window.

The induction score is the prefix-matching score: on n sequences of S random tokens repeated twice,
the mean attention from position t (second half) to t - S + 1 (TransformerLens' definition).
"""

from __future__ import annotations

import torch

from mda_fast.heads import induction_scores as _heads_induction_scores


def induction_scores(model, n: int = 32, S: int = 32, low: int = 32, high: int = 127,
                     seed: int = 12345) -> torch.Tensor:
    """[layers, heads] induction (prefix-matching) scores on printable-byte probe tokens."""
    return _heads_induction_scores(model, n=n, S=S, low=low, high=high, seed=seed)


def formation_window(curve: dict[int, float], low: float = 0.1, high: float = 0.5):
    """(last step with score < low before the first step > high, that first step > high), or None.

    ``curve`` maps checkpoint step -> best head score.
    """
    steps = sorted(curve)
    above = [s for s in steps if curve[s] > high]
    if not above:
        return None
    first_high = above[0]
    below = [s for s in steps if s < first_high and curve[s] < low]
    return (below[-1] if below else steps[0], first_high)
