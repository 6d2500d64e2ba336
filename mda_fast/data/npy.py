"""The paper authors' format: one ``(N, L)`` integer ``.npy`` of rows in training order, memory-mapped."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mda_fast.data.source import ArraySource
from mda_fast.errors import DataError


class NpySource(ArraySource):
    """Rows of an ``(N, L)`` ``.npy`` memmap; row ids are ``row_id_offset + position``.

    The authors' files often hold one window only (e.g. steps 1000-1999 of Pythia-14m): pass
    ``row_id_offset=1024 * 1000`` so ids stay global.
    """

    def __init__(self, path, row_id_offset: int = 0, vocab_size: int | None = None):
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: .npy file not found")
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as exc:  # bad header, truncated data, pickled object arrays
            raise DataError(f"{path}: not a readable .npy array ({exc})") from None
        if array.ndim != 2:
            raise DataError(f"{path}: expected rows of shape (N, L), got shape {array.shape}")
        super().__init__(array, name=str(path), row_id_offset=row_id_offset, vocab_size=vocab_size)
        self.path = path

    def __reduce__(self):
        # a worker process reopens the memory map (the rows never travel as a copy)
        return (NpySource, (str(self.path), self.row_id_offset, self.vocab_size))
