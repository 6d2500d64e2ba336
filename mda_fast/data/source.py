"""RowSource: fixed-length token rows in training order, batched per rank with a resume cursor.

A source holds N rows of L tokens. *Positions* are 0..N-1 inside the source; *row ids* are the
global ids of the rows in the training order (for Pythia: index into the pre-shuffled
``document.bin``), so scores from any window or subset line up. Views (:meth:`RowSource.slice`,
:meth:`RowSource.subset`) map positions onto the base source and never copy token data.
"""

from __future__ import annotations

from typing import Iterator, NamedTuple

import numpy as np
import torch

from mda_fast.errors import ConfigError, DataError


def _owned(arr: np.ndarray, dtype) -> np.ndarray:
    """``arr`` as a fresh writable array of ``dtype`` (copies only when it is a view or differs)."""
    if (dtype is None or arr.dtype == dtype) and arr.flags.owndata and arr.flags.writeable:
        return arr
    return np.array(arr, dtype=dtype if dtype is not None else arr.dtype)


class Batch(NamedTuple):
    row_ids: torch.Tensor  # LongTensor[B] global row ids
    tokens: torch.Tensor  # LongTensor[B, L]


def check_vocab(tokens, vocab_size: int | None, where: str, row_ids=None) -> None:
    """Raise DataError naming the first row/token with an id outside ``[0, vocab_size)``.

    tokens: int array or tensor [B, L]; row_ids: [B] ids used in the message (else row index).
    """
    if vocab_size is None:
        return
    t = tokens.numpy() if isinstance(tokens, torch.Tensor) else np.asarray(tokens)
    if t.size == 0:
        return
    # one reduction: viewed as unsigned, negative ids become huge and fail the same bound
    u = t.view(f"u{t.dtype.itemsize}") if t.dtype.kind == "i" and t.flags.c_contiguous else t
    if u.max() < vocab_size and (u is not t or t.min() >= 0):
        return
    bad = np.argwhere((t >= vocab_size) | (t < 0))[0]
    b = int(bad[0])
    rid = int(np.asarray(row_ids)[b]) if row_ids is not None else b
    tok = int(t[tuple(bad)])
    col = f" position {int(bad[1])}" if t.ndim > 1 else ""
    raise DataError(
        f"{where}: row {rid}{col} has token id {tok}, outside the model vocabulary of {vocab_size}"
    )


