"""Induction tracking for the demo: per-head scores (from :mod:`mda_fast.heads`) and the formation window.

The induction score is the prefix-matching score: on n sequences of S random tokens repeated twice,
the mean attention from position t (second half) to t - S + 1 (TransformerLens' definition).
"""

from __future__ import annotations

from mda_fast.heads import head_scores


def measure_heads(model, cfg) -> dict:
    """{"induction": [L][H], "previous_token": [L][H]} on the demo's printable-byte probe sequences."""
    res = head_scores(model, n=cfg.probe_n, seq_len=2 * cfg.probe_len, seed=cfg.probe_seed,
                      vocab_low=cfg.probe_low, vocab_high=cfg.probe_high)
    return {"induction": res.scores["prefix_matching"].tolist(),
            "previous_token": res.scores["previous_token"].tolist()}


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
