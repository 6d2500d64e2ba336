"""Issue 20's table, first cut: practical attributors against the exact oracle on the subsets the
oracle experiment retrained (``benchmarks/oracle_metasmoothness.py --lds N [--lds-fraction F]``).

The oracle benchmark removes seeded random subsets (numpy default_rng(1), ``rng.choice(rows,
round(len(rows) * F))`` per subset) and records the retrained change of the target (the induction
score of the demo's head at the window's end). Those subsets are regenerated here, and every
attributor predicts each change as -sum of the removed rows' scores; LDS = Spearman(actual,
predicted). Attributors: the oracle's metagradient, gradient dot product, MDA at the window's end
(EK-FAC, whole-window fit), trajectory-aware MDA with S segments (``attribution.trajectory``).
Also each one's Spearman with the oracle's per-row metagradient.

    python benchmarks/oracle_table.py --exp /tmp/oracle_exp --out docs/results/issue20_table.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from mda_fast.attribution.pipeline import Pipeline
from mda_fast.attribution.trajectory import TrajectoryRun
from mda_fast.codec import byte_tokenizer
from mda_fast.data import MMIdxSource, select_steps
from mda_fast.models import load_model
from mda_fast.training import list_checkpoints

RPS = 32


def subsets(window, count, fraction, seed=1):
    """The oracle benchmark's removal subsets (absolute row positions), regenerated."""
    rng = np.random.default_rng(seed)
    rows = np.arange(window[0] * RPS, window[1] * RPS)
    return [rng.choice(rows, size=max(1, round(len(rows) * fraction)), replace=False) for _ in range(count)]


def settings(preconditioner="ekfac"):
    return {"fit_fraction": 1.0, "probe_vocab_low": 32, "probe_vocab_high": 127, "progress": False,
            "preconditioner": preconditioner}


def attributors(demo: Path, window, work: Path, segments=(2, 4)) -> dict[str, np.ndarray]:
    """{name: scores [rows of the window, training order]} of every practical attributor."""
    ck = demo / "checkpoints"
    src = MMIdxSource(str(demo / "corpus" / "demo"))
    load = lambda step: (load_model(str(ck), f"step{step}")[0], byte_tokenizer())  # noqa: E731
    unit, probe = ["L1.H1.qk"], ["copy_target"]
    out = {}
    for name, pre in (("graddot", "identity"), ("mda", "ekfac")):
        model, tok = load(window[1])
        p = Pipeline(model, select_steps(src, *window, RPS), work / name, probe, units=unit, tokenizer=tok,
                     settings=settings(pre), log=None)
        out[name] = p.run().scores[:, 0]
    for s in segments:
        run = TrajectoryRun(load, src, window, RPS, work / f"seg{s}", probe, unit, s, list(list_checkpoints(ck)),
                            settings(), log=None)
        out[f"mda_seg{s}"] = run.run().scores[:, 0]
    return out


def table(exp: Path, name: str, window, work: Path) -> dict:
    grads = {"oracle": np.load(exp / f"plain_{name}.grad.npy")}
    scores = {**grads, **attributors(exp / "demo", window, work / name)}
    rows = {}
    for tag, fraction in (("lds1", 0.01), ("plain", 0.1)):
        rec = json.load(open(exp / f"{tag}_{name}.json"))["lds"]
        subs = subsets(window, len(rec["actual"]), fraction)
        base = window[0] * RPS
        for att, s in scores.items():
            pred = [-float(s[d - base].sum()) for d in subs]
            rows.setdefault(att, {})[f"lds_{fraction:g}"] = float(spearmanr(rec["actual"], pred)[0])
        oracle_check = [-float(grads["oracle"][d - base].sum()) for d in subs]
        assert np.allclose(oracle_check, rec["predicted"], rtol=1e-4, atol=1e-9), "subsets not regenerated"
    for att, s in scores.items():
        rows[att]["spearman_vs_oracle"] = float(spearmanr(s, grads["oracle"])[0])
    return {"window": list(window), "rows": rows}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--exp", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, window in (("late", (3375, 3475)), ("full", (3200, 3475))):
            res[name] = table(args.exp, name, window, Path(tmp))
            print(name, json.dumps(res[name], indent=1), flush=True)
    args.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
