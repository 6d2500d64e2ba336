"""Knobs of the attribution pipeline (fit, score), validated once with one-sentence errors."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from mda_fast.errors import ConfigError
from mda_fast.ops.backends import BACKENDS, unusable


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
        """Coerce every field to its type and check its range; ConfigError naming the setting."""
        for f in fields(self):
            setattr(self, f.name, _coerce(f.name, getattr(self, f.name), f.type))
        _check(0.0 < self.fit_fraction <= 1.0, "fit_fraction must be in (0, 1]", self.fit_fraction)
        _check(self.fit_rows is None or self.fit_rows >= 1, "fit_rows must be >= 1", self.fit_rows)
        _check(self.fisher in ("true", "empirical"), "fisher must be 'true' or 'empirical'", self.fisher)
        _check(self.damping >= 0.0 and math.isfinite(self.damping), "damping must be a finite number >= 0",
               self.damping)
        _check(self.damping_floor > 0.0 and math.isfinite(self.damping_floor),
               "damping_floor must be a finite number > 0", self.damping_floor)
        _check(self.preconditioner in ("ekfac", "identity"), "preconditioner must be 'ekfac' or 'identity'",
               self.preconditioner)
        _check(self.backend in ("auto",) + BACKENDS,
               f"backend must be one of 'auto', {', '.join(map(repr, BACKENDS))}", self.backend)
        why = unusable(self.backend)
        if why:
            raise ConfigError(f"settings.backend {self.backend!r} {why}")
        for name in ("batch_size", "chunk_rows", "probe_batch", "probe_n"):
            _check(getattr(self, name) >= 1, f"{name} must be >= 1", getattr(self, name))
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


_TYPES = {"float": (float, "a number"), "int": (int, "an integer"), "str": (str, "a string"),
          "bool": (bool, "true or false")}


def _coerce(name: str, value, annotation: str):
    """``value`` as the field's type (``"int | None"`` allows None); ConfigError naming the setting."""
    kind, optional = annotation.split(" | ")[0], annotation.endswith("| None")
    if value is None and optional:
        return None
    cast, what = _TYPES[kind]
    ok = isinstance(value, cast) and not (cast is not bool and isinstance(value, bool))
    if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if kind == "int" and isinstance(value, float) and value.is_integer():
        value, ok = int(value), True
    if not ok:
        raise ConfigError(f"settings.{name} must be {what}{' or null' if optional else ''}, got {value!r}")
    return cast(value)


def _check(ok: bool, message: str, value) -> None:
    if not ok:
        raise ConfigError(f"settings.{message}, got {value!r}")
