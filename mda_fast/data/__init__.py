"""Row sources: Pythia's training rows (and any other token data) in training order.

``open_source(spec)`` picks the reader from the path; every source yields
``Batch(row_ids[B], tokens[B, L])`` per rank with a resume cursor (see ``source.RowSource``).
Heavy readers (parquet/pyarrow, text/datasets) import their libraries only when used.
"""

from mda_fast.data.factory import open_source
from mda_fast.data.mmidx import IndexFile, MMIdxSource, write_mmidx
from mda_fast.data.npy import NpySource
from mda_fast.data.parquet import ParquetSource
from mda_fast.data.source import (
    ArraySource,
    Batch,
    RowSource,
    check_vocab,
    parse_steps,
    rank_bounds,
    select_steps,
)
from mda_fast.data.text import TextSource, pack_rows

__all__ = [
    "ArraySource", "Batch", "IndexFile", "MMIdxSource", "NpySource", "ParquetSource", "RowSource",
    "TextSource", "check_vocab", "open_source", "pack_rows", "parse_steps", "rank_bounds",
    "select_steps", "write_mmidx",
]
