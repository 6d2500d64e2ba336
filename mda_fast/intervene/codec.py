"""Turning token rows into text and back, for analysis, augmentation and the report.

Two codecs: a byte-level one (token id == byte value; what the embedded demo model uses) and a
wrapper around a Hugging Face tokenizer loaded from a local path or name (never downloaded here:
a missing tokenizer is a ConfigError).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from mda_fast.errors import ConfigError


class ByteCodec:
    """Token id == byte value; 256 = ``<|endoftext|>`` (the demo's vocabulary of 257)."""

    name = "bytes"
    vocab_size = 257
    eod_id = 256
    EOD_TEXT = "<|endoftext|>"

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        out, buf = [], bytearray()
        for i in (int(x) for x in ids):
            if 0 <= i < 256:
                buf.append(i)
            else:
                out.append(buf.decode("utf-8", errors="replace") + (self.EOD_TEXT if i == 256 else "\ufffd"))
                buf = bytearray()
        out.append(buf.decode("utf-8", errors="replace"))
        return "".join(out)


class HFCodec:
    """Wrapper over a transformers tokenizer: ``encode`` adds no special tokens."""

    def __init__(self, tokenizer, name: str = "hf"):
        self.tok = tokenizer
        self.name = name
        self.vocab_size = len(tokenizer)
        self.eod_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0

    def encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode([int(i) for i in ids])


def get_codec(spec=None):
    """``None``/"bytes" -> :class:`ByteCodec`; an object with encode/decode -> wrapped as is;
    a string -> ``AutoTokenizer.from_pretrained(spec)`` (local files only)."""
    if spec is None or spec == "bytes":
        return ByteCodec()
    if hasattr(spec, "encode") and hasattr(spec, "decode"):
        return spec if hasattr(spec, "eod_id") else HFCodec(spec, getattr(spec, "name_or_path", "hf"))
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(spec), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - any load failure is the user's tokenizer spec
        raise ConfigError(f"tokenizer {spec!r} cannot be loaded locally ({type(exc).__name__}); "
                          "pass a local tokenizer directory or 'bytes'") from None
    return HFCodec(tok, str(spec))


def codec_for_vocab(vocab_size: int | None, tokenizer=None, rows=None):
    """Pick the codec for a source: an explicit tokenizer wins, else bytes when the vocab (or, when
    the vocab is unknown, the largest token id in ``rows``) fits bytes + EOD."""
    if tokenizer is not None:
        return get_codec(tokenizer)
    if vocab_size is None and rows is not None and np.size(rows) and int(np.max(rows)) <= 256:
        return ByteCodec()
    if vocab_size is not None and vocab_size <= 257:
        return ByteCodec()
    raise ConfigError(f"a tokenizer is needed to decode rows of a {vocab_size}-token vocabulary; "
                      "pass --tokenizer")


def as_int_array(ids) -> np.ndarray:
    return np.asarray(ids, dtype=np.int64).reshape(-1)
