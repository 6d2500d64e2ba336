"""Token rows stored in parquet (the published Pythia parquet copy: ``uid, batch_idx, token_ids``).

One or many files (a directory or glob; Pythia's copy has one file per 1000 steps) form one
logical source in natural name order. Rows are decoded one row group at a time (the last two are
cached), so a file is never loaded whole.
"""

from __future__ import annotations

import bisect
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np

from mda_fast.data.source import RowSource
from mda_fast.errors import DataError


def natural_key(path: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def _parquet():
    import pyarrow.parquet as pq  # imported lazily: pyarrow is heavy and only parquet needs it

    return pq


class ParquetSource(RowSource):
    """Rows from the list column ``column`` (default ``token_ids``) of parquet files.

    Row ids come from ``row_id_column`` (default ``uid``) when every file has it, else
    ``row_id_offset + position``. ``extra_column("batch_idx")`` reads another column.
    """

    def __init__(self, paths, column: str = "token_ids", row_id_column: str | None = "uid",
                 row_id_offset: int = 0, vocab_size: int | None = None, seq_len: int | None = None):
        pq = _parquet()
        self._args = ([str(p) for p in paths], column, row_id_column, row_id_offset, vocab_size, seq_len)
        self.paths = sorted((Path(p) for p in paths), key=natural_key)
        if not self.paths:
            raise DataError("no parquet files given")
        self.column, self.vocab_size, self.row_id_offset = column, vocab_size, int(row_id_offset)
        self.name = str(self.paths[0]) if len(self.paths) == 1 else f"{self.paths[0].parent} ({len(self.paths)} parquet files)"
        self._files = []
        self.group_starts = [0]  # global first position of every (file, row group)
        self._groups: list[tuple[int, int]] = []
        self.file_starts: list[int] = []  # global first position of every file
        have_ids = row_id_column is not None
        for k, path in enumerate(self.paths):
            if not path.is_file():
                raise DataError(f"{path}: parquet file not found")
            try:
                pf = pq.ParquetFile(path)
            except Exception as exc:  # pyarrow raises ArrowInvalid / OSError on non-parquet files
                raise DataError(f"{path}: not a readable parquet file ({exc})") from None
            names = pf.schema_arrow.names
            if column not in names:
                raise DataError(f"{path}: no {column!r} column (columns: {', '.join(names)})")
            have_ids = have_ids and row_id_column in names
            self._files.append(pf)
            self.file_starts.append(self.group_starts[-1])
            for g in range(pf.metadata.num_row_groups):
                self._groups.append((k, g))
                self.group_starts.append(self.group_starts[-1] + pf.metadata.row_group(g).num_rows)
        self.row_id_column = row_id_column if have_ids else None
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._id_cache: dict[int, np.ndarray] = {}
        self.seq_len = int(seq_len) if seq_len is not None else (self._group(0).shape[1] if len(self) else 0)

    def __reduce__(self):
        # a worker process reopens the files (open parquet handles cannot travel)
        return (ParquetSource, self._args)

    def __len__(self) -> int:
        return self.group_starts[-1]

    def __getstate__(self):  # ParquetFile handles are reopened by each worker process
        state = {**self.__dict__, "_cache": OrderedDict(), "_files": None}
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        pq = _parquet()
        self._files = [pq.ParquetFile(p) for p in self.paths]

    def _group(self, gi: int) -> np.ndarray:
        """Rows [n_g, L] of global row group ``gi``, storage dtype (cached)."""
        hit = self._cache.get(gi)
        if hit is not None:
            self._cache.move_to_end(gi)
            return hit
        k, g = self._groups[gi]
        path = self.paths[k]
        col = self._files[k].read_row_group(g, columns=[self.column]).column(0).combine_chunks()
        if col.null_count:
            raise DataError(f"{path}: row group {g} has null {self.column!r} entries")
        n = len(col)
        if hasattr(col, "offsets"):  # list<> / large_list<>: every row must have the same length
            lens = np.diff(col.offsets.to_numpy())
        else:  # fixed_size_list<>
            lens = np.full(n, col.type.list_size)
        L = getattr(self, "seq_len", int(lens[0]) if n else 0)
        if (lens != L).any():
            bad = int(np.flatnonzero(lens != L)[0])
            raise DataError(
                f"{path}: row {bad} of row group {g} has {int(lens[bad])} tokens in {self.column!r}, "
                f"expected fixed-length rows of {L}"
            )
        values = col.flatten().to_numpy(zero_copy_only=False)
        if not np.issubdtype(values.dtype, np.integer):
            raise DataError(f"{path}: column {self.column!r} holds {values.dtype}, expected integer token ids")
        rows = values.reshape(n, L)
        self._cache[gi] = rows
        while len(self._cache) > 2:
            self._cache.popitem(last=False)
        return rows

    def _read(self, positions, dtype=None):
        out = np.empty((len(positions), self.seq_len), dtype if dtype is not None else self._group(0).dtype)
        i = 0
        while i < len(positions):  # consecutive positions inside one row group -> one slice
            gi = bisect.bisect_right(self.group_starts, int(positions[i])) - 1
            g0, g1 = self.group_starts[gi], self.group_starts[gi + 1]
            j = i + 1
            while j < len(positions) and g0 <= positions[j] < g1:
                j += 1
            out[i:j] = self._group(gi)[positions[i:j] - g0]
            i = j
        return out

    def _read_range(self, lo, hi, dtype=None):
        return self._read(np.arange(lo, hi, dtype=np.int64), dtype)

    def extra_column(self, name: str) -> np.ndarray:
        """All values of a scalar column (e.g. ``batch_idx``) over every file, in source order."""
        parts = []
        for path, pf in zip(self.paths, self._files):
            if name not in pf.schema_arrow.names:
                raise DataError(f"{path}: no {name!r} column")
            parts.append(pf.read(columns=[name]).column(0).to_numpy())
        return np.concatenate(parts)

    def _file_ids(self, k: int) -> np.ndarray:
        ids = self._id_cache.get(k)
        if ids is None:
            ids = self._files[k].read(columns=[self.row_id_column]).column(0).to_numpy().astype(np.int64)
            self._id_cache = {k: ids}  # one file's ids at a time (Pythia: ~1M ids per file)
        return ids

    def row_ids_at(self, positions):
        positions = np.asarray(positions, dtype=np.int64)
        if self.row_id_column is None:
            return positions + self.row_id_offset
        out = np.empty(len(positions), np.int64)
        file_starts = self.file_starts
        fidx = np.searchsorted(file_starts, positions, side="right") - 1
        for k in np.unique(fidx).tolist():
            m = fidx == k
            out[m] = self._file_ids(k)[positions[m] - file_starts[k]]
        return out

    def positions_of(self, row_ids) -> np.ndarray:
        if self.row_id_column is None:
            return super().positions_of(row_ids)
        ids = np.asarray(row_ids, dtype=np.int64).reshape(-1)
        out = np.full(ids.size, -1, dtype=np.int64)
        for k in range(len(self.paths)):          # one file's ids in memory at a time
            todo = np.flatnonzero(out < 0)
            if todo.size == 0:
                break
            file_ids = self._file_ids(k)
            hit = np.isin(ids[todo], file_ids)
            if hit.any():
                order = np.argsort(file_ids, kind="stable")
                j = order[np.searchsorted(file_ids[order], ids[todo][hit])]
                out[todo[hit]] = self.file_starts[k] + j
        if (out < 0).any():
            raise DataError(f"{self.name}: row id {int(ids[out < 0][0])} is not in this source ({len(self)} rows)")
        return out
