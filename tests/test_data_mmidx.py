"""MMIDIDX .bin/.idx: byte layout, round trips, split pieces, and every validation error."""

import struct

import numpy as np
import pytest

from mda_fast.data import MMIdxSource, write_mmidx
from mda_fast.data.pieces import split_file
from mda_fast.errors import DataError


def reference_idx(sizes, dtype_code, itemsize, doc_idx):
    """Independent .idx writer from the published layout (struct.pack only)."""
    n = len(sizes)
    out = b"MMIDIDX\x00\x00" + struct.pack("<Q", 1) + struct.pack("<B", dtype_code)
    out += struct.pack("<Q", n) + struct.pack("<Q", len(doc_idx))
    out += b"".join(struct.pack("<i", s) for s in sizes)
    ptr = 0
    for s in sizes:
        out += struct.pack("<q", ptr)
        ptr += s * itemsize
    out += b"".join(struct.pack("<q", d) for d in doc_idx)
    return out


def rows_of(n, length, seed=0, high=50277):
    return np.random.default_rng(seed).integers(0, high, (n, length)).astype(np.uint16)


def test_idx_layout_byte_for_byte(tmp_path):
    rows = rows_of(5, 9)
    write_mmidx(tmp_path / "d", rows, dtype=np.uint16)
    assert (tmp_path / "d.idx").read_bytes() == reference_idx([9] * 5, 8, 2, range(6))
    assert (tmp_path / "d.bin").read_bytes() == b"".join(struct.pack("<H", int(t)) for t in rows.ravel())
    assert not list(tmp_path.glob("*.tmp"))


def test_idx_layout_variable_lengths_int32(tmp_path):
    rows = [np.arange(3), np.arange(7) * 1000, np.arange(1)]
    write_mmidx(tmp_path / "v", rows, dtype=np.int32)
    assert (tmp_path / "v.idx").read_bytes() == reference_idx([3, 7, 1], 4, 4, range(4))
    src = MMIdxSource(tmp_path / "v")
    for i, r in enumerate(rows):
        assert np.array_equal(src.row_tokens(i), r)
    with pytest.raises(DataError, match="row 1 has 7 tokens"):
        src.read([0, 1])


@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.uint8, np.int64])
def test_round_trip_dtypes(tmp_path, dtype):
    rows = rows_of(13, 11, high=200 if dtype == np.uint8 else 50000).astype(dtype)
    write_mmidx(tmp_path / "d", rows, dtype=dtype)
    src = MMIdxSource(tmp_path / "d.bin")
    assert len(src) == 13 and src.seq_len == 11
    out = src.read(np.arange(13))
    assert out.dtype == np.int64 and np.array_equal(out, rows)
    assert src.read([4], dtype=None).dtype == np.dtype(dtype)
    perm = np.array([7, 8, 9, 0, 12, 3, 4])
    assert np.array_equal(src.read(perm), rows[perm])


def test_reads_index_written_by_reference_writer(tmp_path):
    rows = rows_of(6, 5, seed=3)
    (tmp_path / "r.idx").write_bytes(reference_idx([5] * 6, 8, 2, [0, 6]))
    (tmp_path / "r.bin").write_bytes(rows.astype("<u2").tobytes())
    assert np.array_equal(MMIdxSource(tmp_path / "r").read(np.arange(6)), rows)


@pytest.mark.parametrize("piece_bytes", [2 * 11 * 3, 37, 300])  # row-aligned, odd (mid-token), few
def test_split_pieces_read_as_one_file(tmp_path, piece_bytes):
    rows = rows_of(40, 11, seed=1)
    write_mmidx(tmp_path / "document", rows)
    pieces = split_file(tmp_path / "document.bin", piece_bytes)
    assert len(pieces) > 1 and not (tmp_path / "document.bin").exists()
    assert pieces[0].name.startswith("document-00000-of-")
    src = MMIdxSource(tmp_path / "document")
    assert np.array_equal(src.read(np.arange(40)), rows)
    # every single row, including those straddling a piece boundary
    for i in range(40):
        assert np.array_equal(src.read([i])[0], rows[i])
    got = np.concatenate([b.tokens.numpy() for b in src.batches(6)])
    assert np.array_equal(got, rows)


