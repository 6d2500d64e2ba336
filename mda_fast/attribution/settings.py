"""Knobs of the attribution pipeline (fit, score), validated once with one-sentence errors."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from mda_fast.errors import ConfigError


# How a run with units="auto" picks heads: the best `top` heads by `metric`, attributed in `mode`;
# the head scores use `n` random sequences of `seq_len` tokens (ids in [vocab_low, vocab_high)), `seed`.
HEAD_DEFAULTS = {"metric": "induction", "top": 1, "mode": "qk", "n": 32, "seq_len": 64, "seed": 12345,
                 "vocab_low": 2, "vocab_high": None}


@dataclass
class Settings:
    """Everything that changes numbers (recorded in manifests) plus a few throughput knobs.

    fit_fraction   share of the window's rows the EK-FAC factors are fitted on (random, seeded)
    fit_rows       if set, fit on exactly this many rows instead (overrides fit_fraction)
    fit_seed       seed of the subsample and of the labels sampled from the model (true Fisher)
    fisher         "true": labels sampled from the model's softmax; "empirical": the row's tokens
    damping        alpha: the denominator is Lambda + max(alpha * mean(Lambda), damping_floor)
    batch_size     rows per forward/backward (results do not depend on it)
    chunk_rows     rows per score chunk on disk (resume granularity)
    probe_batch    probe sequences per forward when computing the probe gradient
    probe_n, probe_seq_len, probe_seed, probe_vocab_low, probe_vocab_high
                   probe data (probes.make_data); vocab_high None = the model's real vocabulary
    preconditioner "ekfac": queries H^-1 grad f (MDA); "identity": the raw probe gradient, i.e. plain
                   gradient-dot-product scores (the curvature-free baseline attributor)
    backend        mda_fast.ops backend ("auto", "torch", "cpp", "cuda", "triton")
    device         torch device the model runs on (None: where the model already is)
    progress       show tqdm progress bars
    """

    fit_fraction: float = 0.1
    fit_rows: int | None = None
    fit_seed: int = 0
    fisher: str = "true"
    damping: float = 0.1
    damping_floor: float = 1e-5
    batch_size: int = 8
    chunk_rows: int = 1024
    probe_batch: int = 16
    probe_n: int = 32
    probe_seq_len: int = 64
    probe_seed: int = 12345
    probe_vocab_low: int = 2
    probe_vocab_high: int | None = None
    preconditioner: str = "ekfac"
    backend: str = "auto"
    device: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> "Settings":
        if not 0.0 < float(self.fit_fraction) <= 1.0:
            raise ConfigError(f"fit_fraction must be in (0, 1], got {self.fit_fraction}")
        if self.fit_rows is not None and int(self.fit_rows) < 1:
            raise ConfigError(f"fit_rows must be >= 1, got {self.fit_rows}")
        if self.fisher not in ("true", "empirical"):
            raise ConfigError(f"fisher must be 'true' or 'empirical', got {self.fisher!r}")
        if not float(self.damping) >= 0.0:
            raise ConfigError(f"damping must be >= 0, got {self.damping}")
        if not float(self.damping_floor) > 0.0:
            raise ConfigError(f"damping_floor must be > 0, got {self.damping_floor}")
        if self.preconditioner not in ("ekfac", "identity"):
            raise ConfigError(f"preconditioner must be 'ekfac' or 'identity', got {self.preconditioner!r}")
        for name in ("batch_size", "chunk_rows", "probe_batch", "probe_n"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        return self

    # Settings that change the fitted factors; a factor file fitted otherwise is not reused.
    FIT_KEYS = ("fit_fraction", "fit_rows", "fit_seed", "fisher", "damping", "damping_floor")

    def to_dict(self) -> dict:
        return asdict(self)

    # Settings that change the scores given the factors (recorded in the scores manifest).
    PROBE_KEYS = ("probe_n", "probe_seq_len", "probe_seed", "probe_vocab_low", "probe_vocab_high", "preconditioner")

    def probe_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.PROBE_KEYS}

    def fit_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.FIT_KEYS}

    @classmethod
    def from_dict(cls, d: dict | None) -> "Settings":
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**d)
