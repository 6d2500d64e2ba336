"""End-to-end attribution cost relative to training compute (issue 3 targets: R1 <= 1.0, R2 <= 1.5).

    R1 = time(fit + score of ONE head over N rows) / time(one plain forward+backward over the same rows)
    R2 = time(fit + score of ALL heads, one pass)  / time(fit + score of one head)

fit = EK-FAC (2 passes over the default 10% subsample) + probe gradient (copy_target, 32 x 64
tokens) + preconditioning; score = one pass over all N rows writing the score store. The plain
forward+backward computes every weight gradient at the same batch size (one training step's
compute, without the optimizer). Models are random (timings do not depend on the weights).

Run:  python -m pytest benchmarks/bench_attribution.py --benchmark-enable -q
      python benchmarks/bench_attribution.py      # prints the markdown table of results_attribution.md
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mda_fast.attribution import MDA, Settings
from mda_fast.data import ArraySource
from mda_fast.models import make_tiny_model
from timing import best_of

# name -> (make model, rows N, tokens per row, batch size, "one head" unit)
CASES = {
    # the demo model (mda-reference §4): GPT-NeoX 2 x 128, 4 heads, byte vocabulary, rows of 128 tokens
    "demo": (lambda: make_tiny_model("neox", seed=0, hidden_size=128, num_attention_heads=4,
                                     intermediate_size=256, max_position_embeddings=256), 1024, 129, 32, "L1.H0.qk"),
    # Pythia-70M shape (6 x 512, 8 heads, vocab 50304), short rows on the CPU
    "pythia-70m": (lambda: make_tiny_model("pythia-70m", seed=0), 64, 65, 8, "L3.H0.qk"),
}


def rows_for(name):
    _, n, L, _, _ = CASES[name]
    model_vocab = 256 if name == "demo" else 50277
    return ArraySource(np.random.default_rng(0).integers(2, model_vocab, (n, L)), name=name)


def plain_step(model, src, bs):
    """Forward + backward of the summed CE with every weight gradient, batch by batch."""
    model.zero_grad(set_to_none=True)
    for b in src.batches(bs):
        t = b.tokens
        logits = model(input_ids=t[:, :-1]).logits
        F.cross_entropy(logits.reshape(-1, logits.shape[-1]), t[:, 1:].reshape(-1), reduction="sum").backward()
    model.zero_grad(set_to_none=True)


def attribute(model, src, bs, units):
    out = tempfile.mkdtemp(prefix="mda_bench_")
    try:
        mda = MDA(model, units, ["copy_target"], settings=Settings(batch_size=bs, progress=False, chunk_rows=4096))
        mda.fit(src).score(src, out)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def all_heads(model):
    c = model.config
    return [f"L{l}.H{h}.qk" for l in range(c.num_hidden_layers) for h in range(c.num_attention_heads)]


def _setup(name):
    make, _, _, bs, one = CASES[name]
    return make(), rows_for(name), bs, one


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("what", ["plain", "one_head", "all_heads"])
def test_bench_attribution(benchmark, name, what):
    model, src, bs, one = _setup(name)
    fn = {"plain": lambda: plain_step(model, src, bs), "one_head": lambda: attribute(model, src, bs, [one]),
          "all_heads": lambda: attribute(model, src, bs, all_heads(model))}[what]
    benchmark.pedantic(fn, rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(rows=len(src), tokens_per_row=src.seq_len, batch_size=bs)




def main():
    import platform

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs")
    print("| model | rows x tokens | batch | plain fwd+bwd (s) | one head: fit+score (s) | all heads (s) | R1 | R2 |")
    print("|---|---|---|---|---|---|---|---|")
    for name in CASES:
        model, src, bs, one = _setup(name)
        tp = best_of(lambda: plain_step(model, src, bs))
        t1 = best_of(lambda: attribute(model, src, bs, [one]))
        ta = best_of(lambda: attribute(model, src, bs, all_heads(model)))
        print(f"| {name} ({one} / {len(all_heads(model))} heads) | {len(src)} x {src.seq_len} | {bs} | {tp:.3f} | "
              f"{t1:.3f} | {ta:.3f} | {t1 / tp:.2f} | {ta / t1:.2f} |", flush=True)


if __name__ == "__main__":
    main()
