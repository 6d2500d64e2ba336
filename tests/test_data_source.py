"""RowSource contract: rank splits, resume cursor, step windows, views, vocabulary check."""

import numpy as np
import pytest
import torch

from mda_fast.data import ArraySource, MMIdxSource, check_vocab, rank_bounds, select_steps, write_mmidx
from mda_fast.errors import ConfigError, DataError


@pytest.fixture
def rows():
    return np.random.default_rng(0).integers(0, 1000, (23, 7)).astype(np.uint16)


@pytest.fixture(params=["array", "mmidx"])
def source(request, rows, tmp_path):
    if request.param == "array":
        return ArraySource(rows)
    write_mmidx(tmp_path / "d", rows)
    return MMIdxSource(tmp_path / "d")


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("batch", [1, 4, 50])
def test_rank_split_covers_every_row_once(source, rows, world, batch):
    seen = []
    for rank in range(world):
        for b in source.batches(batch, rank=rank, world_size=world):
            assert isinstance(b.row_ids, torch.Tensor) and b.row_ids.dtype == torch.int64
            assert b.tokens.dtype == torch.int64 and b.tokens.shape == (len(b.row_ids), 7)
            assert np.array_equal(b.tokens.numpy(), rows[b.row_ids.numpy()])
            seen.extend(b.row_ids.tolist())
    assert sorted(seen) == list(range(23))
    assert len(seen) == 23


@pytest.mark.parametrize("world", [1, 2, 3, 4, 7])
def test_rank_bounds_match_array_split(world):
    for n in [0, 1, 5, 23, 100]:
        chunks = np.array_split(np.arange(n), world)
        for r, c in enumerate(chunks):
            lo, hi = rank_bounds(n, r, world)
            assert list(range(lo, hi)) == c.tolist()


@pytest.mark.parametrize("start", [0, 1, 3, 5, 8])
def test_resume_yields_exactly_the_remaining_rows(source, start):
    full = [i for b in source.batches(3, rank=1, world_size=3) for i in b.row_ids.tolist()]
    resumed = [i for b in source.batches(3, rank=1, world_size=3, start=start) for i in b.row_ids.tolist()]
    assert resumed == full[start:]


def test_resume_cursor_out_of_range(source):
    with pytest.raises(ConfigError, match="resume cursor 9"):
        next(source.batches(2, rank=0, world_size=3, start=9))


def test_step_window(source, rows):
    w = select_steps(source, 2, 5, rows_per_step=4)
    assert len(w) == 12
    assert w.row_ids().tolist() == list(range(8, 20))
    assert np.array_equal(w.read(np.arange(12)), rows[8:20])
    ids = [i for b in w.batches(5, rank=1, world_size=2) for i in b.row_ids.tolist()]
    assert ids == list(range(14, 20))
    assert w.position_of(10) == 2


def test_step_window_beyond_data(source):
    with pytest.raises(ConfigError, match=r"step window 3:6 .*rows \[12, 24\).*only 23 rows"):
        select_steps(source, 3, 6, rows_per_step=4)


def test_views_compose_without_copy(source, rows):
    w = source.slice(5, 20).slice(2, 10)  # base positions 7..14
    assert w.row_ids().tolist() == list(range(7, 15))
    sub = w.subset([7, 0, 1, 2, 5])  # base positions 14, 7, 8, 9, 12
    assert sub.row_ids().tolist() == [14, 7, 8, 9, 12]
    assert np.array_equal(sub.read(np.arange(5)), rows[[14, 7, 8, 9, 12]])
    assert sub.subset([4, 0]).row_ids().tolist() == [12, 14]
    assert getattr(sub, "base") is source  # views point at the base, never at copies
    got = np.concatenate([b.tokens.numpy() for b in sub.batches(2)])
    assert np.array_equal(got, rows[[14, 7, 8, 9, 12]])
    with pytest.raises(DataError, match="row id 3"):
        sub.position_of(3)


def test_read_returns_fresh_writable_arrays(source, rows):
    out = source.read_range(0, 3)
    out[:] = 0
    assert np.array_equal(source.read_range(0, 3), rows[:3].astype(np.int64))


def test_read_position_out_of_range(source):
    with pytest.raises(DataError, match="position 23"):
        source.read([23])


def test_row_id_offset():
    src = ArraySource(np.zeros((4, 2), np.int64), row_id_offset=1000)
    assert src.row_ids().tolist() == [1000, 1001, 1002, 1003]
    assert src.position_of(1002) == 2


def test_check_vocab_names_row_and_token():
    tokens = torch.tensor([[1, 2, 3], [4, 50304, 5]])
    check_vocab(tokens, 50305, "x")
    with pytest.raises(DataError, match="shard.bin: row 77 position 1 has token id 50304.*vocabulary of 50304"):
        check_vocab(tokens, 50304, "shard.bin", row_ids=[76, 77])


def test_check_vocab_negative_ids():
    with pytest.raises(DataError, match="row 0 position 2 has token id -3"):
        check_vocab(np.array([[0, 1, -3]]), 10, "a.npy")
    check_vocab(np.array([[0, 9]], np.uint16), 10, "a.npy")


def test_batches_check_vocab(rows):
    src = ArraySource(rows, name="rows.npy", vocab_size=int(rows.max()))  # the max id is out of range
    with pytest.raises(DataError, match="rows.npy: row"):
        list(src.batches(4))
    assert len(list(src.batches(4, vocab_size=1000))) == 6


def test_bad_rank():
    with pytest.raises(ConfigError, match="rank 2"):
        rank_bounds(10, 2, 2)


def test_positions_of_default_custom_and_nested_row_ids():
    from mda_fast.data import ArraySource
    from mda_fast.errors import DataError

    src = ArraySource(np.zeros((10, 4), np.int64), row_id_offset=100)
    assert src.positions_of([100, 105, 109]).tolist() == [0, 5, 9]
    sub = src.subset(np.array([7, 2, 5]))                    # ids 107, 102, 105 at positions 0, 1, 2
    assert sub.positions_of([105, 107]).tolist() == [2, 0] and sub.position_of(102) == 1
    sl = src.slice(3, 8)
    assert sl.positions_of([103, 107]).tolist() == [0, 4]
    for source, bad in ((sub, 103), (src, 99), (sl, 108)):
        with pytest.raises(DataError, match=str(bad)):
            source.positions_of([bad])
