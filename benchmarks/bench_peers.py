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
    kronfluence  EK-FAC (whole window, true Fisher) on layer 3's attention modules
                 (query_key_value, dense), 1 query = the probe set; only when kronfluence imports
    bergson      Bergson's EK-FAC (bergson.hessians: KFAC + eigenvalue correction, whole window,
                 true Fisher, damping 0.1 x mean eigenvalue) on the same two modules with biases,
                 1 query = the probe set's copy-target gradient; only when bergson imports
    pass         one captured pass (true-Fisher labels) of the first batch: the per-pass time and
                 memory; runs on older checkouts too (PYTHONPATH=<checkout>), for before/after

Nothing is installed here: a peer that does not import is skipped (`pip install .[bench]` adds
kronfluence). Bergson is not in that group: its wheel requires torchvision, torchaudio and
bitsandbytes, and pip would replace the CPU torch with a CUDA build to satisfy them; the workload
imports none of the three, so install it beside the environment instead, e.g.

    pip install --no-deps --target /tmp/bergson_site bergson==2.5.1 peft ml_dtypes jaxtyping
    pip install --no-deps --target /tmp/bergson_site wadler_lindig natsort petname simple-parsing docstring_parser
    PYTHONPATH=/tmp/bergson_site:$PWD python benchmarks/bench_peers.py ...

