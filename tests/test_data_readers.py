"""npy, parquet and text readers, and open_source's choice of reader, on files the tests write."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from mda_fast.data import (
    MMIdxSource,
    NpySource,
    ParquetSource,
    TextSource,
    open_source,
    select_steps,
    write_mmidx,
)
from mda_fast.data.pieces import split_file
from mda_fast.errors import ConfigError, DataError

DOCS = ["the cat sat on the mat", "hello world", "a b c d e f g", "", "cat " * 9, "world hello the end"]


def make_tokenizer(path=None):
    """Tiny byte-level BPE built locally (no downloads); eos <|endoftext|> = 0."""
    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|padding|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    t.train_from_iterator(DOCS * 5, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=t, eos_token="<|endoftext|>", pad_token="<|padding|>")
    if path is not None:
        tok.save_pretrained(path)
    return tok


def expected_rows(tok, docs, seq_len, eod):
    stream = []
    for d in docs:
        stream += tok(d, add_special_tokens=False)["input_ids"] + [eod]
    n = len(stream) // seq_len
    return np.array(stream[: n * seq_len]).reshape(n, seq_len)


# -- npy -----------------------------------------------------------------------------------
def test_npy_round_trip_and_offset(tmp_path):
    rows = np.random.default_rng(0).integers(0, 50000, (30, 9)).astype(np.int32)
    np.save(tmp_path / "rows.npy", rows)
    src = open_source(tmp_path / "rows.npy", row_id_offset=1024)
    assert isinstance(src, NpySource) and len(src) == 30 and src.seq_len == 9
    assert np.array_equal(src.read(np.arange(30)), rows)
    assert src.row_ids()[[0, -1]].tolist() == [1024, 1053]
    got = [b for b in src.batches(4, rank=1, world_size=2, start=1)]
    assert got[0].row_ids.tolist() == [1040, 1041, 1042, 1043]


def test_npy_bad_shape(tmp_path):
    np.save(tmp_path / "flat.npy", np.arange(10))
    with pytest.raises(DataError, match=r"flat\.npy: expected rows of shape \(N, L\)"):
        open_source(tmp_path / "flat.npy")


# -- parquet -------------------------------------------------------------------------------
def write_parquet_copy(tmp_path, rows, per_file=20, group=6, uid_base=0, ids=True):
    for f, lo in enumerate(range(0, len(rows), per_file)):
        part = rows[lo : lo + per_file]
        cols = {"token_ids": pa.array(list(part))}
        if ids:
            cols = {"uid": np.arange(lo, lo + len(part)) + uid_base,
                    "batch_idx": np.arange(lo, lo + len(part)) // 4, **cols}
        pq.write_table(pa.table(cols), tmp_path / f"train-{f}.parquet", row_group_size=group)


def test_parquet_directory_is_one_source(tmp_path):
    rows = np.random.default_rng(1).integers(0, 50000, (50, 11))
    write_parquet_copy(tmp_path, rows, uid_base=4096)
    src = open_source(tmp_path)
    assert isinstance(src, ParquetSource) and len(src) == 50 and src.seq_len == 11
    assert len(src._groups) == 4 + 4 + 2  # 20-row files in 6-row groups, last file 10 rows
    assert np.array_equal(src.read(np.arange(50)), rows)
    perm = np.array([49, 0, 19, 20, 21, 5])
    assert np.array_equal(src.read(perm), rows[perm])
    assert src.row_ids().tolist() == list(range(4096, 4146))
    assert src.extra_column("batch_idx").tolist() == (np.arange(50) // 4).tolist()
    assert src.position_of(4096 + 33) == 33
    ids = sorted(i for r in range(3) for b in src.batches(7, r, 3) for i in b.row_ids.tolist())
    assert ids == list(range(4096, 4146))


def test_parquet_glob_natural_order_and_window(tmp_path):
    rows = np.random.default_rng(2).integers(0, 50000, (120, 5))
    write_parquet_copy(tmp_path, rows, per_file=10, ids=False)  # train-0 .. train-11: natural order
    src = open_source(str(tmp_path / "train-*.parquet"))
    assert np.array_equal(src.read(np.arange(120)), rows)
    w = select_steps(src, 2, 3, rows_per_step=32)
    assert np.array_equal(w.read(np.arange(32)), rows[64:96])


def test_parquet_ragged_rows(tmp_path):
    pq.write_table(pa.table({"token_ids": pa.array([[1, 2, 3], [4, 5]])}), tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=r"bad\.parquet: row 1 of row group 0 has 2 tokens"):
        open_source(tmp_path / "bad.parquet")


def test_parquet_without_tokens_needs_tokenizer(tmp_path):
    pq.write_table(pa.table({"other": [1, 2]}), tmp_path / "x.parquet")
    with pytest.raises(DataError, match=r"\(columns: other\) holds no token ids; tokenize its text first"):
        open_source(tmp_path / "x.parquet")


# -- text ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


def write_jsonl(path, docs):
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))


@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.zst", "parquet", "arrow", "txt"])
def test_text_packing(tmp_path, tok, fmt):
    if fmt == "jsonl":
        write_jsonl(tmp_path / "a.jsonl", DOCS)
    elif fmt == "jsonl.zst":
        write_jsonl(tmp_path / "plain", DOCS)
        (tmp_path / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress((tmp_path / "plain").read_bytes()))
        (tmp_path / "plain").unlink()
    elif fmt == "parquet":
        pq.write_table(pa.table({"text": DOCS}), tmp_path / "a.parquet")
    elif fmt == "arrow":
        table = pa.table({"text": DOCS})
        with pa.ipc.new_stream(str(tmp_path / "a.arrow"), table.schema) as w:
            w.write_table(table)
    else:  # one .txt file per document
        for i, d in enumerate(DOCS):
            (tmp_path / f"doc{i:02d}.txt").write_text(d)
    src = open_source(tmp_path, tokenizer=tok, seq_len=8)
    assert isinstance(src, TextSource) and src.eod_id == 0
    want = expected_rows(tok, DOCS, 8, 0)
    assert len(src) == len(want) > 3
    assert np.array_equal(src.read(np.arange(len(src))), want)
    assert np.array_equal(np.stack(list(src.iter_rows())), want)  # streaming == random access
    assert src.row_ids().tolist() == list(range(len(want)))


def test_text_custom_eod_cache_dir_and_tokenizer_path(tmp_path, tok):
    make_tokenizer(tmp_path / "tok")
    write_jsonl(tmp_path / "a.jsonl", DOCS)
    src = open_source(tmp_path / "a.jsonl", tokenizer=str(tmp_path / "tok"), seq_len=6, eod_id=1,
                      cache_dir=tmp_path / "cache")
    want = expected_rows(tok, DOCS, 6, 1)
    assert np.array_equal(src.read(np.arange(len(want))), want)
    cached = list((tmp_path / "cache").glob("packed-*.idx"))
    assert len(cached) == 1
    again = open_source(tmp_path / "a.jsonl", tokenizer=tok, seq_len=6, eod_id=1, cache_dir=tmp_path / "cache")
    assert isinstance(again.packed(), MMIdxSource)  # reused, same key for the same tokenizer
    assert len(list((tmp_path / "cache").iterdir())) == 2


def test_text_overlap_one_like_megatron(tmp_path, tok):
    write_jsonl(tmp_path / "a.jsonl", DOCS)
    src = open_source(tmp_path / "a.jsonl", tokenizer=tok, seq_len=8, overlap=1)
    rows = src.read(np.arange(len(src)))
    assert (rows[1:, 0] == rows[:-1, -1]).all()
    assert np.array_equal(np.concatenate([rows[0], *[r[1:] for r in rows[1:]]]),
                          expected_rows(tok, DOCS, 1, 0).ravel()[: 8 + 7 * (len(rows) - 1)])


def test_text_errors(tmp_path, tok):
    write_jsonl(tmp_path / "a.jsonl", DOCS)
    with pytest.raises(ConfigError, match="need a tokenizer"):
        open_source(tmp_path / "a.jsonl", seq_len=8)
    (tmp_path / "b.jsonl").write_text('{"body": "x"}\n')
    with pytest.raises(DataError, match=r"b\.jsonl: record 0 has no 'text' field"):
        len(open_source(tmp_path / "b.jsonl", tokenizer=tok, seq_len=4))
    with pytest.raises(DataError, match="fewer than 4096 tokens"):
        len(open_source(tmp_path / "a.jsonl", tokenizer=tok, seq_len=4096))


# -- open_source ---------------------------------------------------------------------------
def test_open_source_mmidx_forms(tmp_path):
    rows = np.random.default_rng(3).integers(0, 50000, (12, 7))
    write_mmidx(tmp_path / "document", rows)
    for spec in ["document", "document.idx", "document.bin"]:
        assert np.array_equal(open_source(tmp_path / spec).read(np.arange(12)), rows)
    split_file(tmp_path / "document.bin", 50)
    for spec in [tmp_path / "document", tmp_path / "document-00001-of-00003.bin", tmp_path]:
        src = open_source(spec)
        assert isinstance(src, MMIdxSource) and np.array_equal(src.read(np.arange(12)), rows)


def test_open_source_unknown(tmp_path):
    (tmp_path / "x.csv").write_text("1,2\n")
    with pytest.raises(DataError, match="no readable data"):
        open_source(tmp_path / "x.csv")
    with pytest.raises(DataError, match="no such file"):
        open_source(tmp_path / "nothing")
