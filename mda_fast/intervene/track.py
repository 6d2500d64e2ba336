"""Tracking a head while (re)training, and the step at which it emerges.

:class:`Tracker` is a training callback. Every ``cadence`` updates (and at the start and the end)
it measures, with the model in eval mode and no grad:

- ``induction``: the unit's induction score, the mean attention from position t of the second
  half to t - S + 1, on ``n`` sequences of S random tokens repeated twice;
- ``prev_token``: the unit's mean attention to the previous position on the same sequences;
- ``probe``: the copy-target probe, mean log p(token after the earlier occurrence) over the
  second half (the induction behaviour the scores were computed for; per position, not summed);
- ``icl``: the ICL score of Olsson et al. on held-out rows, loss at a late position minus loss at
  an early one (500 and 50 for 2048-token rows, scaled to the row length), negative = in-context
  learning helps.

The scores come from :mod:`mda_fast.heads` (``repeat_scores``, ``icl_score``), one implementation
for ``mda heads``, the demo and this tracker; only the probe is the tracker's own. The tracking
data (random sequences, held-out rows) is fixed by ``data_seed`` and is the same for every
condition and seed, so curves are comparable point by point.

:func:`emergence` finds the step a curve first crosses a threshold (linear interpolation between
measurements) and the step of steepest rise.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from mda_fast.heads import icl_score, repeat_scores
from mda_fast.probes import make_data

METRICS = ("induction", "prev_token", "probe", "icl")


def repeated_random_tokens(n: int, half: int, low: int, high: int, seed: int) -> torch.Tensor:
    """LongTensor[n, 2 * half]: ``half`` random tokens in [low, high) repeated once (probes.make_data)."""
    return make_data(n, 2 * half, low, high, seed)


def default_token_range(vocab_size: int) -> tuple[int, int]:
    """Printable bytes for a byte-level model; else above the special ids 0 and 1 (Pythia: < 50277)."""
    return (32, 127) if vocab_size <= 256 else (2, min(vocab_size, 50277))


def icl_positions(seq_len: int) -> tuple[int, int]:
    """(early, late) prediction positions: (50, 500) at 2048 predictions, scaled below that."""
    n_pred = seq_len - 1
    if n_pred >= 512:
        return 49, 499
    return max(1, round(n_pred * 50 / 2048)), max(2, round(n_pred * 500 / 2048))


@torch.no_grad()
def unit_scores(model, tokens: torch.Tensor, layer: int, head: int) -> dict:
    """{"induction", "prev_token", "probe"} of one head on repeated random sequences [n, 2S].

    One forward gives both the attention (scored by ``heads.repeat_scores``) and the logits of
    the probe: mean log p of the repeated token over the second half (predicts tokens S+1 .. 2S-1).
    """
    out = model(input_ids=tokens, output_attentions=True)
    S = tokens.shape[1] // 2
    induction, prev = repeat_scores(out.attentions[layer][:, head:head + 1], S)
    logp = F.log_softmax(out.logits[:, S:2 * S - 1].float(), dim=-1)
    probe = logp.gather(-1, tokens[:, S + 1:, None]).mean().item()
    return {"induction": induction.item(), "prev_token": prev.item(), "probe": probe}


@torch.no_grad()
def all_head_scores(model, tokens: torch.Tensor) -> dict:
    """Induction and previous-token scores of every head: {"induction": [[...] per layer], ...}."""
    out = model(input_ids=tokens, output_attentions=True)
    pairs = [repeat_scores(att, tokens.shape[1] // 2) for att in out.attentions]
    return {"induction": [i.tolist() for i, _ in pairs], "prev_token": [p.tolist() for _, p in pairs]}


def heldout_icl(model, rows: torch.Tensor) -> float:
    """ICL score of rows [n, L] at :func:`icl_positions` (prediction i is token i + 1), one batch."""
    early, late = icl_positions(rows.shape[1])
    return icl_score(model, rows, early=early + 1, late=late + 1, batch_size=max(1, len(rows)))


class Tracker:
    """Training callback recording :data:`METRICS` of head (layer, head) every ``cadence`` steps.

    probe_tokens: LongTensor[n, 2S] repeated random sequences; heldout: LongTensor[m, L] or None.
    ``points`` is a list of {"step", "induction", "prev_token", "probe", "icl"}.
    """

    def __init__(self, unit: tuple[int, int], probe_tokens: torch.Tensor, heldout: torch.Tensor | None,
                 cadence: int, end_step: int | None = None, batch: int = 64):
        self.layer, self.head = int(unit[0]), int(unit[1])
        self.probe_tokens = probe_tokens
        self.heldout = heldout
        self.cadence = max(1, int(cadence))
        self.end_step = end_step
        self.batch = batch
        self.points: list[dict] = []

    def measure(self, model, step: int) -> dict:
        was_training = model.training
        model.eval()
        dev = next(model.parameters()).device
        parts = [unit_scores(model, self.probe_tokens[i:i + self.batch].to(dev), self.layer, self.head)
                 for i in range(0, len(self.probe_tokens), self.batch)]
        w = [min(self.batch, len(self.probe_tokens) - i) for i in range(0, len(self.probe_tokens), self.batch)]
        point = {"step": int(step)}
        for k in ("induction", "prev_token", "probe"):
            point[k] = float(np.average([p[k] for p in parts], weights=w))
        if self.heldout is not None and len(self.heldout):
            point["icl"] = heldout_icl(model, self.heldout.to(dev))
        else:
            point["icl"] = float("nan")
        if was_training:
            model.train()
        self.points = [p for p in self.points if p["step"] != step] + [point]
        return point

    def on_train_start(self, step: int, model) -> None:
        self.measure(model, step)

    def on_step_end(self, step: int, model, metrics=None) -> None:
        if step % self.cadence == 0 or step == self.end_step:
            self.measure(model, step)

    def curve(self) -> dict:
        pts = sorted(self.points, key=lambda p: p["step"])
        return {"steps": [p["step"] for p in pts], **{k: [p[k] for p in pts] for k in METRICS}}


def emergence(steps, values, threshold: float) -> dict:
    """Emergence of one curve.

    ``cross``: first step the value reaches ``threshold``, linearly interpolated between the two
    measurements around it (the first step itself when the curve starts above); None when it never
    does. ``steepest``: midpoint of the measurement interval with the largest rise per step.
    """
    s = np.asarray(steps, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    out = {"cross": None, "steepest": None, "final": float(v[-1]) if v.size else None,
           "max": float(np.nanmax(v)) if v.size else None, "threshold": float(threshold)}
    if v.size == 0:
        return out
    above = np.flatnonzero(v >= threshold)
    if above.size:
        i = int(above[0])
        if i == 0:
            out["cross"] = float(s[0])
        else:
            f = (threshold - v[i - 1]) / (v[i] - v[i - 1])
            out["cross"] = float(s[i - 1] + f * (s[i] - s[i - 1]))
    if v.size >= 2:
        slope = np.diff(v) / np.maximum(np.diff(s), 1e-12)
        j = int(np.nanargmax(slope))
        out["steepest"] = float((s[j] + s[j + 1]) / 2)
    return out


def mean_std(xs) -> tuple[float | None, float | None]:
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not xs:
        return None, None
    a = np.asarray(xs, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0
