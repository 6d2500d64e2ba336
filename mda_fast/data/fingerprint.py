"""Content identity of a window of rows: which rows (their global ids) and what they hold.

    window_fingerprint(select_steps(src, 75, 175, 32))
    # {"rows": 3200, "seq_len": 129, "first_row_id": 2400, "last_row_id": 5599,
    #  "row_ids": <sha1 of the ids>, "sample": <sha1 of 256 rows spread over the window>}

Tokens are read as int64, so the same rows in any format (.bin/.idx, .npy, parquet) or place give
the same fingerprint. Reading every row of a Pile-sized window would take minutes, so only a
sample is read: the first and last row and rows evenly spaced between them (cheap, and any
reshuffled, shifted or re-tokenized data changes it).
"""

from __future__ import annotations

import numpy as np

from mda_fast.digest import array_digest

SAMPLE_ROWS = 256


def sample_positions(n: int, k: int = SAMPLE_ROWS) -> np.ndarray:
    """Positions of ``min(k, n)`` rows evenly spread over ``n``, first and last included."""
    if n <= 0:
        return np.zeros(0, np.int64)
    return np.unique(np.linspace(0, n - 1, num=min(k, n)).round().astype(np.int64))


def window_fingerprint(source, samples: int = SAMPLE_ROWS) -> dict:
    """The identity of ``source``'s rows (see the module doc)."""
    n = len(source)
    ids = source.row_ids()
    pos = sample_positions(n, samples)
    rows = source.read(pos, dtype=np.int64) if n else np.zeros((0, source.seq_len), np.int64)
    return {"rows": int(n), "seq_len": int(source.seq_len),
            "first_row_id": int(ids[0]) if n else None, "last_row_id": int(ids[-1]) if n else None,
            "row_ids": array_digest(np.asarray(ids, np.int64)), "sample": array_digest(rows)}


def sample_digests(source, samples: int = SAMPLE_ROWS) -> dict:
    """{"positions": [...], "digests": [...]}: the digest of each row :func:`window_fingerprint`
    samples (read as int64), so that a part of the window stored elsewhere can be checked row by row
    against the rows a manifest recorded (``attribution.store.parts.verify_sub_window``)."""
    pos = sample_positions(len(source), samples)
    rows = source.read(pos, dtype=np.int64) if len(pos) else np.zeros((0, source.seq_len), np.int64)
    return {"positions": [int(p) for p in pos], "digests": [array_digest(r) for r in rows]}


def describe_window(fp: dict | None, name: str | None = None) -> str:
    """``rows 8..27 (20 rows) of NAME, content 1a2b3c4d5e6f`` for messages."""
    if not isinstance(fp, dict):
        return "an unrecorded window"
    where = f" of {name}" if name else ""
    return (f"rows {fp.get('first_row_id')}..{fp.get('last_row_id')} ({fp.get('rows')} rows){where}, "
            f"content {str(fp.get('sample'))[:12]}")
