"""Knobs of the attribution pipeline (fit, score), validated once with one-sentence errors."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import ClassVar

from mda_fast.errors import ConfigError

# The probe sets' defaults, as ``mda_fast.probes.DEFAULT_*`` (not imported: reading a config loads no
# model code; tests/test_probes.py keeps them equal): the authors' 32 random tokens repeated once
# (length 64), seed 12345, ids 0 and 1 special.
PROBE_N, PROBE_SEQ_LEN, PROBE_SEED, PROBE_VOCAB_LOW = 32, 64, 12345, 2

# Stages of a setting: "fit" changes the fitted factors, "score" the scores given the factors (both
# recorded in the stage's identity: ``Settings.FIT_KEYS`` / ``PROBE_KEYS`` are derived from them);
# "run" settings change throughput or display only, never a number.
STAGES = ("fit", "score", "run")


def setting(default, stage: str, doc: str):
    """A Settings field: its default, its stage (``STAGES``) and its one-line documentation."""
    return field(default=default, metadata={"stage": stage, "doc": doc})


@dataclass
class Settings:
    """Everything that changes numbers (recorded in manifests) plus a few throughput knobs; each
    field's stage and documentation sit beside its default (``Settings.doc(name)``)."""

    fit_fraction: float = setting(0.1, "fit", "share of the window's rows the EK-FAC factors are fitted on (random, seeded)")
    fit_rows: int | None = setting(None, "fit", "if set, fit on exactly this many rows instead (overrides fit_fraction)")
    fit_seed: int = setting(0, "fit", "seed of the subsample and of the labels sampled from the model (true Fisher)")
    fisher: str = setting("true", "fit", '"true": labels sampled from the model\'s softmax; "empirical": the row\'s tokens')
    damping: float = setting(0.1, "fit", "alpha: the denominator is Lambda + max(alpha * mean(Lambda), damping_floor)")
    damping_floor: float = setting(1e-5, "fit", "the smallest damping added to Lambda")
    batch_size: int = setting(8, "run", "rows per forward/backward (results do not depend on it)")
    chunk_rows: int = setting(1024, "run", "rows per score chunk on disk (resume granularity)")
    probe_batch: int = setting(16, "run", "probe sequences per forward when computing the probe gradient")
    probe_n: int = setting(PROBE_N, "score", "probe sequences per probe set (probes.make_data)")
    probe_seq_len: int = setting(PROBE_SEQ_LEN, "score", "tokens per probe sequence")
    probe_seed: int = setting(PROBE_SEED, "score", "seed of the probe sets")
    probe_vocab_low: int = setting(PROBE_VOCAB_LOW, "score", "lowest token id of the probe sets (0, 1 are special)")
    probe_vocab_high: int | None = setting(None, "score", "token ids of the probe sets stay below this (None: the "
                                                          "model's real vocabulary)")
    preconditioner: str = setting("ekfac", "score", '"ekfac": queries H^-1 grad f (MDA); "identity": the raw probe '
                                                    "gradient (gradient-dot-product scores, the curvature-free baseline)")
    backend: str = setting("auto", "run", 'mda_fast.ops backend ("auto", "torch", "cpp", "cuda", "triton")')
    device: str | None = setting(None, "run", "torch device the model runs on (None: where the model already is)")
    progress: bool = setting(True, "run", "show tqdm progress bars")

    # Settings that change the fitted factors (a factor file fitted otherwise is not reused), and
    # those that change the scores given the factors (recorded in the scores manifest): set below.
    FIT_KEYS: ClassVar[tuple[str, ...]] = ()
    PROBE_KEYS: ClassVar[tuple[str, ...]] = ()

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
        # imported here, not at the top: the CLI reads these declarations to build its flags, and
        # ops.backends loads torch (seconds) which `mda --help` must not wait for
        from mda_fast.ops.backends import BACKENDS, unusable

        _check(self.backend in ("auto",) + BACKENDS,
               f"backend must be one of 'auto', {', '.join(map(repr, BACKENDS))}", self.backend)
        why = unusable(self.backend)
        if why:
            raise ConfigError(f"settings.backend {self.backend!r} {why}")
        for name in ("batch_size", "chunk_rows", "probe_batch", "probe_n"):
            _check(getattr(self, name) >= 1, f"{name} must be >= 1", getattr(self, name))
        return self

    @classmethod
    def keys(cls, stage: str) -> tuple[str, ...]:
        """The names of the settings of one stage (``STAGES``), in declaration order."""
        return tuple(f.name for f in fields(cls) if f.metadata["stage"] == stage)

    @classmethod
    def doc(cls, name: str) -> str:
        """The one-line documentation of a setting (CLI help, the config's docs)."""
        return next(f.metadata["doc"] for f in fields(cls) if f.name == name)

    def to_dict(self) -> dict:
        return asdict(self)

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


Settings.FIT_KEYS, Settings.PROBE_KEYS = Settings.keys("fit"), Settings.keys("score")

@dataclass(frozen=True)
class HeadSettings:
    """How head scores are measured (``mda heads``, ``heads.*`` in a run config) and how a run with
    ``units: auto`` picks its heads: the best ``top`` heads by ``metric``, attributed in ``mode``."""

    metric: str = setting("induction", "heads", "head metric that picks units=auto (previous_token, induction, ...)")
    top: int = setting(1, "heads", "how many of the best heads units=auto attributes")
    mode: str = setting("qk", "heads", "block mode of the chosen heads (qk | v | o | qkvo)")
    n: int = setting(PROBE_N, "heads", "random sequences the head scores are measured on")
    seq_len: int = setting(PROBE_SEQ_LEN, "heads", "tokens per sequence (a random half repeated once)")
    seed: int = setting(PROBE_SEED, "heads", "seed of the sequences")
    vocab_low: int = setting(PROBE_VOCAB_LOW, "heads", "lowest token id sampled (0, 1 are special)")
    vocab_high: int | None = setting(None, "heads", "sample ids below this (None: the model's real vocabulary)")


# The YAML defaults of ``heads:`` (mda_fast.config), from the one declaration above.
HEAD_DEFAULTS = asdict(HeadSettings())


def documented(cls) -> list[tuple[str, str, object, str, str]]:
    """(name, annotation, default, stage, doc) of every field of a settings dataclass declared with
    :func:`setting`: the source the CLI flags (``cli.flags.settings``) and the YAML keys derive from."""
    return [(f.name, str(f.type), f.default, f.metadata["stage"], f.metadata["doc"])
            for f in fields(cls) if "doc" in f.metadata]


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
