"""Scores do not depend on batch size, rows per shard / world size, or on being killed and resumed."""

import os

import numpy as np
import pytest
import torch

from mda_fast.attribution import MDA, Settings, load_scores
from mda_fast.errors import DataError

from oracles import RecordingWindow
from test_attr_bruteforce import tiny, window  # noqa: F401
from test_attr_bruteforce import one_thread  # noqa: F401  (autouse fixture)

UNITS = ["L1.H2.qkvo", "L0.H1.qk"]
PROBES = ["copy_target", "prev_attn:L1.H2"]
N = 23


def run(tmp, name, model=None, factors=None, **kw):
    s = dict(fit_fraction=0.5, batch_size=4, progress=False, probe_n=6, probe_seq_len=16, chunk_rows=4)
    s.update(kw)
    mda = MDA(model or tiny("neox", 1), UNITS, PROBES, settings=Settings(**s))
    if factors is None:
        mda.fit(window(n=N))
    else:
        mda.load_factors(factors)
    return mda, mda.score(window(n=N), os.path.join(tmp, name))


def close(x, y, tol=1e-5):
    err = np.abs(x - y).max() / np.abs(y).max()
    assert err <= tol, (err, np.abs(x - y).max(0) / np.abs(y).max(0), np.abs(x - y).max(1))


def test_batch_size_invariance(tmp_path):
    tmp = str(tmp_path)
    base_mda, base = run(tmp, "bs4", batch_size=4)
    base_mda.factors.save(os.path.join(tmp, "factors"))
    for bs in (1, 7, 32):  # fit and score both at another batch size
        _, t = run(tmp, f"bs{bs}", batch_size=bs)
        np.testing.assert_array_equal(t.row_ids, base.row_ids)
        close(t.scores, base.scores, 1e-5)
        np.testing.assert_allclose(t.loss, base.loss, rtol=1e-5)
    # scoring with saved-and-loaded factors gives the same numbers
    _, t = run(tmp, "loaded", factors=os.path.join(tmp, "factors"), batch_size=5)
    close(t.scores, base.scores, 1e-6)


def test_resume_after_kill_scores_each_row_once(tmp_path):
    tmp = str(tmp_path)
    model = tiny("neox", 1)
    mda, ref = run(tmp, "ref", model=model, batch_size=3, chunk_rows=6)
    mda.factors.save(os.path.join(tmp, "factors"))

    w = RecordingWindow(window(n=N))  # records the row ids each pass reads
    seen = w.seen
    m2 = MDA(model, UNITS, PROBES, settings=Settings(batch_size=3, chunk_rows=6, progress=False, probe_n=6, probe_seq_len=16))
    m2.load_factors(os.path.join(tmp, "factors"))
    out = os.path.join(tmp, "killed")
    with pytest.raises(KeyboardInterrupt):
        m2.score(w, out, on_batch=_kill_after(3))  # dies after 3 batches = 9 rows
    first = list(seen)
    assert len(first) == 9
    with pytest.raises(DataError, match="not complete"):
        load_scores(out)
    seen.clear()
    table = m2.score(w, out)
    assert sorted(first + seen) == list(range(1000, 1000 + N)), "every row scored exactly once"
    np.testing.assert_array_equal(table.row_ids, ref.row_ids)
    np.testing.assert_array_equal(table.scores, ref.scores)  # bitwise: same batches, same factors
    # a complete run is not scored again
    seen.clear()
    m2.score(w, out)
    assert seen == []


def _kill_after(n):
    """A progress callback that simulates a killed run after ``n`` scored batches."""
    def on_batch(done):
        if done >= n:
            raise KeyboardInterrupt("simulated kill")
    return on_batch


def test_resume_after_unflushed_rows(tmp_path):
    """Rows still buffered when the process dies hard are simply redone (chunk files only)."""
    tmp = str(tmp_path)
    mda, ref = run(tmp, "ref", batch_size=2, chunk_rows=4)
    out = os.path.join(tmp, "hard")
    store_rows = 0
    m2 = MDA(mda.model, UNITS, PROBES, settings=Settings(batch_size=2, chunk_rows=4, progress=False, probe_n=6, probe_seq_len=16))
    m2.factors = mda.factors
    with pytest.raises(KeyboardInterrupt):
        m2.score(window(n=N), out, on_batch=_kill_after(5))
    chunks = sorted(os.listdir(os.path.join(out, "chunks")))
    store_rows = sum(len(np.load(os.path.join(out, "chunks", c))["row_ids"]) for c in chunks)
    assert store_rows == 10 and not any(c.endswith(".tmp") for c in chunks)
    os.remove(os.path.join(out, "chunks", chunks[-1]))  # as if the last flush never happened
    np.testing.assert_array_equal(m2.score(window(n=N), out).scores, ref.scores)


def test_resume_refuses_a_different_run(tmp_path):
    tmp = str(tmp_path)
    mda, _ = run(tmp, "a")
    m2 = MDA(mda.model, ["L1.H2.qk"], PROBES, settings=Settings(progress=False, probe_n=6, probe_seq_len=16))
    m2.factors = mda.factors
    from mda_fast.errors import ConfigError
    with pytest.raises(ConfigError, match=r"another run \(units: .* there vs \[\"L1.H2.qk\"\] in this run"):
        m2.score(window(n=N), os.path.join(tmp, "a"))


# ---- two ranks with gloo ------------------------------------------------------------------------
def _worker(rank, world, init_file, out_dir, result_dir):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        mda = MDA(tiny("neox", 1), UNITS, PROBES,
                  settings=Settings(fit_fraction=0.5, batch_size=4, progress=False, probe_n=6, probe_seq_len=16, chunk_rows=4))
        mda.fit(window(n=N), out_dir=os.path.join(result_dir, "factors2"))
        mda.score(window(n=N), out_dir)
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_match_one_process(tmp_path):
    import torch.multiprocessing as mp

    tmp = str(tmp_path)
    _, single = run(tmp, "single")
    out = os.path.join(tmp, "ranks2")
    mp.spawn(_worker, args=(2, os.path.join(tmp, "init"), out, tmp), nprocs=2, join=True)
    two = load_scores(out)
    assert two.manifest["world_size"] == 2
    chunks = os.listdir(os.path.join(out, "chunks"))
    assert {c.split("-")[1] for c in chunks} == {"0", "1"}, "each rank wrote its own chunks"
    np.testing.assert_array_equal(two.row_ids, single.row_ids)
    close(two.scores, single.scores, 1e-5)
    np.testing.assert_allclose(two.loss, single.loss, rtol=1e-5)
