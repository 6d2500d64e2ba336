"""``open_source(spec)``: choose the reader from the path.

- ``x.idx`` / ``x.bin`` / prefix ``x`` / a split piece ``x-00003-of-00020.bin`` -> MMIDIDX
- ``x.npy`` -> (N, L) memmap
- ``x.parquet`` with a ``token_ids`` column, or a directory / glob of them -> ParquetSource
- ``.txt``, ``.jsonl``, ``.jsonl.zst``, ``.json``, ``.arrow``, parquet with a ``text`` column, or a
  directory / glob of them -> TextSource (needs ``tokenizer=`` and ``seq_len=``)
- a directory holding exactly one ``.idx`` -> that MMIDIDX file
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

from mda_fast.data.mmidx import MMIdxSource, split_prefix
from mda_fast.data.npy import NpySource
from mda_fast.data.parquet import ParquetSource
from mda_fast.data.source import RowSource
from mda_fast.data.text import TEXT_SUFFIXES, TextSource, text_builder
from mda_fast.errors import ConfigError, DataError

_TEXT_KW = {"tokenizer", "eod_id", "text_column", "cache_dir", "sample_by", "overlap", "batch_docs"}


def _parquet_columns(path: Path) -> list[str]:
    import pyarrow.parquet as pq  # imported on use: pyarrow takes seconds to import and most commands never need it

    try:
        return pq.read_schema(path).names
    except Exception as exc:  # ArrowInvalid / OSError on a file that is not parquet
        raise DataError(f"{path}: not a readable parquet file ({exc})") from None


def _expand(spec: str) -> list[Path]:
    """Files named by a directory or a glob (sorted); [] when it names neither."""
    p = Path(spec)
    if p.is_dir():
        return sorted(q for q in p.iterdir() if q.is_file() and not q.name.startswith("."))
    if any(c in spec for c in "*?["):
        return sorted(Path(q) for q in glob.glob(spec) if Path(q).is_file())
    return []


def _open_files(files: list[Path], spec: str, kw: dict) -> RowSource:
    idx = [f for f in files if f.suffix == ".idx"]
    if idx:
        if len(idx) > 1:
            raise DataError(f"{spec}: holds {len(idx)} .idx files; name one of them")
        return _mmidx(idx[0], kw)
    npy = [f for f in files if f.suffix == ".npy"]
    if npy:
        if len(npy) > 1:
            raise DataError(f"{spec}: holds {len(npy)} .npy files; name one of them")
        return _only(NpySource, npy[0], kw, {"row_id_offset", "vocab_size"})
    parquet = [f for f in files if f.suffix == ".parquet"]
    column = kw.get("column", "token_ids")
    if parquet and all(column in _parquet_columns(f) for f in parquet):
        return _only(ParquetSource, parquet, kw, {"column", "row_id_column", "row_id_offset", "vocab_size", "seq_len"})
    text = [f for f in files if text_builder(f) is not None]
    if text:
        if kw.get("tokenizer") is None and parquet:
            names = ", ".join(_parquet_columns(parquet[0]))
            raise DataError(f"{spec}: parquet without a {column!r} column (columns: {names}) holds no token ids; "
                            f"tokenize its text "
                            f"first (`mda data pack --data {spec} --tokenizer TOKENIZER --seq-len L --out PREFIX`) and use the "
                            f"packed rows, or name the column of token ids with --set data.options.column=NAME")
        return _only(TextSource, text, kw, _TEXT_KW | {"seq_len", "row_id_offset", "vocab_size"})
    raise DataError(
        f"{spec}: no readable data (.bin/.idx, .npy, .parquet, or text: {', '.join(sorted(TEXT_SUFFIXES))})"
    )


def _only(cls, arg, kw: dict, allowed: set) -> RowSource:
    """``cls(arg, **kw)`` after dropping None options; a tokenizer is ignored (used to decode only)."""
    kw = {k: v for k, v in kw.items() if v is not None and (k in allowed or k != "tokenizer")}
    unknown = set(kw) - allowed
    if unknown:
        raise ConfigError(f"{cls.__name__} does not take option(s) {', '.join(sorted(unknown))}")
    return cls(arg, **kw)


def _mmidx(spec, kw: dict) -> RowSource:
    return _only(MMIdxSource, spec, kw, {"seq_len", "vocab_size", "row_id_offset", "full_check"})


def open_source(spec, **kw) -> RowSource:
    """A RowSource for ``spec`` (path, prefix, directory, glob, list of files, or a RowSource).

    Keyword options go to the chosen reader (``seq_len``, ``vocab_size``, ``row_id_offset``,
    ``tokenizer``, ``eod_id``, ``cache_dir``, ``column`` ...); ``None`` values are ignored.
    """
    if isinstance(spec, RowSource):
        return spec
    if isinstance(spec, (list, tuple)):
        files = [Path(f) for f in spec]
        for f in files:
            if not f.is_file():
                raise DataError(f"{f}: file not found")
        return _open_files(files, str(files[0]) if files else "[]", kw)
    spec = os.fspath(spec)
    p = Path(spec)
    if p.is_file() or p.suffix in (".idx", ".bin"):
        if p.suffix in (".idx", ".bin"):
            return _mmidx(p, kw)
        return _open_files([p], spec, kw)
    files = _expand(spec)
    if files:
        return _open_files(files, spec, kw)
    if p.is_dir():
        raise DataError(f"{spec}: the directory holds no data files (.bin/.idx, .npy, .parquet, or text: "
                        f"{', '.join(sorted(TEXT_SUFFIXES))})")
    prefix = split_prefix(spec)
    if Path(f"{prefix}.idx").is_file():
        return _mmidx(prefix, kw)
    raise DataError(f"{spec}: no such file, directory or .bin/.idx prefix")
