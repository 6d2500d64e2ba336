"""Metasmoothness, cost and LDS of the exact oracle on a window of the demo run (one torch thread).

    python benchmarks/oracle_metasmoothness.py --demo /tmp/demo --start 300 --end 340 \
        [--smooth] [--eps 1e-8] [--directions 3] [--hs 0.01,0.03,0.1,0.3] [--lds 8] --out res.json

The demo run (``mda_fast.demo.train_demo``) supplies the corpus, the checkpoint at ``start`` (weights
+ Adam state) and the unit (its induction head). The window is retrained from that checkpoint with
the demo's optimizer (``--smooth``: SmoothAdamW, a new trajectory for the window), the oracle gives
g_i = d induction(theta_end) / d w_i, and for random directions d (+-1 on a random 10% of rows) the
retrained change target(1 + h d) - target(1) is compared with h <g, d>. ``--lds``: random 10%
removals (w = 0; ``--lds-fraction``), predicted -sum g_i over the removed rows vs the retrained change (Spearman).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr

from mda_fast.data import MMIdxSource
from mda_fast.demo.config import DemoConfig
from mda_fast.demo.train_demo import corpus_prefix, new_model
from mda_fast.io import read_json, write_json
from mda_fast.oracle import InductionScore, exact_metagradient
from mda_fast.probes import make_data
from mda_fast.training import load_weights, step_dir, train
from mda_fast.units import Unit


def setup(demo: Path, unit: str | None):
    """(config, source, target, unit (layer, head)): the demo's unit unless ``unit`` (L1.H2) is given."""
    done = (demo / "induction.json").is_file()
    summary = read_json(demo / "induction.json") if done else {}
    cfg = DemoConfig(**summary["config"]) if done else DemoConfig()
    if unit:
        u = Unit.parse(unit)
        summary.update(layer=u.layer, head=u.head)
    source = MMIdxSource(corpus_prefix(demo), seq_len=cfg.seq_len, vocab_size=cfg.vocab_size)
    tokens = make_data(cfg.probe_n, 2 * cfg.probe_len, cfg.probe_low, cfg.probe_high, cfg.probe_seed)
    target = InductionScore(summary["layer"], summary["head"], tokens)
    return cfg, source, target, summary


def model_at(cfg, start: Path):
    model = new_model(cfg)
    load_weights(start, model)
    return model


def start_checkpoint(demo: Path, step: int, eps: float | None, scratch: Path) -> Path:
    """The demo's checkpoint at ``step``; with ``eps``, a copy whose optimizer groups use that eps
    (a restored checkpoint's groups override OptimConfig, in training and in the oracle alike)."""
    src = step_dir(demo / "checkpoints", step)
    if eps is None:
        return src
    dst = scratch / f"step{step}_eps{eps:g}"
    if not dst.is_dir():
        shutil.copytree(src, dst)
        sd = torch.load(dst / "optimizer.pt", weights_only=True)
        for g in sd["param_groups"]:
            g["eps"] = eps
        torch.save(sd, dst / "optimizer.pt")
    return dst


def retrain(cfg, start, source, optim, window, target, weights: np.ndarray | None) -> tuple[float, float]:
    """(target after retraining the window with row weights ``weights`` [n_rows] or None, seconds)."""
    model = model_at(cfg, start)
    rw = None if weights is None else (lambda ids: torch.as_tensor(weights[ids.numpy()]))
    t0 = time.perf_counter()
    train(model, source, window, cfg.rows_per_step, optim, row_weights=rw, init_from=start)
    sec = time.perf_counter() - t0
    with torch.no_grad():
        return float(target(model)), sec


