"""One logical byte stream over a ``.bin`` or its split pieces, memory-mapped and read in place.

Pythia's ``document.bin`` is published as ``document-00000-of-00020.bin`` ..
``document-00020-of-00020.bin``: 21 pieces, "of-N" names the last index. Pieces are memory-mapped
lazily (a 5 GB piece costs address space, not memory) and a read that crosses a piece boundary
is assembled from both sides.
"""

from __future__ import annotations

import bisect
import re
from pathlib import Path

import numpy as np

from mda_fast.errors import DataError
from mda_fast.io import atomic_path

_PIECE = re.compile(r"-(\d+)-of-(\d+)\.bin$")


def piece_name(prefix: Path, index: int, last: int) -> Path:
    width = max(5, len(str(last)))
    return prefix.with_name(f"{prefix.name}-{index:0{width}d}-of-{last:0{width}d}.bin")


def find_bin_files(prefix: Path) -> list[Path]:
    """``prefix.bin`` if present, else its split pieces in order; DataError naming a missing piece."""
    whole = prefix.with_name(prefix.name + ".bin")
    if whole.is_file():
        return [whole]
    found: dict[int, dict[int, Path]] = {}
    for p in prefix.parent.glob(f"{prefix.name}-*-of-*.bin"):
        m = _PIECE.search(p.name)
        if m and p.name[: m.start()] == prefix.name:
            found.setdefault(int(m.group(2)), {})[int(m.group(1))] = p
    if not found:
        raise DataError(f"{whole}: data file not found (nor split pieces {prefix.name}-NNNNN-of-NNNNN.bin)")
    if len(found) > 1:
        raise DataError(f"{prefix.parent}: split pieces of {prefix.name} disagree on their count: of-{sorted(found)}")
    last, pieces = next(iter(found.items()))
    for i in range(last + 1):
        if i not in pieces:
            raise DataError(f"{piece_name(prefix, i, last)}: missing piece {i} of 0..{last} of {prefix.name}.bin")
    extra = sorted(set(pieces) - set(range(last + 1)))
    if extra:
        raise DataError(f"{pieces[extra[0]]}: piece index {extra[0]} is beyond the last index {last}")
    return [pieces[i] for i in range(last + 1)]


class LogicalFile:
    """Concatenation of ``paths`` as one read-only byte stream; ``size`` = total bytes."""

    def __init__(self, paths: list[Path]):
        self.paths = list(paths)
        sizes = [p.stat().st_size for p in self.paths]
        self.starts = [0]
        for s in sizes:
            self.starts.append(self.starts[-1] + s)
        self.size = self.starts[-1]
        self._maps: dict[int, np.ndarray] = {}

    def describe(self) -> str:
        if len(self.paths) == 1:
            return str(self.paths[0])
        return f"{self.paths[0]} .. {self.paths[-1].name} ({len(self.paths)} pieces)"

    def _map(self, k: int) -> np.ndarray:
        m = self._maps.get(k)
        if m is None:
            n = self.starts[k + 1] - self.starts[k]
            # plain ndarray view: slicing a memmap subclass costs per call; the view keeps the map alive
            m = np.memmap(self.paths[k], np.uint8, "r").view(np.ndarray) if n else np.zeros(0, np.uint8)
            self._maps[k] = m
        return m

    def __getstate__(self):  # memmaps are reopened in each worker process
        return {**self.__dict__, "_maps": {}}

    def read(self, start: int, count: int, src_dtype, dtype=None) -> np.ndarray:
        """Fresh 1-D array of ``count`` ``src_dtype`` tokens at byte ``start``, cast to ``dtype``."""
        src = np.dtype(src_dtype)
        dtype = np.dtype(dtype) if dtype is not None else src
        k = bisect.bisect_right(self.starts, start) - 1
        end = start + count * src.itemsize
        if 0 <= start and 0 <= k < len(self.paths) and end <= self.starts[k + 1]:
            off = start - self.starts[k]
            # np.array(view, dtype) is the fastest fresh converting copy (faster than empty+copyto)
            return np.array(self._map(k)[off : off + count * src.itemsize].view(src), dtype=dtype)
        out = np.empty(count, dtype)
        self.copy_into(out, start, src)
        return out

    def copy_into(self, out: np.ndarray, start: int, src_dtype=None) -> None:
        """Fill 1-D ``out`` with the tokens (``src_dtype``, default out's) at byte ``start``."""
        src = np.dtype(src_dtype if src_dtype is not None else out.dtype)
        nbytes = out.size * src.itemsize
        end = start + nbytes
        if start < 0 or end > self.size:
            raise DataError(f"{self.describe()}: read of bytes [{start}, {end}) is past the end ({self.size} bytes)")
        if nbytes == 0:
            return
        k = bisect.bisect_right(self.starts, start) - 1
        if end <= self.starts[k + 1]:  # common case: inside one piece, one converting copy
            off = start - self.starts[k]
            np.copyto(out, self._map(k)[off : off + nbytes].view(src), casting="unsafe")
            return
        # straddles pieces: gather the bytes, then convert (rare: once per piece boundary)
        buf = np.empty(nbytes, np.uint8)
        pos = start
        while pos < end:
            k = bisect.bisect_right(self.starts, pos) - 1
            hi = min(end, self.starts[k + 1])
            buf[pos - start : hi - start] = self._map(k)[pos - self.starts[k] : hi - self.starts[k]]
            pos = hi
        np.copyto(out, buf.view(src), casting="unsafe")


def split_file(path: Path, piece_bytes: int) -> list[Path]:
    """Split ``path`` (e.g. ``document.bin``) into ``document-0000k-of-0000M.bin`` pieces; removes it.

    For tests and benchmarks; pieces are cut at arbitrary byte offsets, like the published ones.
    """
    path = Path(path)
    total = path.stat().st_size
    count = max(1, -(-total // piece_bytes))
    prefix = path.with_suffix("")
    out = []
    with open(path, "rb") as f:
        for i in range(count):
            dest = piece_name(prefix, i, count - 1)
            with atomic_path(dest) as tmp, open(tmp, "wb") as g:
                left = min(piece_bytes, total - i * piece_bytes)
                while left > 0:
                    chunk = f.read(min(left, 1 << 24))
                    g.write(chunk)
                    left -= len(chunk)
            out.append(dest)
    path.unlink()
    return out
