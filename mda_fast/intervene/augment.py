"""Mechanistic augmentation: seeded synthetic rows with the repetitive structure found enriched
among top-influence rows, tokenized and written as ``.bin/.idx`` rows for ``insert-synthetic``.

Generators (``random.Random -> str``, one document each):

- ``spans``:  a random span (8-32 characters of words/punctuation) repeated 3-12 times at
  varying distances (filler of 0-``max_gap`` characters between copies, drawn log-uniformly so
  near and far repeats both occur; default a third of the row);
- ``markup``: an XML/HTML list whose children repeat the same tag set with varying content;
- ``table``:  a markdown (``| a | b |``) or CSV table with a fixed column structure;
- ``tiled``:  a random printable span tiled along the whole row (not in the default set: the
  demo uses it, the structure its top rows share).

Rows are made by concatenating documents separated by the codec's end-of-document token until
``seq_len`` tokens, then cutting (each row starts at a document start). ``<prefix>.kinds.json``
records the generator of each row's first document.
"""

from __future__ import annotations

import math
import random
import string

import numpy as np

from mda_fast.errors import ConfigError
from mda_fast.intervene.codec import get_codec
from mda_fast.intervene.io import write_json

_WORDS = ("data value name item list node time user type code text page file line size "
          "key id set get run map log row col sum max min new old top end".split())
_TAGS = ("item", "row", "entry", "node", "name", "value", "title", "li", "td", "span", "field", "key")
_PUNCT = "-_.:;/=#@+"


def _word(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return rng.choice(_WORDS)
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 8)))


def _filler(rng: random.Random, n_chars: int) -> str:
    out = []
    while sum(len(w) + 1 for w in out) < n_chars:
        out.append(_word(rng))
    return " ".join(out)[:n_chars]


def gen_spans(rng: random.Random, max_gap: int = 200) -> str:
    """One span repeated 3-12 times with log-uniform gaps in [0, max_gap] characters."""
    span = ""
    target = rng.randint(8, 32)
    while len(span) < target:
        span += _word(rng) + rng.choice(_PUNCT + " ")
    span = span[:target]
    parts = []
    for _ in range(rng.randint(3, 12)):
        gap = int(math.exp(rng.uniform(0, math.log(max_gap + 1)))) - 1
        parts += [_filler(rng, gap), " " if gap else "", span, " "]
    return "".join(parts).strip() + "\n"


def gen_markup(rng: random.Random) -> str:
    """<root> with 3-20 children sharing one tag set: repeated open/close tags."""
    root, child = rng.sample(_TAGS, 2)
    fields = rng.sample(_TAGS, rng.randint(1, 3))
    lines = [f"<{root}>"]
    for i in range(rng.randint(3, 20)):
        inner = "".join(f"<{f}>{_word(rng) if rng.random() < 0.7 else rng.randint(0, 999)}</{f}>" for f in fields)
        lines.append(f'  <{child} id="{i}">{inner}</{child}>')
    lines.append(f"</{root}>")
    return "\n".join(lines) + "\n"


def gen_table(rng: random.Random) -> str:
    """A markdown or CSV table: header + 3-20 rows with the same columns."""
    cols = [_word(rng) for _ in range(rng.randint(2, 5))]
    n = rng.randint(3, 20)
    cell = lambda: _word(rng) if rng.random() < 0.5 else str(rng.randint(0, 9999))  # noqa: E731
    if rng.random() < 0.5:
        out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
        out += ["| " + " | ".join(cell() for _ in cols) + " |" for _ in range(n)]
    else:
        out = [",".join(cols)] + [",".join(cell() for _ in cols) for _ in range(n)]
    return "\n".join(out) + "\n"


def gen_tiled(rng: random.Random, n_chars: int = 256) -> str:
    """A random printable span (6-30 characters) tiled with no gaps to ``n_chars``: the structure of
    the demo's top-influence rows (a row that is one span repeated), generated afresh."""
    span = "".join(rng.choice(string.ascii_letters + string.digits + string.punctuation + " ")
                   for _ in range(rng.randint(6, 30)))
    return (span * (n_chars // len(span) + 1))[:n_chars]


GENERATORS = {"spans": gen_spans, "markup": gen_markup, "table": gen_table, "tiled": gen_tiled}
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
    from mda_fast.data import write_mmidx

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
    from mda_fast.data import open_source

    src = open_source(str(prefix))
    rows = src.read(np.arange(len(src)))
    if seq_len is not None and rows.shape[1] != seq_len:
        raise ConfigError(f"synthetic rows in {prefix} have {rows.shape[1]} tokens, the training rows {seq_len}")
    return rows