def rank_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """[lo, hi) of rank's chunk; same cut as ``np.array_split(np.arange(n), world_size)[rank]``."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} is not in 0..{world_size - 1} (world size {world_size})")
    q, r = divmod(n, world_size)
    lo = rank * q + min(rank, r)
    return lo, lo + q + (1 if rank < r else 0)


def _search(keys: np.ndarray, wanted: np.ndarray, name: str, shown: np.ndarray | None = None) -> np.ndarray:
    """Index in ``keys`` of each of ``wanted`` (first occurrence); DataError for a missing one
    (reported as the matching entry of ``shown``, default ``wanted``)."""
    keys = np.asarray(keys, dtype=np.int64)
    order = np.argsort(keys, kind="stable")
    k = np.clip(np.searchsorted(keys[order], wanted), 0, max(len(keys) - 1, 0))
    found = keys[order][k] == wanted if len(keys) else np.zeros(len(wanted), bool)
    if not found.all():
        miss = (wanted if shown is None else shown)[~found][0]
        raise DataError(f"{name}: row id {int(miss)} is not in this source ({len(keys)} rows)")
    return order[k].astype(np.int64)


class RowSource:
    """Base class. Subclasses implement ``__len__`` and ``_read(positions, dtype) -> [n, L]``.

    ``_read`` may return a view and any integer dtype (``dtype`` is a hint: readers that can
    convert while copying do so); the public readers always return a fresh, writable array.
    Override ``row_ids_at`` when global ids are not ``row_id_offset + position``, and
    ``_read_range`` when contiguous reads have a faster path.
    """

    seq_len: int
    vocab_size: int | None = None
    row_id_offset: int = 0
    name: str = "source"

    def __len__(self) -> int:
        raise NotImplementedError

    # -- row ids -------------------------------------------------------------------------
    def row_ids_at(self, positions: np.ndarray) -> np.ndarray:
        """int64[n] global row ids of the rows at ``positions``."""
        return np.asarray(positions, dtype=np.int64) + self.row_id_offset

    def row_ids(self) -> np.ndarray:
        """int64[N] global row ids, in training order."""
        return self.row_ids_at(np.arange(len(self), dtype=np.int64))

    def position_of(self, row_id: int) -> int:
        """Position of the row with global id ``row_id``; DataError when it is not in the source."""
        return int(self.positions_of(np.array([row_id]))[0])

    def positions_of(self, row_ids) -> np.ndarray:
        """int64[n] positions of global row ids; DataError naming the first id not in the source.

        Ids that are ``row_id_offset + position`` resolve without building the id array (a Pile-sized
        source never materializes it); other sources search their sorted ids once per call.
        """
        ids = np.asarray(row_ids, dtype=np.int64).reshape(-1)
        p = ids - self.row_id_offset
        if ((p >= 0) & (p < len(self))).all() and np.array_equal(self.row_ids_at(p), ids):
            return p
        return _search(self.row_ids(), ids, self.name)

    # -- reading ---------------------------------------------------------------------------
    def _read(self, positions: np.ndarray, dtype=None) -> np.ndarray:
        raise NotImplementedError

    def _read_range(self, lo: int, hi: int, dtype=None) -> np.ndarray:
        return self._read(np.arange(lo, hi, dtype=np.int64), dtype)

    def _check_positions(self, positions: np.ndarray) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        n = len(self)
        if positions.size and (positions.min() < 0 or positions.max() >= n):
            bad = positions[(positions < 0) | (positions >= n)][0]
            raise DataError(f"{self.name}: position {int(bad)} is outside the source's {n} rows")
        return positions

    def read(self, positions, dtype=np.int64) -> np.ndarray:
        """[n, L] rows at ``positions`` (0..N-1) as ``dtype`` (None = storage dtype, e.g. uint16)."""
        return _owned(self._read(self._check_positions(positions), dtype), dtype)

    def read_range(self, lo: int, hi: int, dtype=np.int64) -> np.ndarray:
        """Rows at positions [lo, hi) as ``dtype`` (None = storage dtype)."""
        if not 0 <= lo <= hi <= len(self):
            raise DataError(f"{self.name}: rows [{lo}, {hi}) are outside the source's {len(self)} rows")
        return _owned(self._read_range(lo, hi, dtype), dtype)

    # -- batching --------------------------------------------------------------------------
    def batches(
        self,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        start: int = 0,
        vocab_size: int | None = None,
    ) -> Iterator[Batch]:
        """Batches of rank's contiguous chunk, skipping its first ``start`` rows (resume cursor).

        Tokens are checked against ``vocab_size`` (default ``self.vocab_size``) when known.
        """
        if batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {batch_size}")
        lo, hi = rank_bounds(len(self), rank, world_size)
        if not 0 <= start <= hi - lo:
            raise ConfigError(
                f"resume cursor {start} is outside rank {rank}'s chunk of {hi - lo} rows in {self.name}"
            )
        vocab = self.vocab_size if vocab_size is None else vocab_size
        for a in range(lo + start, hi, batch_size):
            # built in a helper so the suspended generator keeps no reference to the batch
            yield self._batch(a, min(a + batch_size, hi), vocab)

    def _batch(self, a: int, b: int, vocab: int | None) -> Batch:
        ids = self.row_ids_at(np.arange(a, b, dtype=np.int64))
        if vocab is None:
            tokens = self.read_range(a, b, dtype=np.int64)
        else:  # check the narrow storage dtype (uint16: 4x fewer bytes to scan), then widen
            tokens = self.read_range(a, b, dtype=None)
            check_vocab(tokens, vocab, self.name, ids)
            tokens = tokens.astype(np.int64)
        return Batch(torch.from_numpy(ids), torch.from_numpy(tokens))

    def check_tokens(self, vocab_size: int, rows_per_read: int | None = None) -> None:
        """DataError naming the first row and position holding a token id outside ``[0, vocab_size)``
        (negative ids included). Reads every row once in its storage dtype, in pieces of about 16M
        tokens; nothing is read when the storage dtype cannot hold an id that large."""
        n = len(self)
        if n == 0:
            return
        kind = self.read_range(0, 1, dtype=None).dtype
        if kind.kind == "u" and np.iinfo(kind).max < vocab_size:
            return
        step = rows_per_read or max(1, (1 << 24) // max(self.seq_len, 1))
        for lo in range(0, n, step):
            hi = min(lo + step, n)
            check_vocab(self.read_range(lo, hi, dtype=None), vocab_size, self.name,
                        self.row_ids_at(np.arange(lo, hi, dtype=np.int64)))

    def num_batches(self, batch_size: int, rank: int = 0, world_size: int = 1, start: int = 0) -> int:
        lo, hi = rank_bounds(len(self), rank, world_size)
        return -(-max(hi - lo - start, 0) // batch_size)

    # -- views -----------------------------------------------------------------------------
    def slice(self, lo: int, hi: int) -> "RowSource":
        """View of positions [lo, hi) (no copy)."""
        if not 0 <= lo <= hi <= len(self):
            raise ConfigError(f"{self.name}: rows [{lo}, {hi}) are outside the source's {len(self)} rows")
        return SliceView(self, lo, hi)

    def subset(self, positions) -> "RowSource":
        """View of the given positions, in the given order (no copy of token data)."""
        return IndexView(self, self._check_positions(positions))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, rows={len(self)}, seq_len={self.seq_len})"


class SliceView(RowSource):
    """Positions [lo, hi) of a base source; slices of slices collapse onto the base."""

    def __init__(self, base: RowSource, lo: int, hi: int):
        if isinstance(base, SliceView):
            lo, hi, base = base.lo + lo, base.lo + hi, base.base
        self.base, self.lo, self.hi = base, lo, hi
        self.seq_len, self.vocab_size, self.name = base.seq_len, base.vocab_size, base.name

    def __len__(self) -> int:
        return self.hi - self.lo

    def row_ids_at(self, positions):
        return self.base.row_ids_at(np.asarray(positions, dtype=np.int64) + self.lo)

    def positions_of(self, row_ids) -> np.ndarray:
        p = self.base.positions_of(row_ids) - self.lo
        bad = (p < 0) | (p >= len(self))
        if bad.any():
            raise DataError(f"{self.name}: row id {int(np.asarray(row_ids).reshape(-1)[bad][0])} is outside the "
                            f"selected rows [{self.lo}, {self.hi})")
        return p

    def _read(self, positions, dtype=None):
        return self.base._read(positions + self.lo, dtype)

    def _read_range(self, lo, hi, dtype=None):
        return self.base._read_range(self.lo + lo, self.lo + hi, dtype)


class IndexView(RowSource):
    """An arbitrary list of base positions; reads are grouped by the base (runs stay coalesced)."""

    def __init__(self, base: RowSource, positions: np.ndarray):
        if isinstance(base, SliceView):
            positions, base = positions + base.lo, base.base
        elif isinstance(base, IndexView):
            positions, base = base.positions[positions], base.base
        self.base, self.positions = base, np.asarray(positions, dtype=np.int64)
        self.seq_len, self.vocab_size, self.name = base.seq_len, base.vocab_size, base.name

    def __len__(self) -> int:
        return len(self.positions)

    def row_ids_at(self, positions):
        return self.base.row_ids_at(self.positions[positions])

    def positions_of(self, row_ids) -> np.ndarray:
        return _search(self.positions, self.base.positions_of(row_ids), f"{self.name} (selected rows)",
                       shown=np.asarray(row_ids, dtype=np.int64).reshape(-1))

    def _read(self, positions, dtype=None):
        return self.base._read(self.positions[positions], dtype)

    def _read_range(self, lo, hi, dtype=None):
        return self.base._read(self.positions[lo:hi], dtype)


def select_steps(source: RowSource, start_step: int, end_step: int, rows_per_step: int = 1024) -> RowSource:
    """Rows of training steps [start_step, end_step): positions [rps*a, rps*b) (Pythia order)."""
    a, b, rps = int(start_step), int(end_step), int(rows_per_step)
    if rps < 1 or a < 0 or b < a:
        raise ConfigError(f"step window {a}:{b} with {rps} rows per step is not a valid window")
    if rps * b > len(source):
        raise ConfigError(
            f"step window {a}:{b} needs rows [{rps * a}, {rps * b}) but {source.name} has only "
            f"{len(source)} rows ({len(source) // rps} full steps of {rps})"
        )
    return source.slice(rps * a, rps * b)


def parse_steps(text: str) -> tuple[int, int]:
    """``"1000:2000"`` -> (1000, 2000); ConfigError otherwise."""
    try:
        a, b = (int(x) for x in text.split(":"))
    except ValueError:
        raise ConfigError(f"--steps {text!r} is not of the form START:END (e.g. 1000:2000)") from None
    return a, b


class ArraySource(RowSource):
    """Rows held in an in-memory / memmapped array [N, L] (tests, packed text, .npy)."""

    def __init__(self, array: np.ndarray, name: str = "array", row_id_offset: int = 0, vocab_size=None):
        if array.ndim != 2:
            raise DataError(f"{name}: expected a 2-D array of rows [N, L], got shape {array.shape}")
        if not np.issubdtype(array.dtype, np.integer):
            raise DataError(f"{name}: token array has dtype {array.dtype}, expected integers")
        self.array, self.name = array, name
        self.seq_len, self.row_id_offset, self.vocab_size = int(array.shape[1]), int(row_id_offset), vocab_size

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def _read(self, positions, dtype=None):
        return self.array[positions]

    def _read_range(self, lo, hi, dtype=None):
        return self.array[lo:hi]
