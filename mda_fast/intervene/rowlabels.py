"""What is known about each window row besides its scores: labelings (kind, stratum) and features.

Controls that a simpler method would also pass need them:

- a **kind-matched** random control draws as many rows as the top set, at random, from the same
  kinds in the same proportions (``plans``: ``kind-random-delete`` / ``kind-random-duplicate``), so
  a top-k effect beyond it is an effect of the *ranking*, not of the row kind;
- a **feature baseline** ranks rows by a feature a user could compute without MDA
  (``column=feature:<name>`` in a plan spec), here :func:`copy_share`, the share of a row's tokens
  that copying from the previous occurrence of the preceding token predicts (what an induction
  head does), and ``repeat_cover`` (:func:`mda_fast.intervene.kinds.repeat_coverage`).

Kinds come from the corpus's own labels when it has them (``<prefix>.kinds.json`` of the demo
corpus: each row's dominant kind), else from the rule-based detector (:mod:`.kinds`, first
detected kind in :data:`~mda_fast.intervene.kinds.KINDS` order, ``other`` when none).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mda_fast.codec import codec_for_vocab
from mda_fast.errors import ConfigError
from mda_fast.intervene.analyze import ALL_KINDS, default_min_len, label_rows
from mda_fast.intervene.kinds import repeat_coverage


@dataclass(frozen=True)
class Labeling:
    """One categorical label per window row: ``names[index[i]]`` is row ``i``'s label."""

    names: tuple[str, ...]
    index: np.ndarray            # int64[N]; -1 = unlabelled

    def mask(self, name: str) -> np.ndarray:
        if name not in self.names:
            raise ConfigError(f"label {name!r} is unknown (labels: {', '.join(self.names)})")
        return self.index == self.names.index(name)


@dataclass(frozen=True)
class RowLabels:
    """Labelings and features of the window's rows ``row_ids[N]`` (window order)."""

    row_ids: np.ndarray                                   # int64[N]
    labelings: dict = field(default_factory=dict)         # name -> Labeling ("kind", "stratum")
    features: dict = field(default_factory=dict)          # name -> float64[N]
    kinds_from: str = ""

    def labeling(self, name: str) -> Labeling:
        if name not in self.labelings:
            raise ConfigError(f"no {name!r} labels for the window's rows (have: {', '.join(self.labelings) or 'none'})")
        return self.labelings[name]

    def feature(self, name: str) -> np.ndarray:
        if name not in self.features:
            raise ConfigError(f"feature {name!r} is unknown (features: {', '.join(self.features) or 'none'})")
        return self.features[name]

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """Positions of row ids in the window (every id must be a window row)."""
        return np.asarray(ids, dtype=np.int64) - int(self.row_ids[0])


def copy_share(rows: np.ndarray, chunk_bytes: int = 1 << 26) -> np.ndarray:
    """float64[N]: share of positions t >= 2 of each row [N, L] whose token equals the token that
    followed the most recent earlier occurrence of token t-1 (rows where copying predicts the next
    token; random text scores near 1/vocabulary, a tiled span near 1). O(L^2) per row, in chunks
    of rows holding at most ``chunk_bytes`` of comparisons."""
    t = np.asarray(rows, dtype=np.int64)
    n, length = t.shape
    if length < 3:
        return np.zeros(n)
    step = max(1, chunk_bytes // (length * length))
    if n > step:
        return np.concatenate([copy_share(t[i:i + step], chunk_bytes) for i in range(0, n, step)])
    prev = t[:, :-1]                                                     # [N, L-1] token at i
    same = prev[:, :, None] == prev[:, None, :]                          # [N, i, j]
    same &= np.tri(length - 1, k=-1, dtype=bool)[None]                   # j < i
    has = same.any(axis=2)
    last = (length - 2) - np.argmax(same[:, :, ::-1], axis=2)            # most recent j < i
    hit = has & (np.take_along_axis(t, last + 1, axis=1) == t[:, 1:])    # predicted t[j+1] == t[i+1]
    return hit[:, 1:].mean(axis=1)


def repeat_cover(rows: np.ndarray, min_len: int = 12) -> np.ndarray:
    return np.asarray([repeat_coverage(r, min_len) for r in np.asarray(rows)], dtype=np.float64)


FEATURES = {"copy_share": copy_share, "repeat_cover": repeat_cover}


def _corpus_labels(prefix: Path, row_ids: np.ndarray) -> dict:
    """Labelings from a demo corpus sidecar (``kind``; ``stratum`` when it records strata)."""
    meta = json.loads(Path(str(prefix) + ".kinds.json").read_text())
    out = {"kind": Labeling(tuple(meta["kinds"]), np.asarray(meta["row_kind"], dtype=np.int64)[row_ids])}
    if "row_stratum" in meta:
        names = tuple(s["name"] for s in meta["strata"])
        out["stratum"] = Labeling(names, np.asarray(meta["row_stratum"], dtype=np.int64)[row_ids])
    return out


def _detected_kinds(rows: np.ndarray, vocab_size: int | None) -> Labeling:
    codec = codec_for_vocab(vocab_size)
    labels, _ = label_rows(rows, codec, default_min_len(codec))
    first = [next((k for k in ALL_KINDS if k in s), "other") for s in labels]
    return Labeling(tuple(ALL_KINDS), np.asarray([ALL_KINDS.index(k) for k in first], dtype=np.int64))


def window_labels(source, window: tuple[int, int], rows_per_step: int, vocab_size: int | None = None,
                  features=tuple(FEATURES)) -> RowLabels:
    """Labels and features of every row of ``window`` in ``source`` (a RowSource): the corpus's own
    labels when ``<source prefix>.kinds.json`` exists, else the kind detector."""
    a, b = window
    ids = np.arange(rows_per_step * a, rows_per_step * b, dtype=np.int64)
    rows = np.asarray(source.read(ids))                                  # [N, L]
    prefix = getattr(source, "prefix", None)
    if prefix is not None and Path(str(prefix) + ".kinds.json").is_file():
        labelings, kinds_from = _corpus_labels(Path(prefix), ids), "corpus labels"
    else:
        labelings, kinds_from = {"kind": _detected_kinds(rows, vocab_size)}, "kind detector"
    feats = {name: FEATURES[name](rows) for name in features}
    return RowLabels(ids, labelings, feats, kinds_from)