(its other requirements - accelerate, datasets, transformers, huggingface-hub, jinja2, scipy,
pyarrow - come from the environment; ml_dtypes is the one compiled wheel, built against numpy
only. ``bergson.hessians.pipeline`` and the CLI also import torchopt, which this run avoids by
driving the hessian, query and scoring steps through the Python API with the model object: no
shim, no stub.)
Spearman correlations compare each peer's scores with ``whole`` (one head) and with ``layer``
(sum of layer 3's head columns: the same parameters, minus biases, block-diagonal by head), and
the two peers with each other.
test_peer_matches_reference_ekfac checks both peers, with data labels (deterministic), against
``reference_ekfac``, the same workload from scratch in float64.

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

UNIT, LAYER, PROBE = "L3.H1.qkvo", 3, "copy_target"
RUNS = ("plain", "plain_sdpa", "one_head", "one_head_l0", "all_heads", "whole", "layer", "kronfluence", "bergson",
        "pass")
PEERS = {"kronfluence": "pip install .[bench]",  # run -> how to get it when it does not import
         "bergson": "install it beside the environment and set PYTHONPATH: see this file's docstring"}


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


def mda_run(model, src, bs: int, units, fit_fraction: float = 0.1) -> np.ndarray:
    """fit + score (Pipeline.run's path: a whole-window fit shares pass 2 with scoring); scores [N, C]."""
    from mda_fast.attribution import MDA, Settings

    out = tempfile.mkdtemp(prefix="mda_peers_")
    try:
        s = Settings(batch_size=bs, progress=False, chunk_rows=4096, fit_fraction=fit_fraction)
        mda = MDA(model, units, [PROBE], settings=s)
        if mda.whole_window(src):
            return mda.fit_and_score(src, out).scores
        return mda.fit(src).score(src, out).scores
    finally:
        shutil.rmtree(out, ignore_errors=True)


def kronfluence_run(model, src, bs: int, probe_tokens: torch.Tensor, labels: str = "sampled") -> np.ndarray:
    """kronfluence EK-FAC on layer LAYER's attention modules, whole window, damping 0.1 x mean
    eigenvalue (as mda-fast); scores [N] in mda-fast's sign. labels "data": empirical Fisher."""
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.task import Task

    from mda_fast.probes import parse_probe, probe_forward

    probe = parse_probe(PROBE)
    mods = [f"gpt_neox.layers.{LAYER}.attention.query_key_value", f"gpt_neox.layers.{LAYER}.attention.dense"]

    class LMTask(Task):  # the row loss of mda-fast (summed CE; labels sampled for the true Fisher)
        def compute_train_loss(self, batch, model, sample=False):
            logits = model(input_ids=batch[:, :-1]).logits.float()
            flat = logits.reshape(-1, logits.shape[-1])
            if sample:
                with torch.no_grad():
                    labels = torch.multinomial(torch.softmax(flat.detach(), -1), 1).squeeze(-1)
            else:
                labels = batch[:, 1:].reshape(-1)
            return F.cross_entropy(flat, labels, reduction="sum")

        def compute_measurement(self, batch, model):  # batch: probe rows [q, T]; kronfluence takes
            return probe_forward(model, probe, batch)  # each row as one query (see the summed scores)

        def get_influence_tracked_modules(self):
            return mods

    rows = [torch.as_tensor(r) for r in src.read(np.arange(len(src)))]
    task = LMTask()
    model = prepare_model(model, task)
    out = tempfile.mkdtemp(prefix="kf_peers_")
    try:
        an = Analyzer("bench", model=model, task=task, cpu=True, disable_tqdm=True, output_dir=out)
        fargs = FactorArguments(strategy="ekfac", covariance_max_examples=None, lambda_max_examples=None,
                                use_empirical_fisher=labels == "data")
        an.fit_all_factors("ekfac", dataset=rows, per_device_batch_size=bs, factor_args=fargs, overwrite_output_dir=True)
        queries = list(probe_tokens)  # one query per probe row: kronfluence splits per-sample gradients
        # along the model's batch dimension, so a whole [32, 64] probe batch as one query would count
        # only its first row; the influence on the mean f over rows is the mean of the row scores
        an.compute_pairwise_scores("s", factors_name="ekfac", query_dataset=queries, train_dataset=rows,
                                   per_device_query_batch_size=len(queries), per_device_train_batch_size=bs,
                                   score_args=ScoreArguments(damping_factor=None), overwrite_output_dir=True)
        # kronfluence scores grad f^T H^-1 grad L (positive: up-weighting the row lowers f); mda-fast's
        # sign is the opposite (positive: the row strengthens f), so negate to compare
        return -an.load_pairwise_scores("s")["all_modules"].double().mean(0).numpy()  # f: the probe's mean
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _bergson_query_rows(probe_tokens: torch.Tensor):
    """copy_target's probe rows [n, T] as a Bergson query dataset: input t's logit is scored against
    label t + 1 (-100: not scored); Bergson drops the last logit, so each row gets one pad token to
    keep its last position's target."""
    from datasets import Dataset

    from mda_fast.probes import parse_probe

    tgt, valid = parse_probe(PROBE).targets(probe_tokens)
    n, T = probe_tokens.shape
    ids = torch.cat([probe_tokens, probe_tokens.new_zeros(n, 1)], 1)
    targets = torch.full_like(ids, -100)
    targets[:, 1:] = torch.where(valid, tgt, torch.full_like(tgt, -100))
    return Dataset.from_dict({"input_ids": ids.tolist(), "labels": targets.tolist(), "length": [T + 1] * n})


def bergson_run(model, src, bs: int, probe_tokens: torch.Tensor, labels: str = "sampled") -> np.ndarray:
    """Bergson EK-FAC on layer LAYER's attention modules (query_key_value, dense, with biases, as
    kronfluence tracks them), whole window, true Fisher (sampled labels; "data": empirical Fisher),
    damping 0.1 x mean eigenvalue; one query = the probe set; scores [N] in mda-fast's sign.

    Driven through Bergson's Python API with the model object (no hub, no CLI): the body of
    ``bergson.hessians.hessian_approximations.hessian_worker`` (``fit_factored_hessians``: KFAC
    covariances, eigendecomposition, eigenvalue-correction pass) minus its model/data loading and
    process launch, then an ``InMemoryCollector`` for the query (its Builder applies the inverse
    EK-FAC and means the probe rows) and one for the training rows with an on-the-fly ``Scorer``.
    copy_target is f = sum of log p(induction target), i.e. minus a CE with those targets as labels,
    so the query is Bergson's own CE query gradient on the probe rows labelled with the targets.
    """
    from datasets import Dataset

    from bergson.collector.collector import CollectorComputer
    from bergson.collector.in_memory_collector import InMemoryCollector
    from bergson.config import HessianConfig, IndexConfig, InversionConfig, PreprocessConfig
    from bergson.gradients import GradientProcessor
    from bergson.hessians.hessian_approximations import fit_factored_hessians
    from bergson.score.score_writer import InMemorySequenceScoreWriter
    from bergson.score.scorer import Scorer

    mods = {f"layers.{LAYER}.attention.query_key_value", f"layers.{LAYER}.attention.dense"}  # in model.base_model
    rows = src.read(np.arange(len(src)))
    train = Dataset.from_dict({"input_ids": rows.tolist(), "length": [rows.shape[1]] * len(rows)})
    batches = [list(range(i, min(i + bs, len(rows)))) for i in range(0, len(rows), bs)]
    query, n = _bergson_query_rows(probe_tokens), probe_tokens.shape[0]

    # what bergson's setup_model_and_peft does after loading: no weight .grad, hooks see every gradient
    model.requires_grad_(False)
    model.get_input_embeddings().requires_grad_(True)
    out = tempfile.mkdtemp(prefix="bergson_peers_")
    try:
        def cfg(name: str) -> IndexConfig:  # summed CE per row, no projection, biases as kronfluence
            c = IndexConfig(run_path=f"{out}/{name}", loss_fn="ce", loss_reduction="sum", projection_dim=0,
                            include_bias=True)
            c.partial_run_path.mkdir(parents=True)
            return c

        def collect(data, c, batches, desc, **kw):
            col = InMemoryCollector(model=model.base_model, data=data, cfg=c, target_modules=mods,
                                    processor=GradientProcessor(include_bias=True), **kw)
            CollectorComputer(model, data, collector=col, batches=batches, cfg=c).run_with_collector_hooks(desc)
            return col

        hcfg = cfg("hessian")
        hess = str(hcfg.partial_run_path)
        fit_factored_hessians(model, train, hcfg,
                              HessianConfig(method="kfac", ev_correction=True, use_dataset_labels=labels == "data"),
                              target_modules=mods, attention_cfgs={}, batches=batches, path=hess,
                              do_eigendecomposition=True)
        pre = PreprocessConfig(hessian_path=hess, ev_correction=True, aggregation="mean",
                               inversion_cfg=InversionConfig(inversion="damped_inverse", damping_factor=0.1))
        q = collect(query, cfg("query"), [list(range(n))], "query", preprocess_cfg=pre).gradients  # {module: [1, dim]}
        scorer = Scorer(q, sorted(q), InMemorySequenceScoreWriter(len(rows), 1), torch.device("cpu"), torch.float32)
        scores = collect(train, cfg("scores"), batches, "scores", scorer=scorer).scores
        # score = (H^-1 grad CE_probe) . grad CE_row = -grad f^T H^-1 grad L: mda-fast's sign already
        return scores[:, 0].double().numpy()
    finally:
        shutil.rmtree(out, ignore_errors=True)


def reference_ekfac(model, src, probe_tokens: torch.Tensor) -> np.ndarray:
    """The peers' workload from scratch in float64 with data labels (empirical Fisher), the check of
    both peers: per module [W | b] of layer LAYER's attention, Q_A, Q_G = eigenvectors of the sums of
    a^T a and g^T g over the rows' positions, lambda = mean over rows of (Q_G^T grad_n Q_A)^2,
    damping 0.1 x mean lambda, query = grad of the probe set's mean f; scores [N] in mda-fast's sign."""
    from mda_fast.probes import parse_probe, probe_forward

    att = model.gpt_neox.layers[LAYER].attention
    mods = (att.query_key_value, att.dense)
    seen = {}
    hooks = [m.register_forward_hook(lambda m, i, o: seen.__setitem__((m, "a"), i[0].detach())) for m in mods]
    hooks += [m.register_full_backward_hook(lambda m, gi, go: seen.__setitem__((m, "g"), go[0].detach())) for m in mods]
    try:
        per_row = {m: [] for m in mods}  # (a [T, I+1], g [T, O]) of each row's summed CE
        for r in torch.as_tensor(src.read(np.arange(len(src)))):
            logits = model(input_ids=r[None, :-1]).logits
            F.cross_entropy(logits[0], r[1:], reduction="sum").backward()
            for m in mods:
                a = seen[m, "a"][0].double()
                per_row[m].append((torch.cat([a, a.new_ones(len(a), 1)], 1), seen[m, "g"][0].double()))
        f = probe_forward(model, parse_probe(PROBE), probe_tokens) / len(probe_tokens)
        qs = torch.autograd.grad(f, [p for m in mods for p in (m.weight, m.bias)])
    finally:
        for h in hooks:
            h.remove()
        model.zero_grad(set_to_none=True)
    scores = np.zeros(len(src))
    for k, m in enumerate(mods):
        q = torch.cat([qs[2 * k], qs[2 * k + 1][:, None]], 1).double()
        qa = torch.linalg.eigh(sum(a.T @ a for a, _ in per_row[m]))[1]
        qg = torch.linalg.eigh(sum(g.T @ g for _, g in per_row[m]))[1]
        grads = [g.T @ a for a, g in per_row[m]]
        lam = sum((qg.T @ x @ qa) ** 2 for x in grads) / len(grads)
        hq = qg @ ((qg.T @ q @ qa) / (lam + 0.1 * lam.mean())) @ qa.T
        scores -= np.array([float((hq * x).sum()) for x in grads])
    return scores


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
    from mda_fast.attribution.forward import captured_pass
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
    compute the workload this file says they do (modules, biases, damping, query, sign)."""
    pytest.importorskip(peer)
    torch.manual_seed(0)
    model, src = make_model(SMALL[0]), make_rows(*SMALL[1:3])
    probe = probe_set(model)
    ref = reference_ekfac(model, src, probe)
    got = globals()[f"{peer}_run"](make_model(SMALL[0]), src, SMALL[3], probe, labels="data")
    assert np.abs(got - ref).max() <= 1e-3 * np.abs(ref).max(), (got, ref)


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
        for other in ("whole", "layer") + tuple(PEERS)[:tuple(PEERS).index(peer)]:  # then each earlier peer
            if scores(peer) and scores(other):
                print(f"Spearman({peer}, {other}) = {spearman(scores(peer), scores(other)):.3f}")
    for peer in PEERS:
        if "seconds" in res.get(peer, {}) and "seconds" in res.get("whole", {}):
            print(f"{peer} / whole-window mda-fast = {res[peer]['seconds'] / res['whole']['seconds']:.2f}")


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