def directions(n_rows, window, rps, count, seed=0):
    """``count`` directions [n_rows]: +-1 on a random 10% of the window's rows, 0 elsewhere."""
    rng = np.random.default_rng(seed)
    rows = np.arange(window[0] * rps, window[1] * rps)
    out = []
    for _ in range(count):
        d = np.zeros(n_rows)
        pick = rng.choice(rows, size=max(1, len(rows) // 10), replace=False)
        d[pick] = rng.choice([-1.0, 1.0], size=len(pick))
        out.append(d)
    return out


def smoothness(ctx, g_full, base, dirs, hs):
    """Per direction and h: retrained change vs h <g, d> (with the loop's float32 weights)."""
    rows = []
    for j, d in enumerate(dirs):
        for h in hs:
            w = (1.0 + h * d).astype(np.float32)
            actual = retrain(*ctx, w)[0] - base
            pred = float(g_full @ (w.astype(np.float64) - 1.0))
            rows.append({"direction": j, "h": h, "actual": actual, "predicted": pred,
                         "ratio": actual / pred if pred else None})
            print(f"  d{j} h={h:+.3f}: actual {actual:+.5f} predicted {pred:+.5f} ratio {rows[-1]['ratio']:.3f}",
                  flush=True)
    return rows


def lds(ctx, g_full, base, window, rps, count, fraction=0.1, seed=1):
    rng = np.random.default_rng(seed)
    rows = np.arange(window[0] * rps, window[1] * rps)
    actual, pred = [], []
    for _ in range(count):
        drop = rng.choice(rows, size=max(1, round(len(rows) * fraction)), replace=False)
        w = np.ones(len(g_full), np.float32)
        w[drop] = 0.0
        actual.append(retrain(*ctx, w)[0] - base)
        pred.append(-float(g_full[drop].sum()))
        print(f"  removal: actual {actual[-1]:+.5f} predicted {pred[-1]:+.5f}", flush=True)
    return {"actual": actual, "predicted": pred, "spearman": float(spearmanr(actual, pred)[0]),
            "pearson": float(pearsonr(actual, pred)[0])}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--demo", type=Path, required=True)
    ap.add_argument("--start", type=int, required=True)
    ap.add_argument("--end", type=int, required=True)
    ap.add_argument("--unit", default=None, help="L<layer>.H<head> (default: the demo's unit)")
    ap.add_argument("--smooth", action="store_true")
    ap.add_argument("--eps", type=float, default=None)
    ap.add_argument("--directions", type=int, default=3)
    ap.add_argument("--hs", default="0.01,0.03,0.1,0.3")
    ap.add_argument("--lds", type=int, default=0)
    ap.add_argument("--lds-fraction", type=float, default=0.1)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cfg, source, target, summary = setup(args.demo, args.unit)
    optim = cfg.optim_config()
    optim.smooth_adam = args.smooth
    optim.eps = args.eps if args.eps is not None else optim.eps
    window, rps = (args.start, args.end), cfg.rows_per_step
    start = start_checkpoint(args.demo, args.start, args.eps, args.out.parent)
    ctx = (cfg, start, source, optim, window, target)
    base, t_train = retrain(*ctx, None)
    mg = exact_metagradient(model_at(cfg, start), source, window, rps, optim, target, init_from=start)
    g_full = np.zeros(len(source))
    g_full[mg.row_ids] = mg.weight_grad
    res = {"window": window, "unit": [summary["layer"], summary["head"]], "smooth_adam": args.smooth,
           "eps": optim.eps, "target": base, "oracle_target": mg.target, "train_seconds": t_train,
           "oracle_seconds": mg.info["total_seconds"], "oracle_forward_seconds": mg.info["forward_seconds"],
           "cost_ratio": mg.info["total_seconds"] / t_train, "grad_norm": float(np.linalg.norm(mg.weight_grad)),
           "grad_finite": bool(np.all(np.isfinite(mg.weight_grad)))}
    print(json.dumps(res), flush=True)
    hs = [float(x) for x in args.hs.split(",")]
    hs = sorted(hs + [-h for h in hs])
    dirs = directions(len(source), window, rps, args.directions)
    res["smoothness"] = smoothness(ctx, g_full, base, dirs, hs) if res["grad_finite"] else []
    res["lds_fraction"] = args.lds_fraction
    res["lds"] = lds(ctx, g_full, base, window, rps, args.lds, args.lds_fraction) if args.lds and res["grad_finite"] else None
    write_json(args.out, res)
    np.save(args.out.with_suffix(".grad.npy"), mg.weight_grad)


if __name__ == "__main__":
    main()
