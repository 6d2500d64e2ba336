"""The demo run's settings: model, corpus, optimizer, checkpoints, induction measurement.

The dataclass defaults are the source of truth; ``demo.yaml`` next to this file mirrors them (a
test keeps the two equal) and a user YAML may override any subset of keys::

    cfg = load_demo_config("my.yaml", steps=600)      # file, then keyword overrides
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from mda_fast.codec import BYTE_VOCAB_SIZE, EOD_ID
from mda_fast.demo.corpus import check_strata
from mda_fast.errors import ConfigError
from mda_fast.training import OptimConfig

DEFAULT_YAML = Path(__file__).with_name("demo.yaml")


@dataclass
class DemoConfig:
    # model: GPT-NeoX, Pythia-style (parallel residual, rotary 25%, untied embeddings)
    layers: int = 2
    d_model: int = 128
    heads: int = 4
    intermediate: int = 256
    vocab_size: int = BYTE_VOCAB_SIZE        # 256 bytes + EOD
    max_positions: int = 256
    model_seed: int = 0
    init: str = "neox"                       # GPT-NeoX small_init/wang_init ("hf": std 0.02 everywhere)
    # corpus (rows = seq_len tokens: seq_len-1 inputs + shifted label)
    seq_len: int = 65
    corpus_seed: int = 0
    mix: dict = field(default_factory=lambda: {"code": 0.80, "prose": 0.10, "markup": 0.05,
                                               "latex": 0.025, "records": 0.025, "repeated": 0.0})
    repeat_rows: float = 0.3                 # (without strata) share of rows overwritten by a span tiled along the row
    repeat_span: tuple = (6, 30)             # span length, inclusive
    repeat_gap: tuple = (0, 0)               # original-text tokens left between copies, inclusive
    # driving strata (corpus.check_strata): when given, they replace repeat_rows/span/gap; each a
    # {name, share, span, corrupt, cover} of tiled rows with a planted teaching strength
    strata: list = field(default_factory=lambda: [
        {"name": "strong", "share": 0.22, "span": [6, 30]},
        {"name": "medium", "share": 0.11, "span": [6, 30], "corrupt": 0.3},
        {"name": "weak", "share": 0.12, "span": [6, 30], "corrupt": 0.6}])
    # training: at most `steps`; once the induction head has formed, `after_formed` more steps
    steps: int = 6000
    after_formed: int = 300                  # 0: always train all `steps`
    rows_per_step: int = 32
    lr: float = 3e-3
    betas: tuple = (0.9, 0.95)
    weight_decay: float = 0.01
    clip: float = 1.0
    warmup_steps: int = 0
    schedule: str = "constant"
    # checkpoints: Pythia's step0 + 1, 2, 4, ..., 512, then every `save_every`
    save_every: int = 25
    # induction measurement: n sequences of S random tokens from [low, high) repeated twice
    probe_n: int = 32
    probe_len: int = 32
    probe_low: int = 32                      # printable ASCII: bytes the corpus actually uses
    probe_high: int = 127
    probe_seed: int = 12345
    formation_low: float = 0.1
    formation_high: float = 0.5
    prev_low: float = 0.2                    # previous-token head formation: score < prev_low -> > prev_high
    prev_high: float = 0.5

    def __post_init__(self):
        self.betas = tuple(self.betas)
        self.repeat_span, self.repeat_gap = tuple(self.repeat_span), tuple(self.repeat_gap)
        self.strata = [dict(st, span=list(st["span"])) for st in check_strata(self.strata)]
        if self.init not in ("neox", "hf"):
            raise ConfigError(f"demo init {self.init!r} is not one of 'neox', 'hf'.")
        if self.after_formed < 0:
            raise ConfigError(f"demo after_formed {self.after_formed} must be >= 0.")
        if self.d_model % self.heads:
            raise ConfigError(f"demo d_model {self.d_model} is not divisible by heads {self.heads}.")
        if self.vocab_size <= EOD_ID:
            raise ConfigError(f"demo vocab_size {self.vocab_size} must exceed the EOD id {EOD_ID}.")
        if self.seq_len - 1 > self.max_positions:
            raise ConfigError(f"demo seq_len {self.seq_len} exceeds max_positions {self.max_positions} + 1.")
        if not 0 <= self.probe_low < self.probe_high <= EOD_ID:
            raise ConfigError(f"demo probe token range [{self.probe_low}, {self.probe_high}) is not "
                              f"inside the byte vocabulary [0, {EOD_ID}).")
        if self.steps <= 0 or self.rows_per_step <= 0 or self.save_every <= 0:
            raise ConfigError("demo steps, rows_per_step and save_every must be positive.")

    @property
    def driving_share(self) -> float:
        """Share of the rows that are driving (tiled) rows."""
        return sum(st["share"] for st in self.strata) if self.strata else self.repeat_rows

    @property
    def n_rows(self) -> int:
        return self.steps * self.rows_per_step

    def model_config(self):
        """The ``GPTNeoXConfig`` of the demo model."""
        # imported on use: transformers takes seconds to import and most commands never need it
        from transformers import GPTNeoXConfig

        return GPTNeoXConfig(
            vocab_size=self.vocab_size, hidden_size=self.d_model, num_hidden_layers=self.layers,
            num_attention_heads=self.heads, intermediate_size=self.intermediate, rotary_pct=0.25,
            rotary_emb_base=10000, max_position_embeddings=self.max_positions,
            use_parallel_residual=True, hidden_act="gelu", attention_dropout=0.0, hidden_dropout=0.0,
            tie_word_embeddings=False, bos_token_id=EOD_ID, eos_token_id=EOD_ID, use_cache=False)

    def optim_config(self):
        return OptimConfig(lr=self.lr, betas=self.betas, weight_decay=self.weight_decay, clip=self.clip,
                           warmup_steps=self.warmup_steps, total_steps=self.steps,
                           schedule=self.schedule)

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("betas", "repeat_span", "repeat_gap"):
            d[k] = list(d[k])
        return d


def load_demo_config(path: str | Path | None = None, **overrides) -> DemoConfig:
    """Defaults, then the YAML at ``path`` (any subset of keys), then ``overrides``."""
    values: dict = {}
    if path is not None:
        p = Path(path)
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"demo config {p} does not exist.")
        except yaml.YAMLError as e:
            raise ConfigError(f"demo config {p} is not valid YAML ({e}).")
        if not isinstance(loaded, dict):
            raise ConfigError(f"demo config {p} must be a mapping of settings.")
        values.update(loaded)
    values.update(overrides)
    known = {f.name for f in fields(DemoConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"demo config has unknown keys {unknown}; known: {sorted(known)}.")
    return DemoConfig(**values)
