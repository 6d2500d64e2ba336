"""The embedded default run: corpus -> training until an induction head forms -> heads -> fit -> score -> top.

    mda demo --out demo_out                 # the README's main command runs this
    from mda_fast.demo.pipeline import run_demo
    result = run_demo("demo_out")

Every stage goes through the same code a user runs on Pythia and the Pile: the corpus is an
MMIDIDX ``.bin/.idx`` in Pythia's row order, checkpoints are ``step{N}`` directories loaded with
:func:`mda_fast.models.load_model`, the window is :func:`mda_fast.data.select_steps`, attribution
is :class:`mda_fast.attribution.MDA`. Each stage reuses what an earlier (killed) run left complete.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mda_fast.demo.config import DemoConfig


def attribution_window(info: dict, cfg: DemoConfig) -> tuple[int, int]:
    """The window to attribute: the formation window [a, b) when the head formed, else the last quarter."""
    if info.get("window"):
        a, b = (int(s) for s in info["window"])
        return a, b
    return int(cfg.steps * 3 // 4), int(cfg.steps)


def score_window(ckpt_dir, source, window, rows_per_step, unit, out_dir, probe_low=32, probe_high=127,
                 settings: dict | None = None, tokenizer=None, probe: str = "copy_target"):
    """MDA scores of the window's rows for head ``unit`` (QK block, ``probe``) into ``out_dir``.

    The checkpoint at the end of the window is the model attributed (the head exists there).
    Reuses a complete score table already in ``out_dir``; a partial one is resumed.
    """
    from mda_fast.attribution import MDA
    from mda_fast.attribution.store import load_scores
    from mda_fast.data import select_steps
    from mda_fast.models import load_model

    out_dir = Path(out_dir)
    if (out_dir / "scores.npz").is_file():
        return load_scores(str(out_dir))
    model, _ = load_model(str(ckpt_dir), load_tokenizer=False)
    win = select_steps(source, window[0], window[1], rows_per_step)
    st = {"probe_vocab_low": probe_low, "probe_vocab_high": probe_high, **(settings or {})}
    mda = MDA(model, [f"L{unit[0]}.H{unit[1]}.qk"], [probe], tokenizer=tokenizer, settings=st,
              model_name=str(ckpt_dir))
    mda.fit(win, out_dir=str(out_dir.parent / "factors"))
    return mda.score(win, str(out_dir))


def kind_enrichment(scores: np.ndarray, row_ids: np.ndarray, row_kind: np.ndarray, kinds: list[str],
                    top_share: float = 0.1) -> dict[str, dict]:
    """Share of each document kind among the top ``top_share`` rows vs the whole window."""
    k = max(1, int(round(top_share * len(scores))))
    top = row_ids[np.argsort(-scores, kind="stable")[:k]]
    out = {}
    for i, name in enumerate(kinds):
        window = float(np.mean(row_kind[row_ids] == i))
        share = float(np.mean(row_kind[top] == i))
        out[name] = {"window": window, "top": share, "enrichment": share / window if window else float("nan")}
    return out


def run_demo(out: str | Path, cfg: DemoConfig | None = None, top_k: int = 8, progress: bool = True,
             log=print) -> dict:
    """Run every stage of the demo into ``out``; returns (and writes ``out/demo.json``) a summary."""
    from mda_fast.data import MMIdxSource
    from mda_fast.demo.corpus import load_row_kinds
    from mda_fast.demo.tokenizer import byte_tokenizer
    from mda_fast.demo.train_demo import corpus_prefix, run_demo_training
    from mda_fast.heads import head_scores
    from mda_fast.models import load_model

    cfg = cfg or DemoConfig()
    out = Path(out)
    info_path = out / "induction.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else None
    if info is None or info.get("config") != cfg.to_dict():
        log(f"[1/4] corpus + training a {cfg.layers}-layer GPT-NeoX for {cfg.steps} steps "
            f"({cfg.rows_per_step} rows of {cfg.seq_len} tokens per step)")
        info = run_demo_training(out, cfg, progress=progress)
    curve = info["curve"]
    layer, head = int(info["layer"]), int(info["head"])
    a, b = attribution_window(info, cfg)
    formed = info.get("window") is not None
    log(f"      {info['metric']} score of L{layer}.H{head}: " +
        ", ".join(f"step {s}: {v:.2f}" for s, v in curve.items() if int(s) % 200 == 0 or int(s) == cfg.steps))
    best_ind = max(info.get("induction_best", {"0": 0.0}).values())
    if info["metric"] != "induction":
        log(f"      no induction head formed in {cfg.steps} steps (best score {best_ind:.2f}); the demo "
            f"attributes the previous-token head that formed instead")
    if not formed:
        log(f"      no head formed (no score crossed its threshold); attributing the last quarter {a}-{b}")

    ckpts = out / "checkpoints"
    log(f"[2/4] localizing heads at step {b}")
    model, _ = load_model(str(ckpts), f"step{b}", load_tokenizer=False)
    heads = head_scores(model, n=cfg.probe_n, seq_len=2 * cfg.probe_len, seed=cfg.probe_seed,
                        vocab_low=cfg.probe_low, vocab_high=cfg.probe_high)
    (out / "heads").mkdir(exist_ok=True)
    heads.to_csv(str(out / "heads" / "heads.csv")), heads.heatmap(str(out / "heads" / "heads.png"))
    log(heads.table(sort="prefix_matching" if info["metric"] == "induction" else info["metric"], k=4))

    probe = info["probe"]
    log(f"[3/4] EK-FAC on L{layer}.H{head}.qk, probe {probe}, scoring the {(b - a) * cfg.rows_per_step} "
        f"rows of steps {a}-{b}")
    source = MMIdxSource(corpus_prefix(out), seq_len=cfg.seq_len, vocab_size=cfg.vocab_size)
    table = score_window(ckpts / f"step{b}", source, (a, b), cfg.rows_per_step, (layer, head),
                         out / "mda" / "scores", cfg.probe_low, cfg.probe_high,
                         settings={"progress": progress}, probe=probe)

    log("[4/4] top rows")
    from mda_fast.attribution import format_report, report_top

    from mda_fast.data import select_steps

    tok = byte_tokenizer()
    report = report_top(table, top_k, table.columns[0], select_steps(source, a, b, cfg.rows_per_step), tok,
                        str(out / "mda" / "top"))
    kinds, row_kind = load_row_kinds(corpus_prefix(out))
    for side in ("positive", "negative"):
        for row in report[side]:
            row["kind"] = kinds[int(row_kind[int(row["row_id"])])]
    log(format_report(report))
    scores = table.scores[:, 0]
    enrich = kind_enrichment(scores, table.row_ids, row_kind, kinds)
    log("      kind shares, top 10% vs window: " +
        ", ".join(f"{k} {v['top']:.0%} vs {v['window']:.0%}" for k, v in enrich.items()))
    summary = {"unit": f"L{layer}.H{head}.qk", "metric": info["metric"], "probe": probe, "formed": formed, "window": [a, b], "curve": curve,
               "top10_share_of_positive_influence": report["top10_share"],
               "kind_enrichment": enrich, "top": report, "outputs": {
                   "checkpoints": str(ckpts), "heads": str(out / "heads"), "scores": str(out / "mda" / "scores"),
                   "top": str(out / "mda" / "top")}}
    tmp = out / "demo.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1, default=str))
    tmp.replace(out / "demo.json")
    return summary
