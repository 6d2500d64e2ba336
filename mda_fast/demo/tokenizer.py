"""Byte-level tokenizer of the demo: token id = byte value (0..255), ``<|endoftext|>`` = 256 (EOD).

It is a real ``PreTrainedTokenizerFast`` built locally with the ``tokenizers`` library (BPE with the
GPT-2 byte-to-unicode alphabet and no merges), saved with every demo checkpoint so ``decode`` works
through the standard API (``AutoTokenizer.from_pretrained(step_dir)``). Encoding a corpus goes
through :func:`encode_bytes` (a view of the raw bytes), which the tests check agrees with it.
"""

from __future__ import annotations

import numpy as np

EOD_ID = 256
EOD_TOKEN = "<|endoftext|>"
VOCAB_SIZE = 257


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


def decode_ids(ids) -> str:
    """Text of token ids (EOD shown as ``<|endoftext|>``; invalid UTF-8 replaced)."""
    out, buf = [], bytearray()
    for t in np.asarray(ids).tolist():
        if t == EOD_ID:
            out.append(buf.decode("utf-8", "replace") + EOD_TOKEN)
            buf = bytearray()
        else:
            buf.append(int(t))
    out.append(buf.decode("utf-8", "replace"))
    return "".join(out)
