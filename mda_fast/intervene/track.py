"""Tracking heads while (re)training, and the step at which a head emerges.

:class:`Tracker` is a training callback. Every ``cadence`` updates (and at the start and the end)
it measures, with the model in eval mode and no grad, on ``n`` sequences of S random tokens
repeated twice:

- ``induction`` [L][H]: every head's prefix-matching score, the mean attention from position t of
  the second half to t - S + 1;
- ``prev_token`` [L][H]: every head's mean attention to the previous position;
- ``probe``: the copy-target behaviour, mean log p of the repeated token over the second half
  (the model-level induction behaviour the scores were computed for; per position, not summed);
- ``icl``: the ICL score of Olsson et al. on held-out rows (:func:`heldout_icl`), negative =
  in-context learning helps; with several named held-out sets, ``icl`` is the first one's and
  ``icl/<name>`` each set's.

The head scores come from :mod:`mda_fast.heads` (``repeat_scores``, ``icl_score``), one
implementation for ``mda heads``, the demo and this tracker. The tracking data is the same for
every condition and seed, so curves are comparable point by point. :func:`series` reads one
head's curve out of a tracked run. With a :class:`StopRule` the tracker asks the training loop to
stop once every target head has emerged (``stop_requested``), which is what makes a powered
experiment affordable: a run that has emerged carries no more information about its emergence.

:func:`emergence` finds the step a curve first crosses a threshold (linear interpolation between
measurements) and the step of steepest rise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mda_fast.errors import ConfigError
from mda_fast.codec import BYTE_VOCAB_SIZE
from mda_fast.heads import icl_score, repeat_scores
from mda_fast.models.configs import PYTHIA_REAL_VOCAB
from mda_fast.probes import make_data
from mda_fast import vocab

HEAD_METRICS = ("induction", "prev_token")      # [L][H] per point (curve keys)
# the head metrics' names (mda_fast.vocab) -> their curve keys; previous_token keeps its old key on
# disk so finished runs' curves and fingerprints stay valid
CURVE_KEYS = {"induction": "induction", "previous_token": "prev_token"}
MODEL_METRICS = ("probe", "icl")                # one number per point
METRICS = HEAD_METRICS + MODEL_METRICS


def curve_key(metric: str) -> str:
    """The curve key of a tracked head metric named as everywhere else (``previous_token``; the old
    ``prev_token`` is accepted with a note)."""
    name = vocab.metric(metric)
    if name not in CURVE_KEYS:
        raise ConfigError(f"metric {metric!r}: a tracked head is followed by {' or '.join(CURVE_KEYS)}")
    return CURVE_KEYS[name]


def repeated_random_tokens(n: int, half: int, low: int, high: int, seed: int) -> torch.Tensor:
    """LongTensor[n, 2 * half]: ``half`` random tokens in [low, high) repeated once (probes.make_data)."""
    return make_data(n, 2 * half, low, high, seed)


def default_token_range(vocab_size: int) -> tuple[int, int]:
    """Printable bytes for a byte-level model (256 bytes, + EOD); else above the special ids 0 and 1
    (Pythia: < 50277). Byte models are trained on text, so random control bytes would never match."""
    return (32, 127) if vocab_size <= BYTE_VOCAB_SIZE else (2, min(vocab_size, PYTHIA_REAL_VOCAB))


def icl_positions(seq_len: int) -> tuple[int, int]:
    """(early, late) prediction positions: (50, 500) at 2048 predictions, scaled below that."""
    n_pred = seq_len - 1
    if n_pred >= 512:
        return 49, 499
    return max(1, round(n_pred * 50 / 2048)), max(2, round(n_pred * 500 / 2048))


@torch.no_grad()
def repeat_point(model, tokens: torch.Tensor) -> dict:
    """{"induction": [L][H], "prev_token": [L][H], "probe": float} on repeated sequences [n, 2S].

    One forward gives the attention of every layer (scored by ``heads.repeat_scores``) and the
    logits of the probe: mean log p of the repeated token over the second half (tokens S+1 .. 2S-1).
    """
    out = model(input_ids=tokens, output_attentions=True)
    S = tokens.shape[1] // 2
    pairs = [repeat_scores(att, S) for att in out.attentions]
    logp = F.log_softmax(out.logits[:, S:2 * S - 1].float(), dim=-1)
    probe = logp.gather(-1, tokens[:, S + 1:, None]).mean().item()
    return {"induction": [i.tolist() for i, _ in pairs], "prev_token": [p.tolist() for _, p in pairs],
            "probe": probe}


@torch.no_grad()
def all_head_scores(model, tokens: torch.Tensor) -> dict:
    """Induction and previous-token scores of every head: {"induction": [[...] per layer], ...}."""
    point = repeat_point(model, tokens)
    return {k: point[k] for k in HEAD_METRICS}


def heldout_icl(model, rows: torch.Tensor) -> float:
    """ICL score of rows [n, L] at :func:`icl_positions` (prediction i is token i + 1), one batch."""
    early, late = icl_positions(rows.shape[1])
    return icl_score(model, rows, early=early + 1, late=late + 1, batch_size=max(1, len(rows)))


@dataclass(frozen=True)
class StopRule:
    """Stop once every ``targets`` head (metric, layer, head) has reached ``threshold`` at a
    measurement and ``after`` more steps have been trained (so the crossing is bracketed), and not
    before step ``not_before`` (so every run reaches the step where conditions are compared)."""

    targets: tuple[tuple[str, int, int], ...]
    threshold: float
    after: int = 0
    not_before: int = 0

    def __post_init__(self):
        for metric, _, _ in self.targets:
            if metric not in HEAD_METRICS:
                raise ConfigError(f"stop rule metric {metric!r} is not one of {HEAD_METRICS}")


class Tracker:
    """Training callback recording :data:`METRICS` every ``cadence`` steps.

    probe_tokens: LongTensor[n, 2S] repeated random sequences; heldout: LongTensor[m, L], a dict
    {name: LongTensor[m, L]} of held-out sets, or None. ``points`` is a list of {"step",
    "induction", "prev_token", "probe", "icl"} (+ "icl/<name>" per named set).
    """

    def __init__(self, probe_tokens: torch.Tensor, heldout: torch.Tensor | None, cadence: int,
                 end_step: int | None = None, batch: int = 64, stop: StopRule | None = None):
        self.probe_tokens = probe_tokens
        sets = heldout if isinstance(heldout, dict) else ({} if heldout is None else {"heldout": heldout})
        self.heldout = {k: v for k, v in sets.items() if v is not None and len(v)}
        self.cadence = max(1, int(cadence))
        self.end_step = end_step
        self.batch = batch
        self.stop = stop
        self.points: list[dict] = []
        self._reached: dict[tuple, int] = {}
        self.stop_requested = False

    def measure(self, model, step: int) -> dict:
        was_training = model.training
        model.eval()
        dev = next(model.parameters()).device
        n = len(self.probe_tokens)
        parts = [repeat_point(model, self.probe_tokens[i:i + self.batch].to(dev)) for i in range(0, n, self.batch)]
        w = np.asarray([min(self.batch, n - i) for i in range(0, n, self.batch)], dtype=np.float64)
        point = {"step": int(step)}
        for k in HEAD_METRICS:
            point[k] = np.tensordot(w / w.sum(), np.asarray([p[k] for p in parts]), axes=1).tolist()
        point["probe"] = float(np.average([p["probe"] for p in parts], weights=w))
        icl = {name: heldout_icl(model, rows.to(dev)) for name, rows in self.heldout.items()}
        point["icl"] = next(iter(icl.values()), float("nan"))
        if len(icl) > 1:
            point.update({f"icl/{name}": v for name, v in icl.items()})
        if was_training:
            model.train()
        self.points = [p for p in self.points if p["step"] != step] + [point]
        self._check_stop(point)
        return point

    def _check_stop(self, point: dict) -> None:
        if self.stop is None:
            return
        for t in self.stop.targets:
            metric, layer, head = t
            if t not in self._reached and point[metric][layer][head] >= self.stop.threshold:
                self._reached[t] = point["step"]
        if len(self._reached) == len(self.stop.targets):
            self.stop_requested = point["step"] >= max(max(self._reached.values()) + self.stop.after,
                                                       self.stop.not_before)

    def on_train_start(self, step: int, model) -> None:
        self.measure(model, step)

    def on_step_end(self, step: int, model, metrics=None) -> None:
        if step % self.cadence == 0 or step == self.end_step:
            self.measure(model, step)

    def curve(self) -> dict:
        pts = sorted(self.points, key=lambda p: p["step"])
        keys = list(METRICS) + sorted({k for p in pts for k in p if k.startswith("icl/")})
        return {"steps": [p["step"] for p in pts], **{k: [p.get(k, float("nan")) for p in pts] for k in keys}}


def series(curve: dict, metric: str, unit: tuple[int, int] | None = None) -> list[float]:
    """One tracked quantity over a run: ``metric`` of head ``unit`` (induction / prev_token), or the
    model-level ``probe`` / ``icl``."""
    if metric in HEAD_METRICS:
        if unit is None:
            raise ConfigError(f"metric {metric!r} is per head: name the unit (layer, head)")
        layer, head = unit
        return [float(v[layer][head]) for v in curve[metric]]
    if metric in MODEL_METRICS or (metric.startswith("icl/") and metric in curve):
        return [float(v) for v in curve[metric]]
    raise ConfigError(f"unknown tracked metric {metric!r} (one of {', '.join(METRICS)})")


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
