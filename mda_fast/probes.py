"""Probe functions f_probe and probe data (mda-reference §1 "Probes").

A probe maps a model's outputs on a batch of probe tokens to one scalar, summed over the batch;
the attribution code differentiates it w.r.t. a unit's weights and averages over the probe set.

    tokens = make_data(32, 64, vocab_high=50277)      # [n, L]: L//2 random tokens repeated once
    f = probe_forward(model, CopyTargetProbe(), tokens)   # scalar tensor, differentiable
"""

from __future__ import annotations

import importlib
import re
from typing import Callable

import torch

from mda_fast.errors import ConfigError
from mda_fast.models.configs import PYTHIA_REAL_VOCAB, PYTHIA_VOCAB

# Authors' defaults: 32 random tokens repeated once (length 64), seed 12345; ids 0, 1 are special.
DEFAULT_N = 32
DEFAULT_SEQ_LEN = 64
DEFAULT_SEED = 12345
DEFAULT_VOCAB_LOW = 2


def make_data(n: int = DEFAULT_N, seq_len: int = DEFAULT_SEQ_LEN, vocab_low: int = DEFAULT_VOCAB_LOW,
              vocab_high: int = PYTHIA_REAL_VOCAB, seed: int = DEFAULT_SEED, repeat: bool = True) -> torch.LongTensor:
    """n sequences of seq_len//2 uniform tokens in [vocab_low, vocab_high) repeated once -> [n, seq_len]
    (repeat=False: seq_len independent uniform tokens).

    Deterministic from `seed` (own torch.Generator, global RNG untouched). Tokens are drawn with
    replacement, so a first half may contain a repeat (rare for a real vocabulary).
    """
    if n < 1:
        raise ConfigError(f"probe data count n={n} must be at least 1")
    if repeat and (seq_len < 4 or seq_len % 2):
        raise ConfigError(f"probe sequence length {seq_len} must be even and at least 4 (a half repeated once)")
    if seq_len < 2:
        raise ConfigError(f"probe sequence length {seq_len} must be at least 2")
    if not 0 <= vocab_low < vocab_high:
        raise ConfigError(f"probe vocabulary range [{vocab_low}, {vocab_high}) is empty or negative")
    gen = torch.Generator().manual_seed(int(seed))
    if not repeat:
        return torch.randint(vocab_low, vocab_high, (n, seq_len), generator=gen, dtype=torch.long)
    half = torch.randint(vocab_low, vocab_high, (n, seq_len // 2), generator=gen, dtype=torch.long)
    return torch.cat([half, half], dim=1)


def default_vocab_high(model, tokenizer=None) -> int:
    """Upper bound for random probe tokens: the tokenizer's real vocabulary when known, else the
    embedding size, with Pythia's padded 50304 reduced to its 50277 real tokens."""
    v = int(model.config.vocab_size)
    if tokenizer is not None:
        v = min(v, len(tokenizer))
    elif v == PYTHIA_VOCAB:
        v = PYTHIA_REAL_VOCAB
    return v


def _logits(outputs) -> torch.Tensor:
    logits = getattr(outputs, "logits", None)
    if logits is None and isinstance(outputs, (tuple, list)):
        logits = outputs[0]
    if logits is None:
        raise ConfigError("model outputs carry no logits; the probe needs a causal LM head")
    return logits


def last_earlier_occurrence(tokens: torch.Tensor) -> torch.LongTensor:
    """For each position t, the largest j < t with tokens[j] == tokens[t], or -1.  [B, T] -> [B, T]."""
    T = tokens.shape[-1]
    eq = tokens[..., :, None] == tokens[..., None, :]                       # [B, T(q), T(k)]
    earlier = torch.ones(T, T, dtype=torch.bool, device=tokens.device).tril(-1)
    idx = torch.arange(T, device=tokens.device).expand_as(eq)
    return torch.where(eq & earlier, idx, torch.full_like(idx, -1)).amax(-1)


class Probe:
    """Base class: `name`, `needs_attentions`, `make_data`, `__call__(outputs, tokens) -> scalar`."""

    name: str = "probe"
    needs_attentions: bool = False

    def make_data(self, n: int = DEFAULT_N, seq_len: int = DEFAULT_SEQ_LEN, vocab_low: int = DEFAULT_VOCAB_LOW,
                  vocab_high: int = PYTHIA_REAL_VOCAB, seed: int = DEFAULT_SEED) -> torch.LongTensor:
        return make_data(n, seq_len, vocab_low, vocab_high, seed)

    def check(self, model) -> None:
        """Raise ConfigError when the probe cannot apply to `model` (e.g. head out of range)."""

    def reaches(self, block, adapter) -> bool:
        """Whether the probe can depend on the weights of ``block`` (a units.BlockSpec); a probe of
        the logits depends on every block."""
        return True

    def dependencies(self) -> str:
        """The blocks the probe depends on, in words (for messages)."""
        return "every block"

    def __call__(self, outputs, tokens: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"


class CopyTargetProbe(Probe):
    """Induction probe: sum over (batch, position t) of log p_t(target), fp32.

    target = tokens[j + offset] with j the last earlier occurrence of tokens[t]; offset=1 is the
    standard induction target (the token that followed it), offset=2 the authors' two-ahead
    variant. Positions without an earlier occurrence (or whose target falls off the end) are skipped.
    """

    def __init__(self, offset: int = 1):
        if offset < 1:
            raise ConfigError(f"copy-target offset {offset} must be at least 1")
        self.offset = int(offset)
        self.name = "copy_target" if offset == 1 else f"copy_target{offset}"

    def targets(self, tokens: torch.Tensor) -> tuple[torch.LongTensor, torch.BoolTensor]:
        """(target ids [B, T], valid mask [B, T]) for `tokens` [B, T]."""
        T = tokens.shape[-1]
        src = last_earlier_occurrence(tokens) + self.offset
        valid = (src >= self.offset) & (src < T)
        tgt = tokens.gather(-1, src.clamp(0, T - 1))
        return tgt, valid

    def __call__(self, outputs, tokens: torch.Tensor) -> torch.Tensor:
        logits = _logits(outputs).float()                                        # [B, T, V]
        tgt, valid = self.targets(tokens.to(logits.device))
        # log softmax at the target only: avoids a second [B, T, V] tensor
        logp = logits.gather(-1, tgt[..., None])[..., 0] - torch.logsumexp(logits, dim=-1)
        return torch.where(valid, logp, torch.zeros_like(logp)).sum()


class PrevAttnProbe(Probe):
    """Previous-token probe: sum over batch and t >= 1 of A_{layer,head}[t, t-1]."""

    needs_attentions = True

    def __init__(self, layer: int, head: int):
        self.layer, self.head = int(layer), int(head)
        self.name = f"prev_attn.L{self.layer}.H{self.head}"

    def make_data(self, n: int = DEFAULT_N, seq_len: int = DEFAULT_SEQ_LEN, vocab_low: int = DEFAULT_VOCAB_LOW,
                  vocab_high: int = PYTHIA_REAL_VOCAB, seed: int = DEFAULT_SEED) -> torch.LongTensor:
        """Plain random sequences (authors: 32 random sequences of 64 tokens; no repeat needed)."""
        return make_data(n, seq_len, vocab_low, vocab_high, seed, repeat=False)

    def check(self, model) -> None:
        n_layers, n_heads = model.config.num_hidden_layers, model.config.num_attention_heads
        if not 0 <= self.layer < n_layers:
            raise ConfigError(f"probe {self.name}: layer {self.layer} out of range (model has {n_layers} layers)")
        if not 0 <= self.head < n_heads:
            raise ConfigError(f"probe {self.name}: head {self.head} out of range (model has {n_heads} heads)")

    def reaches(self, block, adapter) -> bool:
        """Head ``head``'s attention pattern in ``layer`` depends on the blocks of lower layers and, in
        its own layer, only on its query/key weights (a block sharing them, e.g. a GQA key head)."""
        if block.layer != self.layer:
            return block.layer < self.layer
        return block.shares_weights(adapter.block(self.layer, self.head, "qk"))

    def dependencies(self) -> str:
        own = f"the query/key block of L{self.layer}.H{self.head}"
        return f"the blocks of layers below {self.layer} and {own}" if self.layer else own

    def __call__(self, outputs, tokens: torch.Tensor) -> torch.Tensor:
        atts = getattr(outputs, "attentions", None)
        if not atts or atts[0] is None:
            raise ConfigError(f"probe {self.name} needs attention weights; run the model with "
                              f"output_attentions=True and attn_implementation='eager'")
        if not 0 <= self.layer < len(atts) or not 0 <= self.head < atts[self.layer].shape[1]:
            raise ConfigError(f"probe {self.name}: layer/head out of range "
                              f"({len(atts)} layers x {atts[0].shape[1]} heads)")
        a = atts[self.layer][:, self.head]                                       # [B, T, T]
        return torch.diagonal(a, offset=-1, dim1=-2, dim2=-1).float().sum()


class CallableProbe(Probe):
    """Any f(model_outputs, tokens) -> scalar tensor (differentiable), checked on every call."""

    def __init__(self, fn: Callable, name: str | None = None, needs_attentions: bool = False):
        if not callable(fn):
            raise ConfigError(f"probe {fn!r} is not callable")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "callable")
        self.needs_attentions = bool(needs_attentions)

    def __call__(self, outputs, tokens: torch.Tensor) -> torch.Tensor:
        out = self.fn(outputs, tokens)
        if not isinstance(out, torch.Tensor):
            raise ConfigError(f"probe {self.name} returned {type(out).__name__}, expected a scalar torch tensor")
        if out.numel() != 1:
            raise ConfigError(f"probe {self.name} returned a tensor of shape {tuple(out.shape)}, expected a scalar")
        out = out.reshape(())
        if not torch.isfinite(out.detach()).item():
            raise ConfigError(f"probe {self.name} returned a non-finite value ({out.item()})")
        return out


def probe_forward(model, probe: Probe, tokens: torch.Tensor) -> torch.Tensor:
    """Run `model` on `tokens` [B, T] with the flags `probe` needs; return its scalar (grad follows
    the caller's autograd mode)."""
    if tokens.dim() != 2:
        raise ConfigError(f"probe tokens must be [batch, seq], got shape {tuple(tokens.shape)}")
    vocab = int(model.config.vocab_size)
    if tokens.numel() and (int(tokens.max()) >= vocab or int(tokens.min()) < 0):
        raise ConfigError(f"probe tokens must lie in [0, {vocab}) for this model, got "
                          f"[{int(tokens.min())}, {int(tokens.max())}]")
    device = next(model.parameters()).device
    kw = {"output_attentions": True} if probe.needs_attentions else {}
    outputs = model(input_ids=tokens.to(device), use_cache=False, **kw)
    return probe(outputs, tokens.to(device))


_PREV = re.compile(r"^prev[_-]?attn[:@.]?L?(\d+)[.:,/H]+(\d+)$", re.IGNORECASE)
_COPY = re.compile(r"^(?:copy[_-]?target|induction)(\d*)$", re.IGNORECASE)


def parse_probe(spec: str | Probe) -> Probe:
    """Probe from a config/CLI string: "copy_target", "copy_target2" (two-ahead),
    "prev_attn:L1.H3" (or "prev_attn:1.3"), or "package.module:function" for a CallableProbe."""
    if isinstance(spec, Probe):
        return spec
    s = str(spec).strip()
    if m := _COPY.match(s):
        return CopyTargetProbe(int(m.group(1) or 1))
    if m := _PREV.match(s):
        return PrevAttnProbe(int(m.group(1)), int(m.group(2)))
    if ":" in s and re.match(r"^[\w.]+:\w+$", s):
        mod, fn = s.split(":")
        try:
            return CallableProbe(getattr(importlib.import_module(mod), fn), name=fn)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"probe {s!r} cannot be imported ({exc})") from None
    raise ConfigError(f"unknown probe {s!r}; use copy_target, copy_target2, prev_attn:L<layer>.H<head> "
                      f"or module:function")


__all__ = ["Probe", "CopyTargetProbe", "PrevAttnProbe", "CallableProbe", "make_data", "probe_forward",
           "parse_probe", "default_vocab_high",
           "last_earlier_occurrence"]
