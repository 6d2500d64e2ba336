"""The per-row gradient index (mda index / mda query) against mda score, float64 oracles and itself.

- k "full" (no compression) in float32 equals the score pass to float tolerance (float16 and
  bfloat16 storage, fp32 accumulation: to their rounding), callable probes and MDA.index included;
- a block's index coordinates equal C(G) = (Q_S^T G Q_A) / sqrt(Λ + damping), compressed by the
  selected eigen-directions or by the explicit seeded Rademacher matrices, in float64;
- batch size, chunk boundaries, ranks and a kill + resume change nothing beyond float noise, and
  no row is indexed twice or skipped;
- bad input: k larger than the block, another model / window / factors (at query and at build),
  a missing chunk, a damaged chunk file.
"""

import os
import shutil

import numpy as np
import pytest
import torch

from mda_fast.attribution import MDA, Settings, load_scores
from mda_fast.attribution.index.build import build_index
from mda_fast.attribution.index.query import Index
from mda_fast.attribution.index.basis import BlockBasis
from mda_fast.attribution.index.spec import IndexSpec
from mda_fast.attribution.index.store import IndexFiles
from mda_fast.attribution.pipeline import Pipeline
from mda_fast.errors import ConfigError, DataError
from mda_fast.probes import CallableProbe
from mda_fast.capture import Capture
from mda_fast.units import get_adapter

from oracles import RecordingWindow
from test_attr_bruteforce import target_probe, tiny, window
from test_attr_bruteforce import one_thread  # noqa: F401  (autouse fixture)

UNITS = ["L1.H2.qkvo", "L0.H1.qk"]
PROBES = ["copy_target", "prev_attn:L1.H2"]
N = 23
BASE = dict(fit_fraction=0.5, batch_size=4, progress=False, probe_n=6, probe_seq_len=16, chunk_rows=4)


def settings(**kw):
    return Settings(**dict(BASE, **kw))


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """(directory, model): factors/ and scores/ of the tiny model over the window, by mda score."""
    d = tmp_path_factory.mktemp("index")
    model = tiny("neox", 1)
    mda = MDA(model, UNITS, PROBES, settings=settings())
    mda.fit(window(n=N), out_dir=str(d / "factors"))
    mda.score(window(n=N), str(d / "scores"))
    return d, model


def index(d, model, name, spec, **kw):
    return build_index(model, window(n=N), str(d / name), UNITS, str(d / "factors"), spec, settings(**kw))


def rel(x, y):
    return float(np.abs(x - y).max() / np.abs(y).max())


def test_full_index_equals_mda_score(fitted):
    d, model = fitted
    ref = load_scores(str(d / "scores"))
    for dtype, tol in (("float32", 1e-5), ("float16", 2e-3), ("bfloat16", 5e-3)):  # stored; fp32 accumulate
        idx = index(d, model, f"full-{dtype}", IndexSpec(k="full", dtype=dtype))
        table = idx.query(PROBES)
        assert table.columns == ref.columns
        np.testing.assert_array_equal(table.row_ids, ref.row_ids)
        np.testing.assert_allclose(table.loss, ref.loss, rtol=1e-6)
        err = rel(table.scores, ref.scores)
        print(f"k full, {dtype}: max relative error vs mda score {err:.1e}")
        assert err <= tol


def test_default_k_is_capped_at_small_blocks(fitted):
    """The default k (64 per side) is an upper bound: this model's blocks (8-16 x 32) are kept whole,
    so the default index equals mda score; an explicit k that does not fit is an error (below)."""
    d, model = fitted
    idx = index(d, model, "default-k", IndexSpec(dtype="float32"))
    for name, block in idx.manifest["blocks"].items():
        assert block["k"] == block["shape"], name
    assert IndexSpec.from_dict(idx.manifest["spec"]) == IndexSpec(dtype="float32")
    assert rel(idx.query(PROBES).scores, load_scores(str(d / "scores")).scores) <= 1e-5


def test_mda_index_front_door_equals_mda_score(fitted, tmp_path):
    d, model = fitted
    mda = MDA(model, UNITS, PROBES, settings=settings()).load_factors(str(d / "factors"))
    idx = mda.index(window(n=N), str(tmp_path / "index"), IndexSpec(k="full", dtype="float32"), units=UNITS)
    assert idx.manifest["factors_path"] == os.path.abspath(d / "factors")  # recorded: queries find them
    assert rel(Index(idx.path, model, settings=settings()).query(PROBES).scores,
               load_scores(str(d / "scores")).scores) <= 1e-5


def test_callable_probe_and_units_subset_match_mda_score(fitted, tmp_path):
    d, model = fitted
    mda = MDA(model, ["L1.H2.qkvo"], [CallableProbe(target_probe)], settings=settings())
    mda.load_factors(str(d / "factors"))
    ref = mda.score(window(n=N), str(tmp_path / "scores"))
    idx = Index(str(d / "full-float32"), model, settings=settings())
    table = idx.query(target_probe, units=["L1.H2.qkvo"])
    assert table.columns == ["L1.H2.qkvo/target_probe"]
    assert rel(table.scores, ref.scores) <= 1e-5


