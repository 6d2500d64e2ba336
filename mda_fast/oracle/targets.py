"""Differentiable targets of the final weights for the exact oracle: ``target(model) -> scalar``.

Each carries a ``key`` (name + digest of its probe tokens) that enters the oracle's output identity.
Any other callable works too (pass ``target_key`` to ``exact_metagradient`` when writing outputs).
"""

from __future__ import annotations

import torch

from mda_fast.digest import array_digest
from mda_fast.heads import eager_attention, repeat_scores
from mda_fast.probes import Probe, parse_probe, probe_forward


class InductionScore:
    """Prefix-matching (induction) score of head L{layer}.H{head} on ``tokens`` [n, 2S] (S random
    tokens repeated twice): mean attention from t in the second half to t - S + 1 (``heads``)."""

    def __init__(self, layer: int, head: int, tokens: torch.Tensor):
        self.layer, self.head, self.tokens = int(layer), int(head), tokens
        self.key = f"induction:L{self.layer}.H{self.head}:{array_digest(tokens.numpy())}"

    def __call__(self, model) -> torch.Tensor:
        body = getattr(model, "base_model", model)
        with eager_attention(model):
            out = body(input_ids=self.tokens, output_attentions=True, use_cache=False)
        prefix, _ = repeat_scores(out.attentions[self.layer], self.tokens.shape[1] // 2)
        return prefix[self.head]


class ProbeTarget:
    """A probe (``probes``: copy_target, prev_attn:L1.H3, ...) averaged over its data ``tokens``."""

    def __init__(self, probe: Probe | str, tokens: torch.Tensor):
        self.probe, self.tokens = parse_probe(probe), tokens
        self.key = f"probe:{self.probe.name}:{array_digest(tokens.numpy())}"

    def __call__(self, model) -> torch.Tensor:
        with eager_attention(model):
            return probe_forward(model, self.probe, self.tokens) / self.tokens.shape[0]
