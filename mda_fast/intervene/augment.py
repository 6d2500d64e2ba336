"""Mechanistic augmentation: seeded synthetic rows with the repetitive structure found enriched
among top-influence rows, tokenized and written as ``.bin/.idx`` rows for ``insert-synthetic``.

Documents come from :mod:`mda_fast.intervene.generators` (the set the demo corpus uses too); the
default kinds are ``spans`` (``max_gap`` characters at most between copies, default a third of
the row), ``markup`` and ``table``; the demo inserts ``tiled`` rows.

Rows are made by concatenating documents separated by the codec's end-of-document token until
``seq_len`` tokens, then cutting (each row starts at a document start). ``<prefix>.kinds.json``
records the generator of each row's first document.
"""

from __future__ import annotations

import random

import numpy as np

from mda_fast.codec import get_codec
from mda_fast.data import open_source, write_mmidx
from mda_fast.errors import ConfigError
from mda_fast.intervene.generators import GENERATORS
from mda_fast.io import write_json

DEFAULT_KINDS = ("spans", "markup", "table")


def synth_rows(n: int, seq_len: int, codec=None, kinds=DEFAULT_KINDS, seed: int = 0,
               max_gap: int | None = None) -> tuple[np.ndarray, list[str]]:
    """``n`` rows of ``seq_len`` tokens: (int64[n, seq_len], generator name of each row).

    ``max_gap`` (characters between span copies) defaults to a third of the row so that most
    copies of a span land in the same row."""
    codec = get_codec(codec)
    max_gap = max(8, seq_len // 3) if max_gap is None else max_gap
    kinds = list(kinds)
    bad = [k for k in kinds if k not in GENERATORS]
    if bad or not kinds:
        raise ConfigError(f"augment kinds {bad or kinds} are unknown; choose from {', '.join(GENERATORS)}")
    if n < 1 or seq_len < 2:
        raise ConfigError(f"augment needs n >= 1 rows of seq_len >= 2 tokens, got n={n}, seq_len={seq_len}")
    rng = random.Random(seed)
    rows, names = np.zeros((n, seq_len), np.int64), []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        gen = GENERATORS[kind]
        toks: list[int] = []
        while len(toks) < seq_len:
            doc = gen(rng, max_gap) if kind == "spans" else gen(rng, seq_len) if kind == "tiled" else gen(rng)
            toks += codec.encode(doc) + [codec.eod_id]
        rows[i] = toks[:seq_len]
        names.append(kind)
    return rows, names


def write_synthetic(prefix, n: int, seq_len: int, tokenizer=None, kinds=DEFAULT_KINDS, seed: int = 0,
                    max_gap: int | None = None) -> dict:
    """Write ``prefix.bin/.idx`` (+ ``prefix.kinds.json``); returns the metadata written."""
    codec = get_codec(tokenizer)
    rows, names = synth_rows(n, seq_len, codec, kinds, seed, max_gap)
    dtype = np.uint16 if codec.vocab_size <= 65536 else np.int32
    write_mmidx(prefix, list(rows), dtype=dtype)
    meta = {"n": n, "seq_len": seq_len, "kinds": names, "generators": sorted(set(names)), "seed": seed,
            "max_gap": max_gap, "codec": codec.name}
    write_json(f"{prefix}.kinds.json", meta)
    return meta


def load_synthetic(prefix, seq_len: int | None = None) -> np.ndarray:
    """int64[n, L] rows of a synthetic ``.bin/.idx`` file; ConfigError if L != ``seq_len``."""
    src = open_source(str(prefix))
    rows = src.read(np.arange(len(src)))
    if seq_len is not None and rows.shape[1] != seq_len:
        raise ConfigError(f"synthetic rows in {prefix} have {rows.shape[1]} tokens, the training rows {seq_len}")
    return rows