def _oracle(G, f, basis, spec):
    """float64 C(G) compressed as ``spec`` says, [n, dim]."""
    QA, QS, W = f.Q_A.double(), f.Q_S.double(), (f.lam.double() + f.damping).rsqrt()
    C = (QS.T @ G @ QA) * W
    if spec.kind == "eigen":  # the k_out * k_in entries of largest Λ, largest first
        order = sorted(range(C[0].numel()), key=lambda j: (-float(f.lam.flatten()[j]), j))
        return C.reshape(C.shape[0], -1)[:, order[: basis.dim]]
    elif spec.kind == "seeded":
        C = basis.R_out.materialize(torch.float64).T @ C @ basis.R_in.materialize(torch.float64)
    return C.reshape(C.shape[0], -1)


@pytest.mark.parametrize("spec", [IndexSpec(k="full"), IndexSpec(k=(5, 7), projection="eigen"),
                                  IndexSpec(k=(6, 4), projection="seeded", seed=3)], ids=["full", "eigen", "seeded"])
def test_block_coordinates_equal_float64_oracle(fitted, spec):
    d, model = fitted
    mda = MDA(model, UNITS, PROBES, settings=settings())
    mda.load_factors(str(d / "factors"))
    tokens = torch.as_tensor(window(n=N).read(np.arange(5)))
    with Capture(model, mda.blocks, adapter=get_adapter(model)) as cap:
        from mda_fast.models.loss import row_losses
        row_losses(model(input_ids=tokens[:, :-1]).logits, tokens[:, 1:]).sum().backward()
        a, g = cap.a, cap.g
    for b in mda.blocks:
        f = mda.factors[b.name]
        basis = BlockBasis(b.name, f, spec)
        G = g[b.name].double().transpose(1, 2) @ a[b.name].double()  # [n, O, I]
        want = _oracle(G, f, basis, spec)
        for got in (basis.coords(a[b.name], g[b.name]), basis.of_gradients(G.float())):
            assert got.shape == want.shape
            assert float((got.double() - want).abs().max() / want.abs().max()) < 1e-5, b.name


def test_batch_size_and_chunk_boundaries_change_nothing(fitted):
    d, model = fitted
    spec = IndexSpec(k=(4, 4), dtype="float32")
    base = index(d, model, "bs4", spec).query(PROBES)
    for bs, rows, chunks in ((1, 3, [3] * 7 + [2]), (7, 5, [7, 7, 7, 2]), (32, 1024, [N])):
        idx = index(d, model, f"bs{bs}", spec, batch_size=bs, chunk_rows=rows)
        assert [c[2] for c in idx.manifest["chunks"]] == chunks  # a chunk holds whole batches
        assert rel(idx.query(PROBES).scores, base.scores) <= 1e-5
    files = IndexFiles(str(d / "bs1"))
    W = torch.randn(files.manifest["blocks"]["L0.H1.qk"]["dim"], 2)
    torch.testing.assert_close(files.product("L0.H1.qk", W, step=2), files.product("L0.H1.qk", W), rtol=0, atol=0)


def _kill_after(n):
    def on_batch(done):
        if done >= n:
            raise KeyboardInterrupt("simulated kill")
    return on_batch


def test_kill_and_resume_index_each_row_once(fitted):
    d, model = fitted
    spec = IndexSpec(k=(4, 4))
    ref = index(d, model, "whole", spec, batch_size=3, chunk_rows=6)
    w = RecordingWindow(window(n=N))  # records the row ids each pass reads
    seen = w.seen
    out = str(d / "killed")
    with pytest.raises(KeyboardInterrupt):
        build_index(model, w, out, UNITS, str(d / "factors"), spec, settings(batch_size=3, chunk_rows=6),
                    on_batch=_kill_after(5))  # 15 rows seen, 12 flushed in 2 chunks, 3 buffered and flushed
    first = list(seen)
    with pytest.raises(DataError, match="not complete"):
        IndexFiles(out)
    seen.clear()
    idx = build_index(model, w, out, UNITS, str(d / "factors"), spec, settings(batch_size=3, chunk_rows=6))
    assert sorted(first + seen) == list(range(1000, 1000 + N)), "every row indexed exactly once"
    np.testing.assert_array_equal(idx.query(PROBES).scores, ref.query(PROBES).scores)  # bitwise
    seen.clear()
    build_index(model, w, out, UNITS, str(d / "factors"), spec, settings(batch_size=3, chunk_rows=6))
    assert seen == [], "a complete index is not built again"


