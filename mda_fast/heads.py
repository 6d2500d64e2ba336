"""Head scores (monitoring metrics mu) for every attention head, as TransformerLens defines them.

Patterns are lower-triangular [T, T] per sequence (query q, key k):
  previous_token   1 at (q, q-1)
  duplicate_token  1 at (q, k) where tok[q] == tok[k], k < q
  induction        the duplicate pattern shifted one column right: (q, k+1) where tok[k] == tok[q]
Score "mul" = sum(attn * pattern) / sum(attn) per sequence, averaged over sequences. Attention rows
sum to 1, so on S random tokens repeated twice the induction "mul" score is at most ~0.5 (the
first half has nothing to match). `prefix_matching` is the usual induction metric on such data
(what the paper and the demo report): the pattern mass averaged over only the query rows that have
a pattern, i.e. the mean attention from t (second half) to t - S + 1.

    res = head_scores(model, n=32, seq_len=64)   # HeadScores: res.scores["induction"] [L, H]
    res.to_csv(p); res.to_json(p); res.heatmap(p)
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mda_fast.errors import ConfigError
from mda_fast.io import write_bytes
from mda_fast.models.interop import as_hf_model
from mda_fast.probes import DEFAULT_N, DEFAULT_SEED, DEFAULT_SEQ_LEN, DEFAULT_VOCAB_LOW, default_vocab_high, make_data

SCORE_NAMES = ("previous_token", "duplicate_token", "induction", "prefix_matching")


# ---------------------------------------------------------------- patterns [B, T] -> [B, T, T]
def previous_token_pattern(tokens: torch.Tensor) -> torch.Tensor:
    B, T = tokens.shape
    return torch.diag(torch.ones(max(T - 1, 0), device=tokens.device), -1).expand(B, T, T)


def duplicate_token_pattern(tokens: torch.Tensor) -> torch.Tensor:
    eq = (tokens[:, :, None] == tokens[:, None, :]).float()
    return eq.tril(-1)  # k < q: the diagonal (self) is excluded


def induction_pattern(tokens: torch.Tensor) -> torch.Tensor:
    dup = duplicate_token_pattern(tokens)
    shifted = torch.zeros_like(dup)
    shifted[:, :, 1:] = dup[:, :, :-1]
    return shifted.tril()


PATTERNS = {"previous_token": previous_token_pattern, "duplicate_token": duplicate_token_pattern,
            "induction": induction_pattern}


def mul_score(attn: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    """TransformerLens "mul": attn [B, H, T, T], pattern [B, T, T] -> [B, H] sum(attn*pat)/sum(attn)."""
    attn = attn.float()
    return (attn * pattern[:, None]).sum((-1, -2)) / attn.sum((-1, -2))


def rowwise_score(attn: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    """Pattern mass averaged over query rows that have a pattern: [B, H, T, T] -> [B, H] (NaN if none)."""
    attn = attn.float()
    rows = pattern.sum(-1) > 0                                               # [B, T]
    mass = (attn * pattern[:, None]).sum(-1)                                 # [B, H, T]
    return (mass * rows[:, None]).sum(-1) / rows.sum(-1, keepdim=True).float()


# ---------------------------------------------------------------- by position on repeated data
def repeat_scores(attn: torch.Tensor, half: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(prefix_matching [H], previous [H]) of attention [B, H, 2S, 2S] on S tokens repeated twice.

    By position, not token match (in-half repeats do not count): prefix_matching = mean attention
    from t in [S, 2S) to t - S + 1; previous = mean attention from t >= 1 to t - 1, i.e. the
    per-row form (head_scores' "mul" previous_token is this x (T-1)/T). Means over batch and rows.
    Takes attentions, not a model, so the retraining tracker (intervene/track.py) reuses the
    forward pass it already runs for its probe.
    """
    S = int(half)
    q = torch.arange(S, 2 * S, device=attn.device)
    t = torch.arange(1, 2 * S, device=attn.device)
    return attn[:, :, q, q - S + 1].float().mean(dim=(0, 2)), attn[:, :, t, t - 1].float().mean(dim=(0, 2))


# ---------------------------------------------------------------- running the model
@contextlib.contextmanager
def eager_attention(model):
    """Temporarily switch to eager attention so per-head patterns are returned."""
    old = getattr(model.config, "_attn_implementation", None)
    if old not in (None, "eager"):
        model.set_attn_implementation("eager")
    try:
        yield model
    finally:
        if old not in (None, "eager"):
            model.set_attn_implementation(old)


@contextlib.contextmanager
def _eval_no_grad(model):
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was)


