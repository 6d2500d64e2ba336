"""Per-row gradient index speed (issue 13 targets: build <= 1.25x one score pass, query of 1M rows <= 2 s).

    B = time(mda index over N rows, all heads) / time(one mda score pass over the same rows and heads)
    op 1 share = time inside ops.project_per_sample_grad / time(index build)
    Q = time to score 1M indexed rows of one head (a synthetic index: random float16 coordinates),
        i.e. what Index.query does after the probe gradient: open and check the index, the streamed
        product, the row order; the probe gradient (one forward+backward over the probe set) is
        timed separately on the demo model.

Model: the demo shape (GPT-NeoX 2 x 128, 4 heads, random weights: timings do not depend on them),
rows of 65 tokens as the demo's window, every head's QK block (8 units), factors fitted once (not
timed). The score pass has one probe (copy_target); the index is the default spec (eigen, k = the
README's default) stored in float16.

Run:  python -m pytest benchmarks/bench_index.py --benchmark-enable -q
      python benchmarks/bench_index.py [--rows 1000000] [--ks 16,32,64]     # the RESULTS.md table
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import tempfile
import time

import numpy as np
import pytest
import torch

import mda_fast.ops as ops
from mda_fast.attribution import MDA, Settings
from mda_fast.attribution.index.build import build_index
from mda_fast.attribution.index.spec import IndexSpec
from mda_fast.attribution.index.store import FORMAT, IndexFiles, IndexStore
from mda_fast.data import ArraySource
from mda_fast.models import make_tiny_model
from timing import best_of

ROWS, TOKENS, BATCH = 1024, 65, 32
UNITS = [f"L{l}.H{h}.qk" for l in range(2) for h in range(4)]


def demo_model():
    return make_tiny_model("neox", seed=0, hidden_size=128, num_attention_heads=4, intermediate_size=256,
                           max_position_embeddings=256)


def settings() -> Settings:
    return Settings(batch_size=BATCH, progress=False, chunk_rows=4096)


@contextlib.contextmanager
def scratch():
    d = tempfile.mkdtemp(prefix="mda_bench_index_")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def setup(factors_dir: str):
    """(model, window) with EK-FAC factors of every head's QK block fitted into ``factors_dir``."""
    model = demo_model()
    src = ArraySource(np.random.default_rng(0).integers(2, 256, (ROWS, TOKENS)), name="bench")
    MDA(model, UNITS, ["copy_target"], settings=settings()).fit(src, out_dir=factors_dir)
    return model, src


def score_pass(model, src, factors_dir: str) -> None:
    with scratch() as out:
        mda = MDA(model, UNITS, ["copy_target"], settings=settings())
        mda.load_factors(factors_dir)
        mda.score(src, out)


@contextlib.contextmanager
def op1_timer():
    """Seconds spent inside op 1 while the block runs: [total] (the wrapped function is restored)."""
    real, spent = ops.project_per_sample_grad, [0.0]

    def timed(*a, **kw):
        t0 = time.perf_counter()
        try:
            return real(*a, **kw)
        finally:
            spent[0] += time.perf_counter() - t0

    ops.project_per_sample_grad = timed
    try:
        yield spent
    finally:
        ops.project_per_sample_grad = real


def index_build(model, src, factors_dir: str, spec: IndexSpec) -> None:
    with scratch() as out:
        build_index(model, src, out, UNITS, factors_dir, spec, settings())


def synthetic_index(path: str, rows: int, dim: int, chunk_rows: int = 65536) -> str:
    """A complete one-block index of ``rows`` random float16 rows of ``dim`` coordinates."""
    identity = {"synthetic": [rows, dim]}
    manifest = {"format": FORMAT, "units": ["L0.H0.qk"], "unit_blocks": {"L0.H0.qk": ["L0.H0.qk"]},
                "blocks": {"L0.H0.qk": {"shape": [dim, 1], "k": [dim, 1], "dim": dim}},
                "spec": IndexSpec(k=(dim, 1)).to_dict(), "identity": identity, "fingerprint": str(hash((rows, dim)))}
    store = IndexStore(path, manifest, chunk_rows=chunk_rows)
    store.prepare()
    g = torch.Generator().manual_seed(0)
    for lo in range(0, rows, chunk_rows):
        n = min(chunk_rows, rows - lo)
        store.add(np.arange(lo, lo + n), {"L0.H0.qk": torch.randn(n, dim, generator=g)}, np.zeros(n, np.float32))
    store.flush()
    store.merge(np.arange(rows))
    return path


def query(path: str, n_probes: int = 1) -> np.ndarray:
    """What Index.query does after the probe gradient, for one head: [rows, n_probes] in row order."""
    files = IndexFiles(path)
    W = torch.randn(files.manifest["blocks"]["L0.H0.qk"]["dim"], n_probes)
    scores = -files.product("L0.H0.qk", W).numpy()
    return scores[np.argsort(files.row_ids, kind="stable")]


