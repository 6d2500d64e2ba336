"""How an index compresses rows (``IndexSpec``): the settings of the index stage, declared once.

Torch-free, so the CLI derives ``mda index``'s flags from these declarations without loading torch;
the math that applies a spec is ``index.basis``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mda_fast.attribution.run.settings import setting
from mda_fast.errors import ConfigError

PROJECTIONS = ("eigen", "seeded")
# The default k: the smallest of the sweep 8, 16, 32, 64 per side with Spearman >= 0.95 and top-10%
# overlap >= 0.9 against mda score on every probe of the demo (benchmarks/index_accuracy.py; README).
DEFAULT_K = (64, 64)
DTYPES = ("float16", "bfloat16", "float32")  # float32: for checking against mda score


def parse_k(value) -> tuple[int, int] | None:
    """``16`` -> (16, 16); ``"16x32"`` -> (k_out, k_in) = (16, 32); ``"full"`` / None -> None (no compression)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("full", "none")):
        return None
    if isinstance(value, (tuple, list)) and len(value) == 2:
        pair = value
    elif isinstance(value, int) and not isinstance(value, bool):
        pair = (value, value)
    else:
        m = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*", str(value))
        if not m:
            raise ConfigError(f"index k {value!r} is not a count per side (16), k_out x k_in (16x32) or 'full'")
        pair = (int(m.group(1)), int(m.group(2) or m.group(1)))
    ko, ki = (int(x) for x in pair)
    if ko < 1 or ki < 1:
        raise ConfigError(f"index k {value!r} must be at least 1 per side")
    return ko, ki


@dataclass(frozen=True)
class IndexSpec:
    """How rows are compressed: ``k`` = (k_out, k_in) per block or None (the whole block),
    ``projection`` "eigen" | "seeded", ``seed`` of the seeded projections, stored ``dtype``.

    ``k="auto"`` (the default) is :data:`DEFAULT_K` as an upper bound: a block smaller than it on a
    side keeps that whole side (a Pythia-14M v block is 32 x 128). A k the user gives must fit every
    block (:func:`check_k`), so what is stored is never silently other than what was asked for."""

    k: tuple[int, int] | str | None = setting("auto", "index", "kept per side: K, K_OUTxK_IN or full (auto: 64 per "
                                                            "side, capped at each block's sides; README, the index)")
    projection: str = setting("eigen", "index", "eigen: the leading eigen-directions; seeded: a seeded "
                                                "Rademacher projection")
    seed: int = setting(0, "index", "seed of the seeded projection")
    dtype: str = setting("float16", "index", "stored dtype: float16, bfloat16 or float32 (float32: to check "
                                             "against mda score)")
    bounded: bool = False  # set from k="auto": k is an upper bound per side

    def __post_init__(self):
        if isinstance(self.k, str) and self.k.strip().lower() == "auto":
            object.__setattr__(self, "bounded", True)
            object.__setattr__(self, "k", DEFAULT_K)
        object.__setattr__(self, "k", parse_k(self.k))
        if self.projection not in PROJECTIONS:
            raise ConfigError(f"index projection {self.projection!r} is not one of {', '.join(PROJECTIONS)}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"index dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"index seed {self.seed!r} must be an integer")

    def k_of(self, out_dim: int, in_dim: int) -> tuple[int, int]:
        """(k_out, k_in) of a block of [out_dim, in_dim]."""
        if self.k is None:
            return out_dim, in_dim
        return (min(self.k[0], out_dim), min(self.k[1], in_dim)) if self.bounded else self.k

    @property
    def kind(self) -> str:
        return "none" if self.k is None else self.projection

    def to_dict(self) -> dict:
        """What changes the stored numbers (part of the index identity)."""
        return {"projection": self.kind, "k": None if self.k is None else list(self.k), "bounded": self.bounded,
                "seed": self.seed if self.kind == "seeded" else None, "dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: dict) -> "IndexSpec":
        """The spec of a :meth:`to_dict` (an index manifest's ``spec``)."""
        kind = d.get("projection")
        spec = cls(k=d.get("k"), projection="eigen" if kind == "none" else kind, seed=d.get("seed") or 0,
                   dtype=d.get("dtype", "float16"))
        object.__setattr__(spec, "bounded", bool(d.get("bounded")) and spec.k is not None)
        return spec
