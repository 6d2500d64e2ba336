"""How well a compressed index reproduces `mda score` (issue 13, accuracy): the demo model and window.

    python benchmarks/index_accuracy.py --demo demo_out --out /tmp/index_sweep [--ks 8,16,32,64]

The demo run (``mda demo --out demo_out``) gives the checkpoint at the formation window's end, the
corpus and the window. Into ``--out`` (never into the demo directory): EK-FAC factors of every head's
QK block (``factors/``, reused when present), the exact scores of one score pass (``exact/``), and one
index per compression (``index-<name>/``), each queried with the same probes. Per probe and
compression: Spearman correlation with the exact scores and the overlap of the top-10% sets,
min and median over the heads' columns (columns whose exact scores are all zero, heads the probe
does not reach, are left out). Writes ``accuracy.json`` and ``accuracy.md`` (the README table).

The probes are fixed here, none tuned: the demo's two (copy_target, prev_attn:L0.H0), the
previous-token probe of a layer-1 head (prev_attn:L1.H1) and a user callable, the log-likelihood
of the probe sequences' repeated halves (``induction_loglik``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

K_DEFAULT = (8, 16, 32, 64)


def induction_loglik(outputs, tokens):
    """Summed log-probability of the second (repeated) half of each probe sequence: a callable probe."""
    logits = outputs.logits[:, :-1].float()
    half = tokens.shape[1] // 2
    logp = torch.log_softmax(logits[:, half - 1:], dim=-1)
    return logp.gather(-1, tokens[:, half:, None]).sum()


PROBES = ["copy_target", "prev_attn:L0.H0", "prev_attn:L1.H1"]


def load_demo(demo: Path):
    """(model, window, demo config, units, checkpoint path) of a finished ``mda demo`` run."""
    from mda_fast.data import MMIdxSource, select_steps
    from mda_fast.demo.config import DemoConfig
    from mda_fast.demo.pipeline import attribution_window
    from mda_fast.demo.train_demo import corpus_prefix
    from mda_fast.models import load_model

    cfg = DemoConfig()
    info = json.loads((demo / "induction.json").read_text())
    a, b = attribution_window(info, cfg)
    ck = demo / "checkpoints" / f"step{b}"
    model, _ = load_model(str(ck), load_tokenizer=False)
    source = MMIdxSource(corpus_prefix(demo), seq_len=cfg.seq_len, vocab_size=cfg.vocab_size)
    units = [f"L{l}.H{h}.qk" for l in range(cfg.layers) for h in range(cfg.heads)]
    return model, select_steps(source, a, b, cfg.rows_per_step), cfg, units, str(ck)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def top_overlap(x: np.ndarray, y: np.ndarray, share: float = 0.1) -> float:
    """|top(x) ∩ top(y)| / k, top = the k = share * N highest scores."""
    k = max(1, int(round(share * len(x))))
    return len(set(np.argsort(-x, kind="stable")[:k]) & set(np.argsort(-y, kind="stable")[:k])) / k


def compare(table, exact, probes: list[str]) -> dict:
    """{probe: {spearman_min, spearman_median, top10_min, top10_median, columns}} over live columns."""
    out = {}
    for p in probes:
        sp, ov = [], []
        for c in exact.columns:
            if c.split("/", 1)[1] != p:
                continue
            e = exact.column(c)
            if not np.any(e):
                continue
            sp.append(spearman(table.column(c), e))
            ov.append(top_overlap(table.column(c), e))
        out[p] = {"spearman_min": min(sp), "spearman_median": float(np.median(sp)), "top10_min": min(ov),
                  "top10_median": float(np.median(ov)), "columns": len(sp)}
    return out


def specs(ks):
    from mda_fast.attribution.index.spec import IndexSpec

    yield "full-float32", IndexSpec(k="full", dtype="float32")
    yield "full", IndexSpec(k="full")
    for proj in ("eigen", "seeded"):
        for k in ks:
            yield f"{proj}-{k}", IndexSpec(k=k, projection=proj)


def run(demo: Path, out: Path, ks, probe_names=None, tag: str = "") -> dict:
    from mda_fast.attribution import MDA
    from mda_fast.attribution.index.build import build_index
    from mda_fast.probes import CallableProbe

    torch.manual_seed(0)
    model, window, cfg, units, ck = load_demo(demo)
    st = {"probe_vocab_low": cfg.probe_low, "probe_vocab_high": cfg.probe_high, "progress": False}
    given = probe_names or PROBES
    probes = [*given, CallableProbe(induction_loglik)] if probe_names is None else list(given)
    names = [*(p.replace(":", ".") for p in given), *(["induction_loglik"] if probe_names is None else [])]
    mda = MDA(model, units, probes, settings=st, model_name=ck)
    if (out / "factors" / "manifest.json").is_file():
        mda.load_factors(str(out / "factors"))
    else:
        mda.fit(window, out_dir=str(out / "factors"))
    t0 = time.perf_counter()
    exact = mda.score(window, str(out / f"exact{tag}"))
    result = {"checkpoint": ck, "rows": len(window), "units": units, "probes": names,
              "score_pass_s": time.perf_counter() - t0, "runs": {}}
    print(f"exact: {len(window)} rows, {result['score_pass_s']:.1f} s", flush=True)
    for name, spec in specs(ks):
        t0 = time.perf_counter()
        idx = build_index(model, window, str(out / f"index-{name}"), units, str(out / "factors"), spec, st,
                          model_name=ck)
        built = time.perf_counter() - t0
        t0 = time.perf_counter()
        table = idx.query(probes)
        queried = time.perf_counter() - t0
        per_head = idx.manifest["bytes_per_row"][units[0]]
        rel = float(np.abs(table.scores - exact.scores).max() / np.abs(exact.scores).max())
        result["runs"][name] = {"spec": spec.to_dict(), "bytes_per_row_per_head": per_head, "build_s": built,
                                "query_s": queried, "max_rel_err": rel, "probes": compare(table, exact, names)}
        print(f"{name}: build {built:.1f} s, query {queried:.2f} s, max rel err {rel:.2e}", flush=True)
    return result


def default_k(result: dict, ks) -> dict:
    """Per projection, the smallest k with Spearman >= 0.95 and top-10% overlap >= 0.9 (minimum over
    every probe's live columns); None when no k of the sweep meets it."""
    out = {}
    for proj in ("eigen", "seeded"):
        ok = [k for k in ks if all(v["spearman_min"] >= 0.95 and v["top10_min"] >= 0.9
                                   for v in result["runs"][f"{proj}-{k}"]["probes"].values())]
        out[proj] = min(ok) if ok else None
    return out


def markdown(result: dict) -> str:
    """The README table: one line per compression, Spearman / top-10% min (median) per probe."""
    probes = result["probes"]
    head = "| index | bytes/row/head | " + " | ".join(f"{p}: Spearman / top-10%" for p in probes) + " |"
    lines = [head, "|---|---:|" + "---|" * len(probes)]
    for name, r in result["runs"].items():
        cells = [f"{v['spearman_min']:.3f} ({v['spearman_median']:.3f}) / {v['top10_min']:.2f} ({v['top10_median']:.2f})"
                 for v in (r["probes"][p] for p in probes)]
        lines.append(f"| {name} | {r['bytes_per_row_per_head']:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", required=True, type=Path, help="a finished `mda demo --out` directory (read only)")
    ap.add_argument("--out", required=True, type=Path, help="where factors, exact scores and indexes go")
    ap.add_argument("--ks", default=",".join(map(str, K_DEFAULT)), help="k per side to sweep")
    ap.add_argument("--probes", default=None, help="comma-separated probes instead of the four fixed ones "
                    "(the indexes are reused; results go to accuracy-<probes>.json/.md)")
    args = ap.parse_args(argv)
    ks = [int(k) for k in args.ks.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    names = args.probes.split(",") if args.probes else None
    tag = "-" + "_".join(n.replace(":", ".") for n in names) if names else ""
    result = run(args.demo, args.out, ks, names, tag)
    result["default_k"] = default_k(result, ks)
    result["machine"] = f"{torch.get_num_threads()} torch thread(s), torch {torch.__version__}"
    (args.out / f"accuracy{tag}.json").write_text(json.dumps(result, indent=1))
    (args.out / f"accuracy{tag}.md").write_text(markdown(result))
    print(markdown(result))
    print("smallest k meeting Spearman >= 0.95 and top-10% >= 0.9 on every probe:", result["default_k"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