def probe_gradient_seconds(model) -> float:
    from mda_fast.attribution.score.queries import probe_gradients
    from mda_fast.probes import parse_probe

    mda = MDA(model, UNITS, ["copy_target"], settings=settings())
    t0 = time.perf_counter()
    probe_gradients(mda.model, mda.adapter, mda.blocks, parse_probe("copy_target"), mda.probe_data["copy_target"], 32)
    return time.perf_counter() - t0


# ---- pytest-benchmark ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("bench_index") / "factors")
    return (*setup(d), d)


@pytest.mark.parametrize("what", ["score_pass", "index_build"])
def test_bench_index_build(benchmark, fitted, what):
    model, src, d = fitted
    fn = {"score_pass": lambda: score_pass(model, src, d),
          "index_build": lambda: index_build(model, src, d, IndexSpec())}[what]
    benchmark.pedantic(fn, rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(rows=ROWS, tokens_per_row=TOKENS, units=len(UNITS), threads=torch.get_num_threads())


@pytest.mark.parametrize("k", [16, 32])
def test_bench_index_query(benchmark, tmp_path, k):
    rows = int(os.environ.get("MDA_BENCH_INDEX_ROWS", "100000"))
    path = synthetic_index(str(tmp_path / "index"), rows, k * k)
    benchmark.pedantic(lambda: query(path), rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(rows=rows, dim=k * k, threads=torch.get_num_threads())


# ---- the RESULTS.md table --------------------------------------------------------------------------


def demo_ratio(demo: str, spec: IndexSpec) -> None:
    """B and op 1's share on the demo's trained checkpoint and window (every head, one probe)."""
    from pathlib import Path

    from index_accuracy import load_demo

    model, window, cfg, units, _ = load_demo(Path(demo))
    st = Settings(probe_vocab_low=cfg.probe_low, probe_vocab_high=cfg.probe_high, progress=False)
    with scratch() as d:
        f = os.path.join(d, "factors")
        mda = MDA(model, units, ["copy_target"], settings=st).fit(window, out_dir=f)
        t_score = best_of(lambda: scratch_call(lambda out: mda.score(window, out)), rounds=2)
        with op1_timer() as spent:
            t_build = best_of(lambda: scratch_call(lambda out: mda.index(window, out, spec, units=units)), rounds=2)
    share = spent[0] / 3 / t_build  # the op 1 time of the warm-up and the 2 rounds, per build
    print(f"| demo window {len(window)} x {window.seq_len} rows, {len(units)} heads, {spec.kind} k {spec.k[0]}x{spec.k[1]} | "
          f"score pass {t_score:.2f} s | index build {t_build:.2f} s | B = {t_build / t_score:.2f} | "
          f"op 1 share ~{share:.0%} |", flush=True)


def scratch_call(fn) -> None:
    with scratch() as out:
        fn(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows of the synthetic index")
    ap.add_argument("--ks", default="16,32,64", help="k per side of the synthetic index (dim = k * k)")
    ap.add_argument("--scratch", default=None, help="directory for the synthetic index (default a temporary one)")
    ap.add_argument("--demo", default=None, help="also time score pass vs build on a finished `mda demo --out` window")
    args = ap.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs")
    spec = IndexSpec()
    with scratch() as d:
        model, src = setup(os.path.join(d, "factors"))
        t_score = best_of(lambda: score_pass(model, src, os.path.join(d, "factors")))
        t_build = best_of(lambda: index_build(model, src, os.path.join(d, "factors"), spec))
        with op1_timer() as spent:
            t0 = time.perf_counter()
            index_build(model, src, os.path.join(d, "factors"), spec)
            share = spent[0] / (time.perf_counter() - t0)
        t_probe = probe_gradient_seconds(model)
    print(f"| {ROWS} x {TOKENS} rows, {len(UNITS)} heads, index {spec.kind} k {spec.k[0]}x{spec.k[1]} {spec.dtype} | "
          f"score pass {t_score:.2f} s | index build {t_build:.2f} s | B = {t_build / t_score:.2f} | "
          f"op 1 share {share:.0%} | probe gradient (copy_target, 32 x 64) {t_probe:.2f} s |", flush=True)
    if args.demo:
        demo_ratio(args.demo, spec)
    for k in (int(x) for x in args.ks.split(",") if x):
        with tempfile.TemporaryDirectory(dir=args.scratch) as d:
            t0 = time.perf_counter()
            path = synthetic_index(os.path.join(d, "index"), args.rows, k * k)
            t_write = time.perf_counter() - t0
            size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)
            t_query = best_of(lambda p=path: query(p), rounds=2)
            print(f"| query, {args.rows:,} rows x {k}x{k} = {k * k} float16 | {size / 2**30:.2f} GiB | "
                  f"written in {t_write:.1f} s | query {t_query:.2f} s (page cache warm) |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
