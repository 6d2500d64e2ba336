"""The demo corpus: text already on every machine + generated structured documents, packed like Pythia.

Documents (each labelled with its kind, names as in ``mda_fast.intervene.kinds.KINDS``):
- ``code``:  the Python standard library's ``.py`` sources (no tests, no site-packages), cut into
  pieces of at most ``max_doc_bytes``;
- ``prose``: the ``pydoc_data`` documentation topics and the Python LICENSE text;
- ``markup``, ``latex``, ``records``, ``repeated``: generated (:mod:`mda_fast.intervene.generators`).
``mix`` gives each kind's share of the tokens. Documents are shuffled with ``seed``, joined with
EOD (id 256) after every document like GPT-NeoX, and cut into rows of ``seq_len`` tokens in
training order (a row may start mid-document). Output, written atomically:

- ``<prefix>.bin`` / ``<prefix>.idx``  MMIDIDX, uint16, one sequence per row;
- ``<prefix>.kinds.json``  kind names, each row's dominant kind (most tokens), settings;
- ``<prefix>.kindfrac.npy`` float32[N, K]: share of each kind's tokens in each row.

Deterministic from ``seed`` for a given Python installation (the stdlib text is part of the input;
its version is recorded in the sidecar).
"""

from __future__ import annotations

import functools
import io
import json
import os
import random
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mda_fast.codec import EOD_ID, encode_bytes
from mda_fast.data import write_mmidx
from mda_fast.errors import ConfigError, DataError
from mda_fast.intervene.generators import _PRINTABLE, GENERATORS
from mda_fast.io import write_bytes, write_json

_PRINTABLE_BYTES = _PRINTABLE.encode("ascii")
KINDS = ("code", "prose", "markup", "latex", "records", "repeated")
DEFAULT_MIX = {"code": 0.50, "prose": 0.10, "markup": 0.10, "latex": 0.075, "records": 0.075,
               "repeated": 0.15}


@dataclass
class CorpusInfo:
    prefix: Path
    n_rows: int
    seq_len: int
    kinds: tuple[str, ...]
    row_kind: np.ndarray          # int64[N] index into kinds
    tokens_by_kind: dict


def _stdlib_code_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__", "lib2to3"}
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in skip]     # prune: never walk site-packages
        files += [Path(dirpath) / f for f in filenames if f.endswith(".py")]
    return sorted(files)


def _pieces(data: bytes, max_bytes: int) -> list[bytes]:
    return [data[i:i + max_bytes] for i in range(0, len(data), max_bytes) if data[i:i + max_bytes].strip()]


@functools.lru_cache(maxsize=2)
def natural_documents(max_doc_bytes: int = 8192) -> dict[str, tuple[bytes, ...]]:
    """The on-machine texts, cut into documents: {"code": [...], "prose": [...]}."""
    code = []
    for p in _stdlib_code_files():
        try:
            code.extend(_pieces(p.read_bytes(), max_doc_bytes))
        except OSError:
            continue
    prose = []
    try:
        from pydoc_data.topics import topics
        for name in sorted(topics):
            prose.extend(_pieces(topics[name].encode("utf-8"), max_doc_bytes))
    except ImportError:
        pass
    lic = Path(sysconfig.get_paths()["stdlib"]) / "LICENSE.txt"
    if lic.is_file():
        prose.extend(_pieces(lic.read_bytes(), max_doc_bytes))
    if not code or not prose:
        raise DataError(f"no Python standard-library text found under {sysconfig.get_paths()['stdlib']} "
                        "to build the demo corpus.")
    return {"code": tuple(code), "prose": tuple(prose)}


def _check_mix(mix: dict) -> dict:
    unknown = sorted(set(mix) - set(KINDS))
    if unknown:
        raise ConfigError(f"corpus mix has unknown kinds {unknown}; known: {list(KINDS)}.")
    if any(v < 0 for v in mix.values()) or sum(mix.values()) <= 0:
        raise ConfigError(f"corpus mix shares must be >= 0 with a positive sum, got {mix}.")
    s = sum(mix.values())
    return {k: mix.get(k, 0.0) / s for k in KINDS}


