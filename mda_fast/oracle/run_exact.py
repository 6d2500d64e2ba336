"""The logic of an ``mda exact`` command: the exact metagradient of a window of a run trained by
``training.train`` (its ``step{N}`` checkpoints carry the optimizer state and settings).

    run_exact("runs/demo/checkpoints", "runs/demo/corpus/demo", start=200, end=300,
              target="induction:L1.H2", out="runs/demo/exact")

writes ``out/metagrad.npz`` + ``out/manifest.json`` (``sweep_store``) and returns the MetaGradient.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mda_fast.data import open_source
from mda_fast.errors import ConfigError
from mda_fast.models import load_model
from mda_fast.oracle.metagradient import MetaGradient, exact_metagradient
from mda_fast.oracle.targets import InductionScore, ProbeTarget
from mda_fast.probes import make_data, parse_probe
from mda_fast.training.checkpoints import read_state, step_dir
from mda_fast.training.optim import OptimConfig
from mda_fast.units import Unit


def parse_target(spec: str, n: int, half: int, vocab_low: int, vocab_high: int, seed: int):
    """``induction:L1.H2`` (prefix-matching score of that head on n sequences of ``half`` random
    tokens repeated twice) or a probe spec (``copy_target``, ``prev_attn:L0.H3``), averaged over n."""
    if spec.lower().startswith("induction:"):
        unit = Unit.parse(spec.split(":", 1)[1])
        tokens = make_data(n, 2 * half, vocab_low, vocab_high, seed)
        return InductionScore(unit.layer, unit.head, tokens)
    probe = parse_probe(spec)
    return ProbeTarget(probe, probe.make_data(n, 2 * half, vocab_low, vocab_high, seed))


def run_exact(checkpoints, data, start: int, end: int, target: str, out, *, every: int | None = None,
              save_every: int = 25, micro_batch: int | None = None, probe_n: int = 32, probe_half: int = 32,
              vocab_low: int = 32, vocab_high: int = 127, probe_seed: int = 12345,
              attention: str | None = None) -> MetaGradient:
    """Exact metagradient of ``target`` at step ``end`` w.r.t. the weights of the rows of steps
    [start, end) of ``data`` (rows per step and optimizer settings from checkpoint ``step{start}``).
    ``attention``: the attention implementation training ran ("sdpa" for the demo), so the replayed
    states are bitwise the trained ones; None keeps load_model's eager attention (same function,
    other rounding)."""
    ckpt = step_dir(checkpoints, start)
    if not Path(ckpt).is_dir():
        raise ConfigError(f"no checkpoint {ckpt}; the window must start at a saved step.")
    state = read_state(ckpt)
    if "optim" not in state or "rows_per_step" not in state:
        raise ConfigError(f"checkpoint {ckpt} records no optimizer settings; it was not written by training.train.")
    model, _ = load_model(str(ckpt), load_tokenizer=False)
    if attention is not None:
        model.set_attn_implementation(attention)
    source = open_source(data, seq_len=None, vocab_size=int(model.config.vocab_size))
    tgt = parse_target(target, probe_n, probe_half, vocab_low, vocab_high, probe_seed)
    optim = OptimConfig.from_dict(state["optim"])
    torch.manual_seed(int(state.get("seed", 0)))
    return exact_metagradient(model, source, (start, end), int(state["rows_per_step"]), optim, tgt,
                              init_from=ckpt, micro_batch=micro_batch, every=every, out_dir=out,
                              save_every=save_every)