# ---- two ranks with gloo ------------------------------------------------------------------------
def _worker(rank, world, init_file, d):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        build_index(tiny("neox", 1), window(n=N), os.path.join(d, "ranks2"), UNITS, os.path.join(d, "factors"),
                    IndexSpec(k=(4, 4), dtype="float32"), settings(chunk_rows=5))
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_match_one_process(fitted):
    import torch.multiprocessing as mp

    d, model = fitted
    mp.spawn(_worker, args=(2, str(d / "init"), str(d)), nprocs=2, join=True)
    idx = Index(str(d / "ranks2"), model, settings=settings())
    assert idx.manifest["world_size"] == 2 and {c[0] for c in idx.manifest["chunks"]} == {0, 1}
    single = index(d, model, "bs4", IndexSpec(k=(4, 4), dtype="float32")).query(PROBES)
    assert rel(idx.query(PROBES).scores, single.scores) <= 1e-5


# ---- the pipeline stages and bad input --------------------------------------------------------------
def test_pipeline_query_writes_scores_and_top(fitted, tmp_path):
    d, model = fitted
    run = tmp_path / "run"
    shutil.copytree(d / "factors", run / "factors")
    p = Pipeline(model, window(n=N), str(run), PROBES, units="auto", settings=settings())
    idx = p.index(IndexSpec(k=(4, 8)))
    assert idx.units == UNITS  # every head of the factors' layers that they hold
    table = p.query(top_k=3)
    assert (run / "top" / "top.json").is_file() and len(p.reports) == len(table.columns)
    loaded = load_scores(str(run / "scores"))
    np.testing.assert_array_equal(loaded.scores, table.scores)
    assert "index" in loaded.manifest["identity"]
    p2 = Pipeline(model, None, str(run), ["copy_target"], units=["L0.H1.qk"], settings=settings())
    assert p2.query(top_k=2).columns == ["L0.H1.qk/copy_target"], "a later query replaces an earlier query's scores"


def test_a_query_never_overwrites_the_scores_of_a_score_pass(fitted):
    d, model = fitted
    before = (d / "scores" / "scores.npz").read_bytes()
    with pytest.raises(ConfigError, match=r"scores holds scores of another run .*query into another output directory"):
        Index(str(d / "bs4"), model, settings=settings()).query(PROBES, out_dir=str(d / "scores"))
    assert (d / "scores" / "scores.npz").read_bytes() == before


def test_k_larger_than_the_block_is_refused_before_anything_is_written(fitted):
    d, model = fitted
    with pytest.raises(ConfigError, match=r"index k 9x4 \(k_out x k_in\) is larger than block L1.H2.v \(8 x 32, "
                       r"out x in\): use k_out <= 8 and k_in <= 8"):  # o is 32 x 8: the limit is each side's smallest
        index(d, model, "toolarge", IndexSpec(k=(9, 4)))
    assert not (d / "toolarge").exists()


def test_query_refuses_another_model_window_or_factors(fitted, tmp_path):
    d, model = fitted
    path = str(d / "bs4")
    with pytest.raises(ConfigError, match="was built from model weights .* not from this query's"):
        Index(path, tiny("neox", 2), settings=settings())
    other = MDA(model, UNITS, PROBES, settings=settings(fit_seed=1))
    other.fit(window(n=N), out_dir=str(tmp_path / "factors"))
    with pytest.raises(ConfigError, match="was built from EK-FAC factors"):
        Index(path, model, factors=str(tmp_path / "factors"), settings=settings())
    with pytest.raises(ConfigError, match="was built from window rows 1000..1022"):
        Index(path, model, settings=settings()).query(PROBES, window=window(n=N - 1))


def test_factors_of_another_window_are_refused_before_the_pass(fitted, tmp_path):
    d, model = fitted
    with pytest.raises(ConfigError, match="factors .* were fitted on window rows 1000..1022"):
        build_index(model, window(n=N - 1), str(tmp_path / "index"), UNITS, str(d / "factors"), IndexSpec(k=4),
                    settings())
    assert not (tmp_path / "index" / "manifest.json").exists()


def test_a_missing_chunk_is_one_clear_error(fitted, tmp_path):
    d, model = fitted
    holed = tmp_path / "holed"
    shutil.copytree(d / "bs7", holed)
    shutil.rmtree(holed / "chunks" / "chunk-0-7")
    with pytest.raises(DataError, match=r"holed is missing chunk chunks/chunk-0-7 \(7 rows from row 7 of rank 0\)"):
        Index(str(holed), model, settings=settings())


def test_a_damaged_chunk_file_is_one_clear_error(fitted, tmp_path):
    d, model = fitted
    damaged = tmp_path / "damaged"
    shutil.copytree(d / "bs7", damaged)
    np.save(damaged / "chunks" / "chunk-0-7" / "L0.H1.qk.npy", np.zeros((7, 3), np.float16))
    with pytest.raises(DataError, match=r"chunk-0-7/L0.H1.qk.npy holds float16\[7, 3\], expected float32\[7, 16\]"):
        Index(str(damaged), model, settings=settings()).query(PROBES)
