"""mda-fast beside the peers on one workload: time and peak RSS of each run, ratios, score agreement.

Workload: a random Pythia-shaped model, N rows of L tokens, batch B, unit L3.H1.qkvo, probe
copy_target (the MDA default probe set: 32 x 64 tokens). Runs (each in its own process, so the peak
RSS is its own):

    plain        one forward+backward of the summed CE over the rows, every weight gradient (T0),
                 the model as loaded (eager attention)
    plain_sdpa   the same with fused SDPA attention (what mda-fast's passes use): the stricter T0
    one_head     mda-fast fit (default 10% subsample) + score, one head
    one_head_l0  the same for head L0.H1: the backward reaches layer 0, as for all heads, so
                 all_heads / one_head_l0 is the cost of the other heads alone (all_heads / one_head
                 adds the input-gradient backward of layers 0-2)
    all_heads    mda-fast, every head of the model (qkvo) in one run
    whole        mda-fast fit on the whole window (fit_fraction 1: pass 2 shared with scoring)
    layer        mda-fast, every head of layer 3 (qkvo), whole window: the parameters kronfluence sees
                 minus the biases, block-diagonal by head
    modules      mda-fast on kronfluence's exact parameters: units L3.attention.query_key_value and
                 L3.attention.dense (whole modules with their biases), whole window, true Fisher
    kronfluence  EK-FAC (whole window, true Fisher) on layer 3's attention modules
                 (query_key_value, dense), 1 query = the probe set; only when kronfluence imports
    bergson      Bergson's EK-FAC (bergson.hessians: KFAC + eigenvalue correction, whole window,
                 true Fisher, damping 0.1 x mean eigenvalue) on the same two modules with biases,
                 1 query = the probe set's copy-target gradient; only when bergson imports
    pass         one captured pass (true-Fisher labels) of the first batch: the per-pass time and
                 memory; runs on older checkouts too (PYTHONPATH=<checkout>), for before/after

Nothing is installed here: a peer that does not import is skipped (peers.py says how to install
them and what exactly each one computes).
Spearman correlations compare each peer's scores with ``whole`` (one head), with ``layer``
(sum of layer 3's head columns: the same parameters, minus biases, block-diagonal by head) and
with ``modules`` (the same parameters, biases included: with true-Fisher labels the tools differ
only in their label draws), and the two peers with each other.
test_peer_matches_reference_ekfac checks both peers, with data labels (deterministic), against
``reference_ekfac``, the same workload from scratch in float64; test_mda_modules_equal_kronfluence
checks mda-fast's ``modules`` units against kronfluence itself (data labels, deterministic).

Run:  python benchmarks/bench_peers.py --model pythia-14m --rows 16 --len 2049 --batch 8
      python benchmarks/bench_peers.py --one one_head ...    # one run, prints its JSON
      python -m pytest benchmarks/bench_peers.py --benchmark-enable -q   # small shape, pytest-benchmark
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from peers import LAYER, PEERS, PROBE, UNIT, bergson_run, kronfluence_run, reference_ekfac

RUNS = ("plain", "plain_sdpa", "one_head", "one_head_l0", "all_heads", "whole", "layer", "modules", "kronfluence",
        "bergson", "pass")
MODULES = [f"L{LAYER}.attention.query_key_value", f"L{LAYER}.attention.dense"]  # kronfluence's modules, with biases


def make_model(name: str):
    from mda_fast.models import make_tiny_model

    return make_tiny_model(name, seed=0)


def make_rows(n: int, L: int):
    from mda_fast.data import ArraySource

    return ArraySource(np.random.default_rng(0).integers(2, 50277, (n, L)), name="bench")


def plain_step(model, src, bs: int, attention: str | None = None) -> None:
    """Forward + backward of the summed CE with every weight gradient, batch by batch (T0)."""
    if attention:
        model.set_attn_implementation(attention)
    model.zero_grad(set_to_none=True)
    for b in src.batches(bs):
        logits = model(input_ids=b.tokens[:, :-1]).logits
        F.cross_entropy(logits.reshape(-1, logits.shape[-1]), b.tokens[:, 1:].reshape(-1), reduction="sum").backward()
    model.zero_grad(set_to_none=True)


def heads(model, layers=None) -> list[str]:
    c = model.config
    return [f"L{l}.H{h}.qkvo" for l in (layers if layers is not None else range(c.num_hidden_layers))
            for h in range(c.num_attention_heads)]


def mda_run(model, src, bs: int, units, fit_fraction: float = 0.1, **settings) -> np.ndarray:
    """fit + score (Pipeline.run's path: a whole-window fit shares pass 2 with scoring); scores [N, C].
    settings: more Settings (fisher, damping_floor, ...)."""
    from mda_fast.attribution import MDA, Settings

    out = tempfile.mkdtemp(prefix="mda_peers_")
    try:
        s = Settings(batch_size=bs, progress=False, chunk_rows=4096, fit_fraction=fit_fraction, **settings)
        mda = MDA(model, units, [PROBE], settings=s)
        if mda.whole_window(src):
            return mda.fit_and_score(src, out).scores
        return mda.fit(src).score(src, out).scores
    finally:
        shutil.rmtree(out, ignore_errors=True)


def run_one(what: str, model_name: str, n: int, L: int, bs: int) -> dict:
    """Time one run in this process: {seconds, peak_rss_gb, scores (list) | None}."""
    torch.manual_seed(0)
    model, src = make_model(model_name), make_rows(n, L)
    fns = {"plain": lambda: plain_step(model, src, bs),
           "plain_sdpa": lambda: plain_step(model, src, bs, "sdpa"),
           "one_head": lambda: mda_run(model, src, bs, [UNIT]),
           "one_head_l0": lambda: mda_run(model, src, bs, ["L0.H1.qkvo"]),
           "all_heads": lambda: mda_run(model, src, bs, heads(model)),
           "whole": lambda: mda_run(model, src, bs, [UNIT], fit_fraction=1.0),
           "layer": lambda: mda_run(model, src, bs, heads(model, [LAYER]), fit_fraction=1.0).sum(1),
           "modules": lambda: mda_run(model, src, bs, MODULES, fit_fraction=1.0).sum(1),
           "kronfluence": lambda: kronfluence_run(model, src, bs, probe_set(model)),
           "bergson": lambda: bergson_run(model, src, bs, probe_set(model)),
           "pass": lambda: one_pass(model, src, bs)}
    t0 = time.perf_counter()
    res = fns[what]()
    dt = time.perf_counter() - t0
    scores = None if res is None else np.asarray(res, np.float64).reshape(n, -1)[:, 0].tolist()
    return {"run": what, "seconds": dt, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "scores": scores}


def one_pass(model, src, bs: int) -> None:
    """One forward + truncated backward of the first batch with sampled labels (captured_pass)."""
    from mda_fast.attribution.score.forward import captured_pass
    from mda_fast.units import Unit, get_adapter

    adapter = get_adapter(model)
    batch = next(iter(src.batches(bs)))
    captured_pass(model, adapter, Unit.parse(UNIT).blocks(adapter), batch.tokens, batch.row_ids, labels="sampled")


def probe_set(model) -> torch.Tensor:
    """The MDA default probe data of PROBE (32 x 64 tokens) for this model."""
    from mda_fast.attribution import MDA

    return MDA(model, [UNIT], [PROBE]).probe_data[PROBE]


def peer_available(name: str) -> bool:
    try:
        __import__(name)
        return True
    except Exception:
        return False


def spearman(x, y) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


# -- pytest-benchmark: a small shape, each run timed in this process -------------------------------
SMALL = ("pythia-14m", 8, 129, 4)


@pytest.mark.parametrize("what", [r for r in RUNS if r != "pass"])
def test_bench_peers(benchmark, what):
    if what in PEERS:
        pytest.importorskip(what)
    res = benchmark.pedantic(lambda: run_one(what, *SMALL), rounds=1, iterations=1)
    assert res["scores"] is None or np.isfinite(res["scores"]).all()
    benchmark.extra_info.update(model=SMALL[0], rows=SMALL[1], tokens_per_row=SMALL[2], batch_size=SMALL[3],
                                peak_rss_gb=res["peak_rss_gb"])


@pytest.mark.parametrize("peer", list(PEERS))
def test_peer_matches_reference_ekfac(peer):
    """With data labels (deterministic) each peer's scores equal a from-scratch EK-FAC: the peers
    compute the workload peers.py says they do (modules, biases, damping, query, sign)."""
    pytest.importorskip(peer)
    torch.manual_seed(0)
    model, src = make_model(SMALL[0]), make_rows(*SMALL[1:3])
    probe = probe_set(model)
    ref = reference_ekfac(model, src, probe)
    run = {"kronfluence": kronfluence_run, "bergson": bergson_run}[peer]
    got = run(make_model(SMALL[0]), src, SMALL[3], probe, labels="data")
    assert np.abs(got - ref).max() <= 1e-3 * np.abs(ref).max(), (got, ref)


def test_mda_modules_equal_kronfluence():
    """With data labels mda-fast's scores on kronfluence's modules (query_key_value and dense of layer
    3, with biases) equal kronfluence 1.0.1's EK-FAC pairwise scores: to 1e-4 relative with
    kronfluence's float32 defaults (the timed configuration), to 1e-5 with its float64 options."""
    pytest.importorskip("kronfluence")
    torch.manual_seed(0)
    model, src = make_model(SMALL[0]), make_rows(*SMALL[1:3])
    probe = probe_set(model)
    # kronfluence's damping is 0.1 x mean Lambda with no floor: a floor of 1e-30 (Settings needs one > 0)
    ours = mda_run(model, src, SMALL[3], MODULES, fit_fraction=1.0, fisher="empirical", damping_floor=1e-30).sum(1)
    for precise, tol in ((False, 1e-4), (True, 1e-5)):
        kf = kronfluence_run(make_model(SMALL[0]), src, SMALL[3], probe, labels="data", precise=precise)
        err = np.abs(ours - kf).max() / np.abs(kf).max()
        print(f"mda-fast vs kronfluence (precise={precise}): max relative difference {err:.2e}")
        assert err <= tol, (ours, kf)


# -- the side-by-side table -------------------------------------------------------------------------
def _subprocess(what: str, a) -> dict:
    cmd = [sys.executable, __file__, "--one", what, "--model", a.model, "--rows", str(a.rows), "--len", str(a.len),
           "--batch", str(a.batch)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        return {"run": what, "error": (p.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def table(a) -> None:
    print(f"{a.model}, {a.rows} rows x {a.len} tokens, batch {a.batch}, unit {UNIT}, probe {PROBE}; torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    res = {}
    for what in a.runs:
        if what in PEERS and not peer_available(what):
            res[what] = {"run": what, "error": f"{what} not importable ({PEERS[what]})"}
        else:
            res[what] = _subprocess(what, a)
        print(json.dumps({k: v for k, v in res[what].items() if k != "scores"}), flush=True)
    t0 = res.get("plain", {}).get("seconds")
    ts = res.get("plain_sdpa", {}).get("seconds")
    print("| run | time (s) | / plain (eager) | / plain (sdpa) | peak RSS (GB) |\n|---|---|---|---|---|")
    for what, r in res.items():
        if "error" in r:
            print(f"| {what} | not run: {r['error']} | | | |")
            continue
        ratio = lambda t: f"{r['seconds'] / t:.2f}" if t else "-"  # noqa: E731
        print(f"| {what} | {r['seconds']:.1f} | {ratio(t0)} | {ratio(ts)} | {r['peak_rss_gb']:.2f} |")
    scores = lambda what: res.get(what, {}).get("scores")  # noqa: E731
    for peer in PEERS:
        for other in ("whole", "layer", "modules") + tuple(PEERS)[:tuple(PEERS).index(peer)]:  # then each earlier peer
            if scores(peer) and scores(other):
                print(f"Spearman({peer}, {other}) = {spearman(scores(peer), scores(other)):.3f}")
    for peer in PEERS:
        for ours in ("whole", "modules"):
            if "seconds" in res.get(peer, {}) and "seconds" in res.get(ours, {}):
                print(f"{peer} / mda-fast {ours}: time {res[peer]['seconds'] / res[ours]['seconds']:.2f}x, "
                      f"peak RSS {res[peer]['peak_rss_gb'] / res[ours]['peak_rss_gb']:.2f}x")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="pythia-14m")
    p.add_argument("--rows", type=int, default=16)
    p.add_argument("--len", type=int, default=2049)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--runs", nargs="+", default=[r for r in RUNS if r != "pass"], choices=RUNS)
    p.add_argument("--one", choices=RUNS, help="time one run in this process and print its JSON")
    a = p.parse_args(argv)
    if a.one:
        print(json.dumps(run_one(a.one, a.model, a.rows, a.len, a.batch)))
    else:
        table(a)


if __name__ == "__main__":
    main()