def make_documents(n_tokens: int, seed: int, mix: dict | None = None,
                   max_doc_bytes: int = 8192) -> list[tuple[int, np.ndarray]]:
    """About ``n_tokens`` tokens of (kind index, uint16 tokens) documents, shuffled with ``seed``."""
    shares = _check_mix(mix or DEFAULT_MIX)
    rng = random.Random(seed)
    natural = natural_documents(max_doc_bytes)
    docs: list[tuple[int, np.ndarray]] = []
    for k, kind in enumerate(KINDS):
        budget = int(shares[kind] * n_tokens)
        got = 0
        if kind in natural:
            pool = list(natural[kind])
            rng.shuffle(pool)
            i = 0
            while got < budget:                       # cycle through the pool if it is too small
                d = encode_bytes(pool[i % len(pool)])
                docs.append((k, d))
                got += len(d) + 1
                i += 1
        else:
            gen = GENERATORS[kind]
            while got < budget:
                d = encode_bytes(gen(rng))
                docs.append((k, d))
                got += len(d) + 1
    rng.shuffle(docs)
    return docs


def pack_rows(docs: list[tuple[int, np.ndarray]], n_rows: int, seq_len: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """Join documents with EOD after each and cut into rows.

    Returns tokens uint16[n_rows, seq_len] and the kind of every token int8[n_rows, seq_len]
    (an EOD takes the kind of the document it ends).
    """
    need = n_rows * seq_len
    toks, kinds, total = [], [], 0
    eod = np.array([EOD_ID], dtype=np.uint16)
    for k, d in docs:
        toks += [d, eod]
        kinds.append(np.full(len(d) + 1, k, dtype=np.int8))
        total += len(d) + 1
        if total >= need:
            break
    if total < need:
        raise DataError(f"demo corpus documents hold {total} tokens, fewer than the {need} needed "
                        f"for {n_rows} rows of {seq_len}.")
    stream = np.concatenate(toks)[:need].reshape(n_rows, seq_len)
    kstream = np.concatenate(kinds)[:need].reshape(n_rows, seq_len)
    return stream, kstream


def overwrite_repeated_spans(rows: np.ndarray, kinds: np.ndarray, share: float, seed: int,
                             span: tuple[int, int] = (6, 30), gap: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Overwrite ``share`` of the rows, in place, with one random printable span (length drawn from
    ``span``, inclusive) repeated from the row's first token to its end, with ``gap`` (inclusive
    range) tokens of the original text left between copies.

    The default, a span tiled with no gaps, is the driving structure that forms the demo's
    induction head from a minority of rows (README, "the induction head"); spans with gaps of
    0-12 tokens did not form one at a 30% share in 1,200-2,500 steps. Returns the rows overwritten.
    """
    if not 0.0 <= share <= 1.0:
        raise ConfigError(f"demo repeat_rows must be in [0, 1], got {share}.")
    if not (1 <= span[0] <= span[1] and 0 <= gap[0] <= gap[1]):
        raise ConfigError(f"demo repeated span lengths {span} and gaps {gap} must be ordered ranges, "
                          "span >= 1, gap >= 0.")
    rng = np.random.default_rng(seed + 7919)
    n, length = rows.shape
    chosen = np.sort(rng.choice(n, size=int(round(share * n)), replace=False))
    printable = np.frombuffer(_PRINTABLE_BYTES, dtype=np.uint8).astype(np.uint16)
    repeated = KINDS.index("repeated")
    for r in chosen:
        piece = rng.choice(printable, size=int(rng.integers(span[0], span[1] + 1)))
        pos = 0
        while pos < length:
            end = min(length, pos + len(piece))
            rows[r, pos:end] = piece[:end - pos]
            kinds[r, pos:end] = repeated
            pos = end + int(rng.integers(gap[0], gap[1] + 1))
    return chosen


STRATUM_KEYS = {"name": str, "share": float, "span": tuple, "corrupt": float, "cover": float}


def check_strata(strata) -> list[dict]:
    """Normalized driving strata: each ``{"name", "share", "span": (lo, hi), "corrupt", "cover"}``.

    A stratum is a set of rows of the one surface kind the demo drives its head with (a random
    printable span tiled along the row) whose *teaching strength* is planted: ``span`` the span
    length range; ``corrupt`` the probability that a token of the second and later copies is
    replaced by a random printable byte (copying is then only sometimes right); ``cover`` the share
    of the row, from its first token, that is tiled (the rest keeps its text).
    """
    out, names = [], set()
    for i, st in enumerate(strata or ()):
        if not isinstance(st, dict) or set(st) - set(STRATUM_KEYS) or "share" not in st:
            raise ConfigError(f"demo stratum {i} must be a mapping with 'share' and optional keys "
                              f"{sorted(STRATUM_KEYS)}, got {st!r}.")
        d = {"name": str(st.get("name", f"s{i}")), "share": float(st["share"]),
             "span": tuple(int(x) for x in st.get("span", (6, 30))), "corrupt": float(st.get("corrupt", 0.0)),
             "cover": float(st.get("cover", 1.0))}
        lo, hi = d["span"]
        if not (0 < d["share"] <= 1 and 1 <= lo <= hi and 0 <= d["corrupt"] <= 1 and 0 < d["cover"] <= 1):
            raise ConfigError(f"demo stratum {d['name']!r}: need 0 < share <= 1, 1 <= span lo <= hi, "
                              f"0 <= corrupt <= 1, 0 < cover <= 1; got {d}.")
        if d["name"] in names:
            raise ConfigError(f"demo stratum name {d['name']!r} appears twice.")
        names.add(d["name"])
        out.append(d)
    if sum(d["share"] for d in out) > 1 + 1e-9:
        raise ConfigError(f"demo strata shares sum to {sum(d['share'] for d in out):.3f} > 1.")
    return out


def overwrite_strata(rows: np.ndarray, kinds: np.ndarray, strata: list[dict], seed: int) -> np.ndarray:
    """Overwrite disjoint row sets, one per stratum (:func:`check_strata`), in place; returns the
    stratum index of every row, int64[N] (-1: not a driving row)."""
    rng = np.random.default_rng([seed, 0x57A7])
    n, length = rows.shape
    counts = [int(round(st["share"] * n)) for st in strata]
    perm = rng.permutation(n)
    stratum = np.full(n, -1, dtype=np.int64)
    printable = np.frombuffer(_PRINTABLE_BYTES, dtype=np.uint8).astype(np.uint16)
    repeated = KINDS.index("repeated")
    start = 0
    for s, (st, c) in enumerate(zip(strata, counts)):
        chosen = np.sort(perm[start:start + c])
        start += c
        stratum[chosen] = s
        for r in chosen:
            span = int(rng.integers(st["span"][0], st["span"][1] + 1))
            piece = rng.choice(printable, size=span)
            end = max(span, int(round(st["cover"] * length)))
            tiled = np.resize(piece, end)[:length]
            noisy = rng.random(tiled.size) < st["corrupt"]
            noisy[:span] = False                       # the first copy is the pattern itself
            tiled[noisy] = rng.choice(printable, size=int(noisy.sum()))
            rows[r, :tiled.size] = tiled
            kinds[r, :tiled.size] = repeated
    return stratum


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def build_corpus(prefix: str | Path, n_rows: int, seq_len: int = 129, seed: int = 0,
                 mix: dict | None = None, max_doc_bytes: int = 8192, repeat_rows: float = 0.0,
                 repeat_span: tuple[int, int] = (6, 30), repeat_gap: tuple[int, int] = (0, 0),
                 strata=()) -> CorpusInfo:
    """Build and write the demo corpus at ``prefix`` (see module doc); returns its :class:`CorpusInfo`.

    With ``strata`` (:func:`check_strata`) the driving rows are those strata, recorded per row in the
    sidecar's ``row_stratum``, and ``repeat_rows`` / ``repeat_span`` / ``repeat_gap`` are unused."""
    if n_rows <= 0 or seq_len < 2:
        raise ConfigError(f"demo corpus needs n_rows > 0 and seq_len >= 2, got {n_rows}, {seq_len}.")
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    # every kind meets its budget (its last document overshoots), so the total covers the rows
    docs = make_documents(n_rows * seq_len + len(KINDS), seed, mix, max_doc_bytes)
    rows, kinds = pack_rows(docs, n_rows, seq_len)
    strata = check_strata(strata)
    if strata:
        row_stratum = overwrite_strata(rows, kinds, strata, seed)
    else:
        row_stratum = np.full(n_rows, -1, dtype=np.int64)
        row_stratum[overwrite_repeated_spans(rows, kinds, repeat_rows, seed, tuple(repeat_span),
                                             tuple(repeat_gap))] = 0
        strata = [{"name": "tiled", "share": repeat_rows, "span": tuple(repeat_span), "corrupt": 0.0, "cover": 1.0}]
    frac = np.stack([(kinds == k).mean(axis=1) for k in range(len(KINDS))], axis=1).astype(np.float32)
    row_kind = frac.argmax(axis=1)
    tokens_by_kind = {kind: int((kinds == k).sum()) for k, kind in enumerate(KINDS)}
    write_mmidx(prefix, iter(rows), dtype=np.uint16)
    write_bytes(Path(str(prefix) + ".kindfrac.npy"), _npy_bytes(frac))
    meta = {"kinds": list(KINDS), "row_kind": row_kind.tolist(), "seed": seed, "seq_len": seq_len,
            "n_rows": n_rows, "eod_id": EOD_ID, "repeat_rows": repeat_rows,
            "repeat_span": list(repeat_span), "repeat_gap": list(repeat_gap), "mix": _check_mix(mix or DEFAULT_MIX),
            "tokens_by_kind": tokens_by_kind, "python": sys.version.split()[0],
            "strata": [dict(st, span=list(st["span"])) for st in strata], "row_stratum": row_stratum.tolist()}
    write_json(Path(str(prefix) + ".kinds.json"), meta)
    return CorpusInfo(prefix, n_rows, seq_len, KINDS, row_kind, tokens_by_kind)


def _sidecar(prefix: str | Path, key: str) -> dict:
    """The corpus's ``.kinds.json``, which must record ``key``."""
    p = Path(str(prefix) + ".kinds.json")
    try:
        meta = json.loads(p.read_text())
    except FileNotFoundError:
        raise DataError(f"{p} does not exist; build the corpus with mda_fast.demo.corpus.build_corpus.")
    if key not in meta:
        raise DataError(f"{p} records no {key} (written by an older mda-fast); rebuild the corpus.")
    return meta


def load_row_strata(prefix: str | Path) -> tuple[list[dict], np.ndarray]:
    """(driving strata, stratum index of every row int64[N], -1 = not driving) of a demo corpus."""
    meta = _sidecar(prefix, "row_stratum")
    return meta["strata"], np.asarray(meta["row_stratum"], dtype=np.int64)


def load_row_kinds(prefix: str | Path) -> tuple[list[str], np.ndarray]:
    """(kind names, dominant kind index int64[N]) of a corpus written by :func:`build_corpus`."""
    meta = _sidecar(prefix, "row_kind")
    return meta["kinds"], np.asarray(meta["row_kind"], dtype=np.int64)
