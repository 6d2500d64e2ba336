"""Train the demo model from scratch on the embedded corpus and find where its induction head forms.

    python -m mda_fast.demo.train_demo --out runs/demo [--config my.yaml] [--steps 1200] [--seed 0]

Steps: build the corpus (``<out>/corpus/demo.bin/.idx`` + kinds) -> train a GPT-NeoX from scratch
with Pythia-style checkpoints (``<out>/checkpoints/step{N}``, tokenizer included) -> measure every
head's induction score at each checkpoint -> ``<out>/induction.json`` with the curve of the best
last-layer head and the formation window (score rising from < formation_low to > formation_high).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from mda_fast.codec import byte_tokenizer
from mda_fast.data import MMIdxSource
from mda_fast.demo.config import DemoConfig, load_demo_config
from mda_fast.demo.corpus import build_corpus
from mda_fast.demo.measure import formation_window, measure_heads
from mda_fast.io import read_json, write_json
from mda_fast.models import neox_init
from mda_fast.training import list_checkpoints, load_weights, pythia_save_steps, train


def corpus_prefix(out: str | Path) -> Path:
    return Path(out) / "corpus" / "demo"


def ensure_corpus(cfg: DemoConfig, out: str | Path) -> Path:
    """Build the corpus unless one with the same settings is already there; returns its prefix."""
    prefix = corpus_prefix(out)
    meta_path = Path(str(prefix) + ".kinds.json")
    if meta_path.is_file() and Path(str(prefix) + ".bin").is_file():
        meta = json.loads(meta_path.read_text())
        if (meta.get("seed"), meta.get("n_rows"), meta.get("seq_len")) == \
                (cfg.corpus_seed, cfg.n_rows, cfg.seq_len) and meta.get("mix_requested") == cfg.mix \
                and meta.get("repeat_rows") == cfg.repeat_rows \
                and meta.get("repeat_span") == list(cfg.repeat_span) and meta.get("repeat_gap") == list(cfg.repeat_gap) \
                and meta.get("strata_requested") == cfg.strata:
            return prefix
    info = build_corpus(prefix, cfg.n_rows, cfg.seq_len, cfg.corpus_seed, cfg.mix,
                        repeat_rows=cfg.repeat_rows, repeat_span=cfg.repeat_span, repeat_gap=cfg.repeat_gap,
                        strata=cfg.strata)
    meta = read_json(meta_path)
    meta["mix_requested"], meta["strata_requested"] = cfg.mix, cfg.strata
    write_json(meta_path, meta)
    return info.prefix


def new_model(cfg: DemoConfig):
    from transformers import GPTNeoXForCausalLM  # imported on use: transformers takes seconds to import and most commands never need it

    torch.manual_seed(cfg.model_seed)
    # sdpa for training speed; measurement switches to eager for the patterns
    model = GPTNeoXForCausalLM._from_config(cfg.model_config(), attn_implementation="sdpa")
    return neox_init(model, seed=cfg.model_seed) if cfg.init == "neox" else model


class HeadTracker:
    """Callback: induction and previous-token scores of every head at the given steps.

    ``self.scores[step] = {"induction": [L][H], "previous_token": [L][H]}`` (one eval pass each).
    Once a last-layer head's induction score exceeds ``formation_high``, training stops
    ``after_formed`` steps later (``stop_requested``; never with ``after_formed`` 0).
    """

    def __init__(self, cfg: DemoConfig, steps):
        self.cfg, self.steps, self.scores = cfg, set(steps), {}
        self.formed_at: int | None = None
        self.stop_requested = False

    def _measure(self, step, model):
        self.scores[step] = measure_heads(model, self.cfg)
        if self.formed_at is None and max(self.scores[step]["induction"][-1]) > self.cfg.formation_high:
            self.formed_at = step
        if self.cfg.after_formed and self.formed_at is not None:
            self.stop_requested = step >= self.formed_at + self.cfg.after_formed

    def on_train_start(self, step, model):
        if step in self.steps:
            self._measure(step, model)

    def on_step_end(self, step, model, metrics):
        if step in self.steps:
            self._measure(step, model)


# The units the demo attributes: the induction head (best last-layer prefix-matching score at the
# end of training) over its formation window, and as a second unit in the same pass the
# previous-token head it composes with (best previous-token score in a layer below). When no
# induction head forms, the previous-token head that formed (any layer) is the unit.
UNIT_PROBES = {"induction": "copy_target", "previous_token": "prev_attn"}


def _candidate(cfg: DemoConfig, scores: dict, metric: str, layers) -> dict:
    lo, hi = (cfg.formation_low, cfg.formation_high) if metric == "induction" else (cfg.prev_low, cfg.prev_high)
    final = scores[max(scores)][metric]
    layer, head = max(((l, h) for l in layers for h in range(cfg.heads)), key=lambda lh: final[lh[0]][lh[1]])
    curve = {int(s): float(v[metric][layer][head]) for s, v in sorted(scores.items())}
    probe = UNIT_PROBES[metric] if metric == "induction" else f"{UNIT_PROBES[metric]}:L{layer}.H{head}"
    return {"metric": metric, "probe": probe, "layer": layer, "head": head, "curve": curve,
            "window": formation_window(curve, lo, hi)}


def summarize(cfg: DemoConfig, scores: dict) -> dict:
    """The primary unit (metric, probe, layer, head, curve, formation window) at the top level, and
    ``units``: [primary, second unit or nothing]."""
    last = cfg.layers - 1
    induction = _candidate(cfg, scores, "induction", [last])       # induction needs a layer below
    if induction["window"] is not None and last > 0:
        units = [induction, _candidate(cfg, scores, "previous_token", range(last))]
    else:
        prev = _candidate(cfg, scores, "previous_token", range(cfg.layers))
        units = [prev] if prev["window"] is not None else [induction]
    found = dict(units[0], units=units)
    found["induction_best"] = {int(s): float(max(v["induction"][last])) for s, v in sorted(scores.items())}
    return found


def run_demo_training(out: str | Path, cfg: DemoConfig | None = None, progress: bool = True,
                      resume: bool = True) -> dict:
    """Corpus -> training with checkpoints -> induction curve; returns (and writes) the summary."""
    cfg = cfg or DemoConfig()
    out = Path(out)
    t0 = time.perf_counter()
    prefix = ensure_corpus(cfg, out)
    t_corpus = time.perf_counter() - t0
    source = MMIdxSource(prefix, seq_len=cfg.seq_len, vocab_size=cfg.vocab_size)
    save = pythia_save_steps(cfg.steps, every=cfg.save_every)
    tracker = HeadTracker(cfg, save)
    # checkpoints of an earlier (killed) run: measured from disk first, so an early stop is decided
    # as if the run had not been interrupted
    for step, path in list_checkpoints(out / "checkpoints").items():
        if step in tracker.steps and resume:
            m = new_model(cfg)
            load_weights(path, m)
            tracker._measure(step, m)
    model = new_model(cfg)
    t1 = time.perf_counter()
    history = []
    if not tracker.stop_requested:
        res = train(model, source, (0, cfg.steps), cfg.rows_per_step, cfg.optim_config(),
                    out_dir=out / "checkpoints", save_steps=save, callbacks=[tracker], resume=resume,
                    seed=cfg.model_seed, tokenizer=byte_tokenizer(), progress=progress,
                    extra_state={"demo_config": cfg.to_dict()})
        history = res.history
    t_train = time.perf_counter() - t1
    secs = [h["sec"] for h in history]
    summary = summarize(cfg, tracker.scores)
    summary.update({
        "config": cfg.to_dict(), "corpus_seconds": t_corpus, "train_seconds": t_train,
        "sec_per_step": (sum(secs) / len(secs)) if secs else None,
        "final_loss": history[-1]["loss"] if history else None, "last_step": max(tracker.scores),
        "scores": {int(k): v for k, v in sorted(tracker.scores.items())},
    })
    write_json(out / "induction.json", summary)
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--config", default=None, help="YAML overriding mda_fast/demo/demo.yaml")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--seed", type=int, default=None, help="model and corpus seed")
    ap.add_argument("--no-resume", action="store_true")
    args = ap.parse_args(argv)
    over = {}
    if args.steps is not None:
        over["steps"] = args.steps
    if args.seed is not None:
        over["model_seed"] = over["corpus_seed"] = args.seed
    cfg = load_demo_config(args.config, **over)
    s = run_demo_training(args.out, cfg, resume=not args.no_resume)
    print(f"{s['metric']} head L{s['layer']}.H{s['head']}: " +
          " ".join(f"{k}:{v:.2f}" for k, v in s["curve"].items() if k % 100 == 0 or k == cfg.steps))
    print(f"formation window: {s['window']}  sec/step: {s['sec_per_step']:.3f}  "
          f"corpus: {s['corpus_seconds']:.1f}s  train: {s['train_seconds']:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