def test_straddling_row_is_really_split(tmp_path):
    rows = rows_of(4, 10, seed=2)
    write_mmidx(tmp_path / "document", rows)
    split_file(tmp_path / "document.bin", 25)  # row 1 spans bytes [20, 40): pieces 0 and 1
    src = MMIdxSource(tmp_path / "document-00000-of-00003.bin")
    assert src.file.paths[0].stat().st_size == 25
    assert np.array_equal(src.read([1])[0], rows[1])


def test_missing_piece_names_the_file(tmp_path):
    write_mmidx(tmp_path / "document", rows_of(20, 10))
    split_file(tmp_path / "document.bin", 100)
    (tmp_path / "document-00002-of-00003.bin").unlink()
    with pytest.raises(DataError, match=r"document-00002-of-00003\.bin"):
        MMIdxSource(tmp_path / "document.idx")


def test_missing_bin(tmp_path):
    write_mmidx(tmp_path / "d", rows_of(2, 3))
    (tmp_path / "d.bin").unlink()
    with pytest.raises(DataError, match=r"d\.bin: data file not found"):
        MMIdxSource(tmp_path / "d")


def _patch(path, offset, data):
    b = bytearray(path.read_bytes())
    b[offset : offset + len(data)] = data
    path.write_bytes(bytes(b))


@pytest.mark.parametrize(
    "offset,data,message",
    [
        (0, b"MMIDIDY", "not an MMIDIDX index"),
        (9, struct.pack("<Q", 2), "unsupported MMIDIDX version 2"),
        (17, struct.pack("<B", 9), "unknown dtype code 9"),
        (18, struct.pack("<Q", 1000), "truncated index"),
        (34 + 4 * 4 + 8 * 2, struct.pack("<q", 7), "pointer of row 2 is 7"),
        (34 + 4 * 4, struct.pack("<q", 2), "first pointer is 2"),
        (34 + 4, struct.pack("<i", -1), "row 1 has negative size"),
    ],
)
def test_corrupt_index(tmp_path, offset, data, message):
    write_mmidx(tmp_path / "d", rows_of(4, 6))
    _patch(tmp_path / "d.idx", offset, data)
    with pytest.raises(DataError, match=message) as exc:
        MMIdxSource(tmp_path / "d")
    assert "d.idx" in str(exc.value)


def test_truncated_bin(tmp_path):
    write_mmidx(tmp_path / "d", rows_of(4, 6))
    with open(tmp_path / "d.bin", "r+b") as f:
        f.truncate(4 * 6 * 2 - 1)
    with pytest.raises(DataError, match=r"truncated \.bin.*needs 48 bytes, found 47"):
        MMIdxSource(tmp_path / "d")


def test_lazy_validation_catches_bad_pointer_on_read(tmp_path):
    write_mmidx(tmp_path / "d", rows_of(8, 6))
    _patch(tmp_path / "d.idx", 34 + 8 * 4 + 8 * 4, struct.pack("<q", 3))  # pointer of row 4
    src = MMIdxSource(tmp_path / "d", full_check=False)
    assert src.read([0, 1]).shape == (2, 6)  # untouched rows still read
    with pytest.raises(DataError, match="pointer of row 4"):
        src.read([4])


def test_token_too_big_for_dtype(tmp_path):
    with pytest.raises(DataError, match="do not fit uint16"):
        write_mmidx(tmp_path / "d", [np.array([1, 70000])], dtype=np.uint16)
    assert not list(tmp_path.iterdir())


def test_pickle_reopens_maps(tmp_path):
    import pickle

    rows = rows_of(9, 4)
    write_mmidx(tmp_path / "document", rows)
    split_file(tmp_path / "document.bin", 30)
    src = MMIdxSource(tmp_path / "document")
    src.read([0])
    blob = pickle.dumps(src)
    assert len(blob) < 2000  # no token or index data travels to worker processes
    assert np.array_equal(pickle.loads(blob).read(np.arange(9)), rows)
