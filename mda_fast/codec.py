"""Token ids <-> text, in one place: the byte-level codec of the demo and a wrapper over any Hugging
Face tokenizer, used to build the demo corpus, decode top rows, write synthetic rows and reports.

Bytes: token id = byte value (0..255), ``<|endoftext|>`` = 256 (EOD), vocabulary 257.
:func:`byte_tokenizer` is the same mapping as a real ``PreTrainedTokenizerFast`` (built locally with
``tokenizers``: BPE over GPT-2's byte-to-unicode alphabet, no merges), saved with every demo
checkpoint so ``AutoTokenizer.from_pretrained(step_dir)`` decodes; :func:`encode_bytes` is the fast
path for a corpus (a view of the raw bytes), which the tests check agrees with it. Tokenizers are
never downloaded here: a tokenizer that is not on disk is a ConfigError.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from mda_fast.errors import ConfigError

EOD_ID = 256
EOD_TOKEN = "<|endoftext|>"
BYTE_VOCAB_SIZE = 257


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def byte_tokenizer():
    """A ``PreTrainedTokenizerFast`` with ids 0..255 = bytes and 256 = ``<|endoftext|>``."""
    # imported on use: tokenizers/transformers take seconds and most commands never need them
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: b for b, ch in _bytes_to_unicode().items()}
    vocab[EOD_TOKEN] = EOD_ID
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([EOD_TOKEN])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOD_TOKEN, bos_token=EOD_TOKEN,
                                   unk_token=None, model_max_length=1 << 30)


def encode_bytes(data: bytes | str) -> np.ndarray:
    """Token ids of ``data`` (UTF-8 for str): uint16[n], identical to ``byte_tokenizer().encode``."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return np.frombuffer(data, dtype=np.uint8).astype(np.uint16)


def decode_ids(ids: Sequence[int]) -> str:
    """Text of byte token ids: EOD shown as ``<|endoftext|>``, an id outside the byte vocabulary as
    U+FFFD, invalid UTF-8 replaced."""
    out, buf = [], bytearray()
    for i in (int(x) for x in np.asarray(ids).reshape(-1).tolist()):
        if 0 <= i < 256:
            buf.append(i)
        else:
            out.append(buf.decode("utf-8", errors="replace") + (EOD_TOKEN if i == EOD_ID else "\ufffd"))
            buf = bytearray()
    out.append(buf.decode("utf-8", errors="replace"))
    return "".join(out)


class ByteCodec:
    """Token id == byte value; 256 = ``<|endoftext|>`` (the demo's vocabulary of 257)."""

    name = "bytes"
    vocab_size = BYTE_VOCAB_SIZE
    eod_id = EOD_ID

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        return decode_ids(ids)


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
        from transformers import AutoTokenizer  # imported on use: transformers takes seconds to import and most commands never need it

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
