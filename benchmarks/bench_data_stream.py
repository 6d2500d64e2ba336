"""Streaming throughput of the .bin/.idx reader vs a raw np.memmap read of the same bytes.

Run:  python -m pytest benchmarks/bench_data_stream.py --benchmark-enable -q \
          [--benchmark-columns=min,mean,max]        (MDA_BENCH_MB=300 sets the file size)

A ~300 MB synthetic shard of Pythia-shaped rows (2049 uint16 tokens) is written to a temp dir,
once whole and once split into pieces cut mid-token. Every round streams all rows in batches of
256; the warm-up round pulls the file into the page cache, so figures are *warm-cache* (memory
bandwidth, not disk). extra_info holds rows/s and GB/s of source bytes (2 bytes per token).
"""

import os
import shutil

import numpy as np
import pytest
import torch

from mda_fast.data import MMIdxSource, write_mmidx
from mda_fast.data.pieces import split_file

SEQ = 2049
BATCH = 256
MB = int(os.environ.get("MDA_BENCH_MB", "300"))
ROWS = MB * 2**20 // (SEQ * 2)


@pytest.fixture(scope="module")
def shard(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench_data")
    rng = np.random.default_rng(0)

    def rows():
        for lo in range(0, ROWS, 4096):
            yield from rng.integers(0, 50277, (min(4096, ROWS - lo), SEQ), dtype=np.uint16)

    write_mmidx(d / "whole" / "document", rows())
    (d / "split").mkdir()
    shutil.copy(d / "whole" / "document.idx", d / "split" / "document.idx")
    shutil.copy(d / "whole" / "document.bin", d / "split" / "document.bin")
    split_file(d / "split" / "document.bin", 64 * 2**20 + 1)  # odd size: rows and tokens straddle
    yield d
    shutil.rmtree(d)


def _record(benchmark, nbytes_rows):
    t = benchmark.stats.stats.min
    benchmark.extra_info["rows_per_s"] = round(ROWS / t)
    benchmark.extra_info["GB_per_s"] = round(ROWS * SEQ * 2 / t / 1e9, 3)
    benchmark.extra_info["rows"] = ROWS
    benchmark.extra_info["bytes_out_per_row"] = nbytes_rows


def _run(benchmark, fn, out_bytes_per_row):
    benchmark.pedantic(fn, rounds=5, warmup_rounds=1, iterations=1)
    _record(benchmark, out_bytes_per_row)


def test_raw_memmap_uint16(benchmark, shard):
    mm = np.memmap(shard / "whole" / "document.bin", np.uint16, "r").reshape(-1, SEQ)

    def go():
        for a in range(0, ROWS, BATCH):
            np.array(mm[a : a + BATCH])

    _run(benchmark, go, SEQ * 2)


def test_reader_uint16(benchmark, shard):
    src = MMIdxSource(shard / "whole" / "document")

    def go():
        for a in range(0, ROWS, BATCH):
            src.read_range(a, min(a + BATCH, ROWS), dtype=None)

    _run(benchmark, go, SEQ * 2)


def test_raw_memmap_int64_tensor(benchmark, shard):
    """Same loop shape as RowSource.batches: a generator of (row ids, int64 tokens) tensors."""
    mm = np.memmap(shard / "whole" / "document.bin", np.uint16, "r").reshape(-1, SEQ)

    def raw_batches():
        for a in range(0, ROWS, BATCH):
            b = min(a + BATCH, ROWS)
            yield torch.arange(a, b), torch.from_numpy(mm[a:b].astype(np.int64))

    def go():
        for _ in raw_batches():
            pass

    _run(benchmark, go, SEQ * 8)


@pytest.mark.parametrize("layout", ["whole", "split"])
def test_reader_batches_int64(benchmark, shard, layout):
    src = MMIdxSource(shard / layout / "document")
    assert len(src.file.paths) == (1 if layout == "whole" else -(-ROWS * SEQ * 2 // (64 * 2**20 + 1)))

    def go():
        for _ in src.batches(BATCH):
            pass

    _run(benchmark, go, SEQ * 8)


def test_reader_batches_int64_vocab_checked(benchmark, shard):
    src = MMIdxSource(shard / "whole" / "document", vocab_size=50304)

    def go():
        for _ in src.batches(BATCH):
            pass

    _run(benchmark, go, SEQ * 8)


def test_split_pieces_read_the_same_bytes(shard):
    whole, split = MMIdxSource(shard / "whole" / "document"), MMIdxSource(shard / "split" / "document")
    for a in range(0, ROWS, ROWS // 7):
        assert np.array_equal(whole.read_range(a, min(a + BATCH, ROWS)), split.read_range(a, min(a + BATCH, ROWS)))
