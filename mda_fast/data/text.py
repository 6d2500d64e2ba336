"""Raw text -> fixed-length token rows, packed like GPT-NeoX (documents joined by EOD).

Text is streamed through HF ``datasets`` (``.txt``, ``.jsonl``/``.json`` (+ ``.zst``/``.gz``),
``.parquet``, ``.arrow``; the ``text`` column), tokenized in batches without special tokens, each
document followed by the EOD id, and the token stream cut into rows of ``seq_len`` (row i = the
i-th packed row, so row ids are stable). The incomplete tail is dropped, as in GPT-NeoX.

Length and random access need one full pass: it happens lazily on first use of ``len()``/reads and
is kept in memory, or under ``cache_dir`` as ``.bin/.idx`` (reused while the inputs, tokenizer and
settings are unchanged). :meth:`TextSource.iter_rows` streams rows without that pass.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterator

import numpy as np

from mda_fast.data.mmidx import MMIdxSource, write_mmidx
from mda_fast.data.source import ArraySource, RowSource
from mda_fast.errors import ConfigError, DataError

TEXT_SUFFIXES = {
    ".txt": "text", ".text": "text",
    ".jsonl": "json", ".json": "json", ".jsonl.zst": "json", ".json.zst": "json",
    ".jsonl.gz": "json", ".json.gz": "json",
    ".parquet": "parquet", ".arrow": "arrow",
}


def text_builder(path: Path) -> str | None:
    """HF ``datasets`` builder for a text file, from its (possibly double) suffix."""
    name = path.name.lower()
    for suffix in sorted(TEXT_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return TEXT_SUFFIXES[suffix]
    return None


def load_tokenizer(tokenizer):
    """A HF tokenizer object, or one loaded from a local path (never downloads)."""
    if tokenizer is None:
        raise ConfigError("text sources need a tokenizer (--tokenizer PATH)")
    if not isinstance(tokenizer, (str, Path)):
        return tokenizer
    # imported on use: transformers takes seconds to import and most commands never need it
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(tokenizer), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{tokenizer}: cannot load a tokenizer from this path ({str(exc).splitlines()[0]})") from None


def pack_rows(docs: Iterator[list[int]], seq_len: int, eod_id: int, overlap: int = 0) -> Iterator[np.ndarray]:
    """Concatenate ``doc + [eod_id]`` for every doc and cut into rows of ``seq_len`` tokens.

    ``overlap=1`` repeats each row's last token as the next row's first (Megatron samples); the
    default 0 cuts the stream into disjoint rows. The incomplete tail is dropped.
    """
    if not 0 <= overlap < seq_len:
        raise ConfigError(f"overlap {overlap} must be in [0, seq_len={seq_len})")
    buf = np.empty(0, np.int64)
    step = seq_len - overlap
    for doc in docs:
        buf = np.concatenate((buf, np.asarray(doc, np.int64), [eod_id]))
        n = (len(buf) - overlap) // step if len(buf) >= seq_len else 0
        for r in range(n):
            yield buf[r * step : r * step + seq_len].copy()
        buf = buf[n * step :]


class TextSource(RowSource):
    """Packed token rows from text files (see module docstring)."""

    def __init__(self, paths, tokenizer=None, seq_len: int | None = None, eod_id: int | None = None, text_column: str = "text",
                 cache_dir=None, sample_by: str = "document", overlap: int = 0, row_id_offset: int = 0,
                 vocab_size: int | None = None, batch_docs: int = 256):
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise DataError("no text files given")
        for p in self.paths:
            if not p.is_file():
                raise DataError(f"{p}: text file not found")
        builders = {text_builder(p) for p in self.paths}
        if None in builders or len(builders) != 1:
            raise DataError(f"{self.paths[0].parent}: text files must share one format among "
                            f"{', '.join(sorted(TEXT_SUFFIXES))}")
        self.builder = builders.pop()
        if seq_len is None or int(seq_len) < 2:
            raise ConfigError(f"text sources need --seq-len >= 2 (got {seq_len})")
        self.tokenizer = load_tokenizer(tokenizer)
        eos = getattr(self.tokenizer, "eos_token_id", None)
        self.eod_id = int(eod_id) if eod_id is not None else (int(eos) if eos is not None else 0)
        self.seq_len, self.text_column, self.sample_by = int(seq_len), text_column, sample_by
        self.overlap, self.row_id_offset, self.vocab_size = int(overlap), int(row_id_offset), vocab_size
        self.batch_docs = batch_docs
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.name = str(self.paths[0]) if len(self.paths) == 1 else f"{self.paths[0].parent} ({len(self.paths)} text files)"
        self._packed: RowSource | None = None

    # -- streaming -------------------------------------------------------------------------
    def iter_texts(self) -> Iterator[str]:
        import datasets  # imported on use: datasets takes seconds to import and most commands never need it

        kw = {"sample_by": self.sample_by} if self.builder == "text" else {}
        try:
            ds = datasets.load_dataset(self.builder, data_files=[str(p) for p in self.paths], split="train",
                                       streaming=True, **kw)
            for i, ex in enumerate(ds):
                if self.text_column not in ex:
                    raise DataError(f"{self.name}: record {i} has no {self.text_column!r} field "
                                    f"(fields: {', '.join(ex)})")
                yield ex[self.text_column] or ""
        except DataError:
            raise
        except Exception as exc:  # malformed json, bad compression, unreadable arrow/parquet
            raise DataError(f"{self.name}: cannot read as {self.builder} text ({str(exc).splitlines()[0]})") from None

    def iter_token_docs(self) -> Iterator[list[int]]:
        batch: list[str] = []
        for text in self.iter_texts():
            batch.append(text)
            if len(batch) >= self.batch_docs:
                yield from self._encode(batch)
                batch = []
        if batch:
            yield from self._encode(batch)

    def _encode(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

    def iter_rows(self) -> Iterator[np.ndarray]:
        """int64[L] packed rows in order, streamed (no length pass needed)."""
        return pack_rows(self.iter_token_docs(), self.seq_len, self.eod_id, self.overlap)

    # -- random access through one cached pass --------------------------------------------
    def cache_key(self) -> str:
        h = hashlib.sha256()
        for p in self.paths:
            st = p.stat()
            h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
        tok = self.tokenizer
        backend = getattr(tok, "backend_tokenizer", None)
        h.update((backend.to_str() if backend is not None else repr(getattr(tok, "name_or_path", tok))).encode())
        h.update(json.dumps([self.seq_len, self.eod_id, self.overlap, self.text_column, self.sample_by]).encode())
        return h.hexdigest()[:16]

    def packed(self) -> RowSource:
        """The packed rows as a random-access source (one full pass the first time)."""
        if self._packed is None:
            if self.cache_dir is None:
                rows = list(self.iter_rows())
                arr = np.stack(rows) if rows else np.zeros((0, self.seq_len), np.int64)
                self._packed = ArraySource(arr, name=self.name)
            else:
                prefix = self.cache_dir / f"packed-{self.cache_key()}"
                if not Path(f"{prefix}.idx").is_file():
                    vocab = len(self.tokenizer) if hasattr(self.tokenizer, "__len__") else 1 << 31
                    dtype = np.uint16 if max(vocab, self.eod_id + 1) <= 1 << 16 else np.int32
                    write_mmidx(prefix, self.iter_rows(), dtype=dtype)
                self._packed = MMIdxSource(prefix, seq_len=self.seq_len)
            if len(self._packed) == 0:
                raise DataError(f"{self.name}: the text holds fewer than {self.seq_len} tokens, not one full row")
        return self._packed

    def __len__(self) -> int:
        return len(self.packed())

    def _read(self, positions, dtype=None):
        return self.packed()._read(positions, dtype)

    def _read_range(self, lo, hi, dtype=None):
        return self.packed()._read_range(lo, hi, dtype)
