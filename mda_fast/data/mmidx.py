"""GPT-NeoX / Megatron MMIDIDX ``.bin/.idx`` files: validated streaming reader and atomic writer.

``.idx`` layout (little-endian, no padding)::

    0   magic b"MMIDIDX\\x00\\x00"        17  dtype code uint8           34       sizes int32[N]
    9   version uint64 = 1               18  N sequences uint64         34+4N    pointers int64[N]
                                         26  D documents uint64         34+12N   doc_idx int64[D]

The ``.bin`` has no header; row i is ``sizes[i]`` tokens at byte ``pointers[i]``. The published
Pythia copy is split into pieces ``document-00000-of-00020.bin`` .. ``document-00020-of-00020.bin``
("of-N" is the last index) next to one ``document.idx``; :class:`LogicalFile` reads them as one
file in place. Nothing is loaded whole: the index and every piece are memory-mapped.
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path
from typing import Iterable

import numpy as np

from mda_fast.data.pieces import LogicalFile, find_bin_files
from mda_fast.data.source import RowSource
from mda_fast.errors import DataError

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
HEADER = struct.Struct("<9sQBQQ")  # magic, version, dtype code, N, D -> 34 bytes
# GPT-NeoX / Pythia codes (Megatron-LM core swaps 6 and 7).
DTYPE_CODES = {
    1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64,
    6: np.float32, 7: np.float64, 8: np.uint16,
}
CODE_OF_DTYPE = {np.dtype(v): k for k, v in DTYPE_CODES.items()}
# Indices larger than this are validated on demand (per read) instead of fully at open time.
FULL_CHECK_MAX_ROWS = 20_000_000


def split_prefix(spec: str | os.PathLike) -> Path:
    """``x.idx`` / ``x.bin`` / ``x-00000-of-00020.bin`` / ``x`` -> prefix ``x``."""
    p = str(spec)
    if p.endswith(".idx") or p.endswith(".bin"):
        p = p[:-4]
    return Path(re.sub(r"-\d+-of-\d+$", "", p))


class IndexFile:
    """Parsed and validated ``.idx``: ``sizes`` int32[N] and ``pointers`` int64[N] are memmaps."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"{self.path}: index file not found")
        file_size = self.path.stat().st_size
        if file_size < HEADER.size:
            raise DataError(f"{self.path}: {file_size} bytes is too short for an MMIDIDX header ({HEADER.size} bytes)")
        with open(self.path, "rb") as f:
            magic, version, code, n, d = HEADER.unpack(f.read(HEADER.size))
        if magic != MAGIC:
            raise DataError(f"{self.path}: not an MMIDIDX index (magic {magic!r}, expected {MAGIC!r})")
        if version != VERSION:
            raise DataError(f"{self.path}: unsupported MMIDIDX version {version} (only version 1 is known)")
        if code not in DTYPE_CODES:
            raise DataError(f"{self.path}: unknown dtype code {code} (known: {sorted(DTYPE_CODES)}, 8 = uint16)")
        need = HEADER.size + 12 * n + 8 * d
        if file_size < need:
            raise DataError(
                f"{self.path}: truncated index: {n} sequences and {d} documents need {need} bytes, file has {file_size}"
            )
        self.dtype = np.dtype(DTYPE_CODES[code])
        self.dtype_code, self.n, self.n_docs = code, n, d
        self._map_arrays()

    def _map_arrays(self) -> None:
        n, d, off = self.n, self.n_docs, HEADER.size
        self.sizes = np.memmap(self.path, np.int32, "r", off, (n,)) if n else np.zeros(0, np.int32)
        self.pointers = np.memmap(self.path, np.int64, "r", off + 4 * n, (n,)) if n else np.zeros(0, np.int64)
        self.doc_idx = np.memmap(self.path, np.int64, "r", off + 12 * n, (d,)) if d else np.zeros(0, np.int64)

    def __getstate__(self):  # pickling a memmap would copy the whole index: reopen it instead
        return {k: v for k, v in self.__dict__.items() if k not in ("sizes", "pointers", "doc_idx")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._map_arrays()

    def end_byte(self) -> int:
        """Byte just past the last row in the .bin."""
        if self.n == 0:
            return 0
        return int(self.pointers[-1]) + int(self.sizes[-1]) * self.dtype.itemsize

    def check_rows(self, lo: int, hi: int) -> None:
        """Pointers of rows [lo, hi) are cumulative sizes * itemsize (first pointer 0), sizes >= 0."""
        if hi <= lo:
            return
        sizes = np.asarray(self.sizes[lo:hi], dtype=np.int64)
        ptr = np.asarray(self.pointers[lo:hi])
        if (sizes < 0).any():
            i = lo + int(np.flatnonzero(sizes < 0)[0])
            raise DataError(f"{self.path}: row {i} has negative size {int(self.sizes[i])}")
        if lo == 0 and ptr[0] != 0:
            raise DataError(f"{self.path}: first pointer is {int(ptr[0])}, expected 0")
        expect = ptr[:-1] + sizes[:-1] * self.dtype.itemsize
        bad = np.flatnonzero(ptr[1:] != expect)
        if len(bad):
            i = lo + int(bad[0]) + 1
            raise DataError(
                f"{self.path}: pointer of row {i} is {int(self.pointers[i])}, expected {int(expect[bad[0]])} "
                f"(previous pointer + size * {self.dtype.itemsize})"
            )

    def check_all(self, chunk: int = 4_000_000) -> None:
        for lo in range(0, self.n, chunk):
            self.check_rows(max(lo - 1, 0), min(lo + chunk, self.n))


class MMIdxSource(RowSource):
    """Rows of a ``.bin/.idx`` pair (or split pieces), streamed from memory maps.

    Contiguous positions are coalesced into one byte range per piece and converted to the
    requested dtype in a single copy. Fixed-length rows are required for :meth:`read`/batches;
    :meth:`row_tokens` returns one row of any length (document-level indices).
    """

    def __init__(self, spec, seq_len: int | None = None, vocab_size: int | None = None,
                 row_id_offset: int = 0, full_check: bool | None = None):
        prefix = split_prefix(spec)
        self.prefix, self.name = prefix, str(prefix)
        self.index = IndexFile(prefix.with_name(prefix.name + ".idx"))
        self.file = LogicalFile(find_bin_files(prefix))
        self.dtype = self.index.dtype
        self.vocab_size, self.row_id_offset = vocab_size, int(row_id_offset)
        idx = self.index
        if full_check if full_check is not None else idx.n <= FULL_CHECK_MAX_ROWS:
            idx.check_all()
            self._checked = True
        else:  # first and last rows now; rows are checked as they are read
            idx.check_rows(0, min(idx.n, 2))
            idx.check_rows(max(idx.n - 2, 0), idx.n)
            self._checked = False
        if idx.end_byte() > self.file.size:
            raise DataError(
                f"{self.file.describe()}: truncated .bin: {idx.path.name} needs {idx.end_byte()} bytes, "
                f"found {self.file.size}"
            )
        first = int(idx.sizes[0]) if idx.n else (seq_len or 0)
        self.seq_len = int(seq_len) if seq_len is not None else first
        # all rows seq_len long (known only after a full check): byte offsets need no index lookup
        self.fixed = self._checked and bool((np.asarray(idx.sizes) == self.seq_len).all())

    def __reduce__(self):
        # a worker process reopens the files (memory maps never travel as copies of their rows)
        return (MMIdxSource, (str(self.prefix), self.seq_len, self.vocab_size, self.row_id_offset, self._checked))

    def __len__(self) -> int:
        return self.index.n

    def row_tokens(self, position: int) -> np.ndarray:
        """All ``sizes[position]`` tokens of one row (any length), storage dtype."""
        i = int(position)
        if not 0 <= i < len(self):
            raise DataError(f"{self.name}: position {i} is outside the source's {len(self)} rows")
        size, ptr = int(self.index.sizes[i]), int(self.index.pointers[i])
        out = np.empty(size, self.dtype)
        self.file.copy_into(out, ptr)
        return out

    def _row_bytes(self, lo: int, hi: int) -> int:
        """Byte offset of row lo, validating rows [lo, hi) when the index was not fully checked."""
        idx = self.index
        if not self._checked:
            idx.check_rows(max(lo - 1, 0), hi)
        sizes = np.asarray(idx.sizes[lo:hi])
        if (sizes != self.seq_len).any():
            i = lo + int(np.flatnonzero(sizes != self.seq_len)[0])
            raise DataError(
                f"{self.name}: row {i} has {int(idx.sizes[i])} tokens, not the fixed row length {self.seq_len}; "
                "variable-length (document) indices must be packed first (mda data pack)"
            )
        return int(idx.pointers[lo])

    def _read_range(self, lo, hi, dtype=None):
        if hi <= lo:
            return np.empty((0, self.seq_len), dtype if dtype is not None else self.dtype)
        rows = self.file.read(self._start_byte(lo, hi), (hi - lo) * self.seq_len, self.dtype, dtype)
        rows.shape = (hi - lo, self.seq_len)  # in place: stays an owner, so callers need no copy
        return rows

    def _start_byte(self, lo: int, hi: int) -> int:
        if self.fixed:  # fully checked, all rows seq_len: offsets follow from the row number alone
            return lo * self.seq_len * self.dtype.itemsize
        return self._row_bytes(lo, hi)

    def _fill(self, out: np.ndarray, lo: int, hi: int) -> None:
        """Copy rows [lo, hi) into ``out`` [hi-lo, L] (converting dtype while copying)."""
        if hi > lo:
            self.file.copy_into(out.reshape(-1), self._start_byte(lo, hi), self.dtype)

    def _read(self, positions, dtype=None):
        if len(positions) and int(positions[-1]) - int(positions[0]) == len(positions) - 1 \
                and (len(positions) < 2 or (np.diff(positions) == 1).all()):
            return self._read_range(int(positions[0]), int(positions[-1]) + 1, dtype)
        out = np.empty((len(positions), self.seq_len), dtype if dtype is not None else self.dtype)
        if len(positions) == 0:
            return out
        # runs of consecutive positions -> one coalesced copy each
        breaks = np.flatnonzero(np.diff(positions) != 1) + 1
        starts = np.concatenate(([0], breaks))
        ends = np.concatenate((breaks, [len(positions)]))
        for s, e in zip(starts.tolist(), ends.tolist()):
            p = int(positions[s])
            self._fill(out[s:e], p, p + (e - s))
        return out


def write_mmidx(prefix, rows: Iterable[np.ndarray], dtype=np.uint16, progress=None) -> int:
    """Write rows (1-D int arrays, any lengths) to ``prefix.bin`` + ``prefix.idx``; returns N.

    Both files are written to ``.tmp`` and renamed when complete. doc_idx is ``0..N`` (one
    document per row, as in the pre-shuffled Pythia files). ``progress(n_rows)`` is called per row.
    Token ids that do not fit ``dtype`` raise DataError.
    """
    dtype = np.dtype(dtype)
    if dtype not in CODE_OF_DTYPE:
        raise DataError(f"{prefix}: dtype {dtype} has no MMIDIDX code")
    prefix = split_prefix(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    bin_path, idx_path = Path(f"{prefix}.bin"), Path(f"{prefix}.idx")
    tmp_bin, tmp_idx = Path(f"{bin_path}.tmp"), Path(f"{idx_path}.tmp")
    info = np.iinfo(dtype) if dtype.kind in "iu" else None
    sizes: list[int] = []
    try:
        with open(tmp_bin, "wb") as f:
            for i, row in enumerate(rows):
                row = np.asarray(row).reshape(-1)
                if info is not None and row.size and (row.max() > info.max or row.min() < info.min):
                    raise DataError(
                        f"{bin_path}: row {i} has token ids in [{row.min()}, {row.max()}], which do not fit {dtype}"
                    )
                f.write(np.ascontiguousarray(row, dtype=dtype).tobytes())
                sizes.append(row.size)
                if progress is not None:
                    progress(1)
        n = len(sizes)
        sz = np.asarray(sizes, dtype=np.int64)
        pointers = np.zeros(n, np.int64)
        if n:
            np.cumsum(sz[:-1] * dtype.itemsize, out=pointers[1:])
        with open(tmp_idx, "wb") as f:
            f.write(HEADER.pack(MAGIC, VERSION, CODE_OF_DTYPE[dtype], n, n + 1))
            f.write(sz.astype("<i4").tobytes())
            f.write(pointers.astype("<i8").tobytes())
            f.write(np.arange(n + 1, dtype="<i8").tobytes())
        os.replace(tmp_bin, bin_path)
        os.replace(tmp_idx, idx_path)
    finally:
        for t in (tmp_bin, tmp_idx):
            if t.exists():
                t.unlink()
    return n
