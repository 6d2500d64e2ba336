"""``mda data pack`` (any source -> .bin/.idx) and ``mda data show --row N`` (print one row)."""

from __future__ import annotations

# Handlers import their stage code inside the function: `mda --help` must not load torch (cli/__init__).
import argparse
from pathlib import Path

import numpy as np

from mda_fast.cli import flags
from mda_fast.errors import ConfigError, DataError

CHUNK_ROWS = 1024  # rows read per copy while packing


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="inspect and convert training data")
    sub = data.add_subparsers(dest="data_command", metavar="ACTION")
    sub.required = True

    pack = sub.add_parser("pack", help="convert any source to a .bin/.idx pair")
    _source_args(pack)
    flags.out(pack, required=True, help="output prefix (writes PREFIX.bin and PREFIX.idx)")
    pack.add_argument("--dtype", default="auto", choices=["auto", "uint16", "int32", "int64"],
                      help="token dtype on disk (auto: uint16 unless the tokenizer has more than 65536 ids)")
    pack.set_defaults(func=cmd_pack)

    show = sub.add_parser("show", help="print one row, decoded when a tokenizer is given")
    _source_args(show)
    show.add_argument("--row", type=int, required=True, help="global row id (training order)")
    show.set_defaults(func=cmd_show)


def _source_args(p: argparse.ArgumentParser) -> None:
    flags.data(p, required=True, help=".bin/.idx prefix or piece, .npy, parquet file/dir/glob, or text files")
    p.add_argument("--seq-len", type=int, default=None, help="tokens per row (text sources: required)")
    p.add_argument("--tokenizer", default=None, help="local HF tokenizer directory (text sources; decoding)")
    p.add_argument("--eod-id", type=int, default=None, help="end-of-document id for text (default: eos, else 0)")
    p.add_argument("--text-column", default=None, help="text field of json/parquet/arrow records (default text)")
    flags.steps(p)
    flags.rows_per_step(p, default=1024)


def _open(args):
    from mda_fast.data import open_source, parse_steps, select_steps

    src = open_source(args.data, seq_len=args.seq_len, tokenizer=args.tokenizer, eod_id=args.eod_id,
                      text_column=args.text_column)
    if args.steps is not None:
        a, b = parse_steps(args.steps)
        src = select_steps(src, a, b, args.rows_per_step)
    return src


def _pick_dtype(args, src) -> np.dtype:
    if args.dtype != "auto":
        return np.dtype(args.dtype)
    from mda_fast.data import MMIdxSource

    base = getattr(src, "base", src)
    if isinstance(base, MMIdxSource) and base.dtype.kind in "iu":
        return base.dtype
    tok = getattr(base, "tokenizer", None)
    if tok is not None and len(tok) > 1 << 16:
        return np.dtype(np.int32)
    return np.dtype(np.uint16)


def _rows(src):
    """Rows in order: streamed for un-windowed text (no length pass), else chunked reads."""
    from mda_fast.data import TextSource

    if isinstance(src, TextSource) and src._packed is None:
        yield from src.iter_rows()
        return
    for lo in range(0, len(src), CHUNK_ROWS):
        yield from src.read_range(lo, min(lo + CHUNK_ROWS, len(src)), dtype=None)


def cmd_pack(args) -> int:
    from tqdm import tqdm

    from mda_fast.data import TextSource, write_mmidx
    from mda_fast.data.mmidx import split_prefix

    src = _open(args)
    out = split_prefix(args.out)
    base = getattr(src, "base", src)
    if getattr(base, "prefix", None) is not None and Path(base.prefix).resolve() == out.resolve():
        raise ConfigError(f"--out {args.out} is the source itself; choose another prefix")
    streaming = isinstance(src, TextSource) and src._packed is None
    dtype = _pick_dtype(args, src)
    with tqdm(total=None if streaming else len(src), unit="row", desc=f"pack {out.name}") as bar:
        n = write_mmidx(out, _rows(src), dtype=dtype, progress=bar.update)
    if n == 0:
        raise DataError(f"{args.data}: no full rows to pack (seq_len {src.seq_len})")
    print(f"wrote {n} rows of {src.seq_len} tokens ({dtype}) to {out}.bin and {out}.idx")
    return 0


def cmd_show(args) -> int:
    from mda_fast.data.text import load_tokenizer

    src = _open(args)
    pos = src.position_of(args.row)
    tokens = src.read([pos])[0]
    tok = getattr(getattr(src, "base", src), "tokenizer", None) or (load_tokenizer(args.tokenizer) if args.tokenizer else None)
    print(f"row {args.row} (position {pos} of {len(src)}) in {src.name}: {len(tokens)} tokens")
    if tok is None:
        print(" ".join(str(int(t)) for t in tokens))
    else:
        print(tok.decode(tokens.tolist()))
    return 0
