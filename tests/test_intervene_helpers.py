"""Shared builders for the intervene/analyze/augment/report tests (no tests here).

A tiny GPT-NeoX (byte vocabulary 257), a .bin/.idx data file, checkpoints written by
mda_fast.training, and a score run directory in the layout ``attribution.store.load_scores`` reads.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

SEQ = 17
RPS = 4


def write_scores(run_dir, row_ids, scores, model, window, units=("L1.H0.qk",), columns=None, data=None,
                 weights=None):
    """A complete score run directory: manifest.json + scores.npz. Its identity records ``weights``
    (default: those of checkpoint ``model`` when it is one) and ``data`` (a window's RowSource)."""
    from mda_fast.data.fingerprint import window_fingerprint
    from mda_fast.models.fingerprint import checkpoint_weights

    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    scores = np.asarray(scores, np.float32).reshape(len(row_ids), -1)
    columns = list(columns or [f"{units[0]}/copy"][: scores.shape[1]])
    np.savez(run / "scores.npz", row_ids=np.asarray(row_ids, np.int64), scores=scores,
             loss=np.zeros(len(row_ids), np.float32), columns=np.array(columns))
    ids = np.asarray(row_ids, np.int64)
    if weights is None and (Path(model) / "config.json").is_file():
        weights = checkpoint_weights(model)
    identity = {"weights": weights, "data": None if data is None else window_fingerprint(data)}
    (run / "manifest.json").write_text(json.dumps({
        "model": str(model), "units": list(units), "columns": columns, "complete": True, "identity": identity,
        "window": {"name": "window", "rows": int(ids.size), "first_row_id": int(ids.min()),
                   "last_row_id": int(ids.max()), "steps": list(window)}}))
    return run


def tiny_setup(tmp: Path, n_rows: int = 120, ckpt_steps=(0, 2), hidden: int = 32):
    """(data prefix, checkpoints dir, rows) with checkpoints at ``ckpt_steps``."""
    from transformers import AutoModelForCausalLM

    from mda_fast.data import open_source, write_mmidx
    from mda_fast.models.configs import tiny_neox_config
    from mda_fast.training import OptimConfig, train

    rows = np.random.default_rng(0).integers(32, 127, size=(n_rows, SEQ))
    write_mmidx(tmp / "data", list(rows), dtype=np.uint16)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(
        tiny_neox_config(vocab_size=257, hidden_size=hidden, intermediate_size=2 * hidden),
        attn_implementation="eager")
    opt = OptimConfig(lr=3e-3, schedule="constant", weight_decay=0.01)
    train(model, open_source(tmp / "data"), (0, max(ckpt_steps)), RPS, opt, out_dir=tmp / "ck",
          save_steps=list(ckpt_steps))
    return tmp / "data", tmp / "ck", rows


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models are ~50x slower with 2 OpenMP threads on a busy 2-core machine; use 1."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