def attentions(model, tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per-layer attention weights [B, H, T, T] (eager attention, no grad, eval mode)."""
    device = next(model.parameters()).device
    body = getattr(model, "base_model", model)  # skip the LM head: no logits needed
    with _eval_no_grad(model), eager_attention(model):
        out = body(input_ids=tokens.to(device), output_attentions=True, use_cache=False)
    atts = getattr(out, "attentions", None)
    if not atts or atts[0] is None:
        raise ConfigError("model returned no attention weights; load it with attn_implementation='eager'")
    return atts


def _check_tokens(model, tokens: torch.Tensor) -> None:
    vocab = int(model.config.vocab_size)
    if tokens.dim() != 2 or tokens.shape[1] < 2:
        raise ConfigError(f"head-score tokens must be [n, T>=2], got shape {tuple(tokens.shape)}")
    if int(tokens.min()) < 0 or int(tokens.max()) >= vocab:
        raise ConfigError(f"head-score tokens must lie in [0, {vocab}), got [{int(tokens.min())}, {int(tokens.max())}]")
    max_pos = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    if max_pos and tokens.shape[1] > max_pos:
        raise ConfigError(f"sequence length {tokens.shape[1]} exceeds the model's context ({max_pos})")


# ---------------------------------------------------------------- result
@dataclass
class HeadScores:
    """scores[name] -> float64 [layers, heads]; settings say how the probe tokens were made."""

    scores: dict[str, np.ndarray]
    model: str = ""
    revision: str | None = None
    settings: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return next(iter(self.scores.values())).shape

    def top(self, name: str = "induction", k: int = 10) -> list[tuple[int, int, float]]:
        """The k heads with the highest `name` score: [(layer, head, score)], best first."""
        if name not in self.scores:
            raise ConfigError(f"unknown head score {name!r}; choose one of {', '.join(self.scores)}")
        s = self.scores[name]
        order = np.argsort(-s, axis=None, kind="stable")[:k]
        return [(int(i // s.shape[1]), int(i % s.shape[1]), float(s.flat[i])) for i in order]

    def rows(self) -> list[dict]:
        L, H = self.shape
        return [dict(layer=l, head=h, **{n: float(v[l, h]) for n, v in self.scores.items()})
                for l in range(L) for h in range(H)]

    def table(self, sort: str = "induction", k: int | None = 10) -> str:
        """Fixed-width text table of the top k heads by `sort` (all heads when k is None)."""
        names = list(self.scores)
        picked = self.top(sort, k if k is not None else self.scores[sort].size)
        head = f"{'head':>8}  " + "  ".join(f"{n:>15}" for n in names)
        lines = [head, "-" * len(head)]
        for l, h, _ in picked:
            lines.append(f"{f'L{l}.H{h}':>8}  " + "  ".join(f"{self.scores[n][l, h]:>15.4f}" for n in names))
        return "\n".join(lines)

    def to_csv(self, path) -> Path:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=["layer", "head", *self.scores], lineterminator="\n")
        w.writeheader()
        for r in self.rows():
            w.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()})
        return _atomic_write(path, buf.getvalue().encode())

    def to_dict(self) -> dict:
        L, H = self.shape
        return {"model": self.model, "revision": self.revision, "layers": L, "heads": H,
                "settings": self.settings, "scores": {n: v.tolist() for n, v in self.scores.items()},
                "top": {n: [dict(layer=l, head=h, score=s) for l, h, s in self.top(n, 5)] for n in self.scores}}

    def to_json(self, path) -> Path:
        return _atomic_write(path, (json.dumps(self.to_dict(), indent=1) + "\n").encode())

    @classmethod
    def from_json(cls, path) -> "HeadScores":
        d = json.loads(Path(path).read_text())
        return cls({n: np.asarray(v, dtype=np.float64) for n, v in d["scores"].items()},
                   d.get("model", ""), d.get("revision"), d.get("settings", {}))

    def heatmap(self, path) -> Path:
        """PNG: one layer x head panel per score, colour scale 0..1."""
        import matplotlib  # imported on use: matplotlib takes seconds to import and most commands never need it
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        L, H = self.shape
        n = len(self.scores)
        fig, axes = plt.subplots(1, n, figsize=(max(3.0, 0.35 * H + 1.5) * n, max(2.5, 0.35 * L + 1.2)),
                                 squeeze=False)
        for ax, (name, s) in zip(axes[0], self.scores.items()):
            im = ax.imshow(np.nan_to_num(s), vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
            ax.set_title(name.replace("_", " "))
            ax.set_xlabel("head")
            ax.set_ylabel("layer")
            ax.set_xticks(range(H))
            ax.set_yticks(range(L))
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        title = self.model + (f" @ {self.revision}" if self.revision else "")
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        return _atomic_write(path, buf.getvalue())


def _atomic_write(path, data: bytes) -> Path:
    return write_bytes(path, data)


# ---------------------------------------------------------------- front doors
def head_scores(model, *, n: int = DEFAULT_N, seq_len: int = DEFAULT_SEQ_LEN, seed: int = DEFAULT_SEED,
                vocab_low: int = DEFAULT_VOCAB_LOW,
                vocab_high: int | None = None, batch_size: int = 8, tokens: torch.Tensor | None = None,
                tokenizer=None, name: str = "", revision: str | None = None) -> HeadScores:
    """All four scores for every head on `tokens` [n, T] (default: make_data(n, seq_len, ...)).

    vocab_high defaults to the real vocabulary (tokenizer, or Pythia's 50277 for a 50304 model).
    Each sequence is scored alone and the scores averaged, as TransformerLens does. ``model`` may be
    held any way ``models.interop.as_hf_model`` takes (a TransformerBridge, an nnsight wrapper).
    """
    model = as_hf_model(model)[0]
    if vocab_high is None:
        vocab_high = default_vocab_high(model, tokenizer)
    if tokens is None:
        tokens = make_data(n, seq_len, vocab_low, vocab_high, seed)
    _check_tokens(model, tokens)
    if batch_size < 1:
        raise ConfigError(f"batch size {batch_size} must be at least 1")
    L, H = model.config.num_hidden_layers, model.config.num_attention_heads
    sums = {s: torch.zeros(L, H, dtype=torch.float64) for s in SCORE_NAMES}
    rows_seen = torch.zeros(L, H, dtype=torch.float64)  # sequences with any induction row
    for start in range(0, tokens.shape[0], batch_size):
        chunk = tokens[start : start + batch_size]
        pats = {k: f(chunk) for k, f in PATTERNS.items()}
        for layer, att in enumerate(attentions(model, chunk)):
            att = att.float().cpu()
            for k, p in pats.items():
                sums[k][layer] += mul_score(att, p).double().sum(0)
            pm = rowwise_score(att, pats["induction"]).double()          # [B, H], NaN: nothing to match
            ok = ~torch.isnan(pm)
            sums["prefix_matching"][layer] += torch.where(ok, pm, torch.zeros_like(pm)).sum(0)
            rows_seen[layer] += ok.double().sum(0)
    count = float(tokens.shape[0])
    out = {k: (v / count).numpy() for k, v in sums.items() if k != "prefix_matching"}
    out["prefix_matching"] = (sums["prefix_matching"] / rows_seen.clamp_min(1)).numpy()
    settings = dict(n=int(tokens.shape[0]), seq_len=int(tokens.shape[1]), seed=seed, vocab_low=vocab_low,
                    vocab_high=int(vocab_high), score="mul (TransformerLens); prefix_matching = per-row mean")
    return HeadScores({k: out[k] for k in SCORE_NAMES}, name, revision, settings)


def induction_scores(model, n: int = 32, S: int = 32, low: int = 2, high: int | None = None,
                     seed: int = DEFAULT_SEED) -> torch.Tensor:
    """[layers, heads] mean attention from t to t - S + 1 over t in [S, 2S) on S random tokens
    repeated twice (the prefix-matching score; what `mda_fast.demo.measure` tracks)."""
    model = as_hf_model(model)[0]
    high = default_vocab_high(model) if high is None else high
    tokens = make_data(n, 2 * S, low, high, seed)
    _check_tokens(model, tokens)
    return torch.stack([repeat_scores(att, S)[0].cpu() for att in attentions(model, tokens)])


def icl_score(model, tokens: torch.Tensor, early: int = 50, late: int = 500, batch_size: int = 8) -> float:
    """In-context-learning score (Olsson et al. 2022): mean loss at token `late` minus mean loss at
    token `early` over `tokens` [n, T] (negative = the model uses its context). When T <= late both
    positions are scaled by (T - 1) / late. Loss at token i = CE of predicting tokens[i] from < i."""
    if tokens.dim() != 2 or tokens.shape[1] < 3:
        raise ConfigError(f"ICL tokens must be [n, T>=3], got shape {tuple(tokens.shape)}")
    model = as_hf_model(model)[0]
    T = tokens.shape[1]
    if T <= late:
        scale = (T - 1) / late
        early, late = max(1, round(early * scale)), max(2, round(late * scale))
        early = min(early, late - 1)
    device = next(model.parameters()).device
    diffs = []
    with _eval_no_grad(model):
        for s in range(0, tokens.shape[0], batch_size):
            x = tokens[s : s + batch_size].to(device)
            logits = model(input_ids=x[:, : late], use_cache=False).logits.float()
            logp = torch.log_softmax(logits[:, [early - 1, late - 1]], dim=-1)
            nll = -logp.gather(-1, x[:, [early, late], None])[..., 0]     # [B, 2]
            diffs.append(nll[:, 1] - nll[:, 0])
    return float(torch.cat(diffs).mean())


__all__ = ["HeadScores", "head_scores", "induction_scores", "icl_score", "attentions", "mul_score",
           "rowwise_score", "repeat_scores", "previous_token_pattern", "duplicate_token_pattern",
           "induction_pattern", "SCORE_NAMES", "eager_attention"]
