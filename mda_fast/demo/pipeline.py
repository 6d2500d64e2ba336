"""The embedded default run: corpus -> training until an induction head forms -> heads -> fit -> score -> top.

    mda demo --out demo_out                 # the README's main command runs this
    from mda_fast.demo.pipeline import run_demo
    result = run_demo("demo_out")

Every stage goes through the same code a user runs on Pythia and the Pile: the corpus is an
MMIDIDX ``.bin/.idx`` in Pythia's row order, checkpoints are ``step{N}`` directories loaded with
:func:`mda_fast.models.load_model`, the window is :func:`mda_fast.data.select_steps`, attribution
is :class:`mda_fast.attribution.pipeline.Pipeline` (heads -> fit -> score -> top, into
``<out>/mda``). Each stage reuses what an earlier (killed) run left complete.

One score pass attributes every head of the model (QK subspace) with both probes, the copy-target
probe and the previous-token probe of the demo's previous-token head, so the induction head and
its previous-token head are attributed together and the top sets of different heads can be
compared (the paper's "overlap" observation).
"""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import numpy as np

from mda_fast.attribution import format_report
from mda_fast.attribution.pipeline import Pipeline
from mda_fast.codec import byte_tokenizer
from mda_fast.data import MMIdxSource, select_steps
from mda_fast.demo.config import DemoConfig
from mda_fast.demo.corpus import load_row_kinds, load_row_strata
from mda_fast.demo.train_demo import corpus_prefix, run_demo_training
from mda_fast.intervene.analyze import enrichment
from mda_fast.intervene.track import emergence
from mda_fast.io import write_json
from mda_fast.models import load_model


def attribution_window(info: dict, cfg: DemoConfig) -> tuple[int, int]:
    """The window to attribute: the formation window [a, b) when the head formed, else the last quarter."""
    if info.get("window"):
        a, b = (int(s) for s in info["window"])
        return a, b
    last = int(info.get("last_step", cfg.steps))
    return last * 3 // 4, last


def column(unit: dict, probe: str | None = None) -> str:
    """Scores column of a demo unit (dict with layer, head, probe) under ``probe`` (default its own)."""
    return f"L{unit['layer']}.H{unit['head']}.qk/{(probe or unit['probe']).replace(':', '.')}"


def demo_units(info: dict, cfg: DemoConfig) -> tuple[list[str], list[str]]:
    """(every head's QK unit, the probes of the demo's units) scored in the one pass."""
    units = [f"L{l}.H{h}.qk" for l in range(cfg.layers) for h in range(cfg.heads)]
    probes = list(dict.fromkeys(u["probe"] for u in info.get("units", [info])))
    return units, probes


def kind_enrichment(scores: np.ndarray, row_ids: np.ndarray, row_kind: np.ndarray, kinds: list[str],
                    top_share: float = 0.1) -> dict[str, dict]:
    """Share of each document kind (the corpus's own label of each row's dominant kind) among the top
    ``top_share`` rows vs the whole window: {kind: {"top", "window", "enrichment"}}."""
    k = max(1, int(round(top_share * len(scores))))
    top = row_ids[np.argsort(-scores, kind="stable")[:k]]
    e = enrichment([{kinds[i]} for i in row_kind[top]], [{kinds[i]} for i in row_kind[row_ids]], kinds)
    return {name: {"window": e["share_window"][name], "top": e["share_top"][name],
                   "enrichment": e["enrichment"][name]} for name in kinds}


def top_overlap(table, columns: list[str], share: float = 0.1) -> list[dict]:
    """|top(a) ∩ top(b)| / k for each pair of columns (k = ``share`` of the rows), with the chance level k / N."""
    k = max(1, int(round(share * len(table.row_ids))))
    tops = {c: set(np.argsort(-table.column(c), kind="stable")[:k].tolist()) for c in columns}
    return [{"a": a, "b": b, "overlap": len(tops[a] & tops[b]) / k, "chance": k / len(table.row_ids)}
            for a, b in combinations(columns, 2)]


def overlap_report(table, heads, info: dict, driving_share: float) -> dict:
    """Top-10% overlap of the induction head with the next-best induction head, with the least
    induction-like other head (both under the copy-target probe), and with its previous-token head
    under that head's own probe. Chance levels: 0.1 for random sets of rows, and 0.1 / share for
    random sets of driving rows (the top sets are almost all driving rows)."""
    ind = info["units"][0]
    if ind["metric"] != "induction":
        return {}
    pm = np.asarray(heads.scores["prefix_matching"])
    order = [(int(l), int(h)) for l, h in zip(*np.unravel_index(np.argsort(-pm, axis=None), pm.shape))]
    skip = {(int(u["layer"]), int(u["head"])) for u in info["units"]}
    others = [lh for lh in order if lh not in skip]
    second, least = others[0], others[-1]
    cols = {"induction": column(ind), "second induction": f"L{second[0]}.H{second[1]}.qk/copy_target",
            "least induction-like": f"L{least[0]}.H{least[1]}.qk/copy_target"}
    if len(info["units"]) > 1:
        cols["previous-token (its probe)"] = column(info["units"][1])
    names = {v: k for k, v in cols.items()}
    pairs = [dict(p, a_name=names[p["a"]], b_name=names[p["b"]]) for p in top_overlap(table, list(cols.values()))
             if p["a"] == cols["induction"]]
    for p in pairs:
        p["chance_within_driving"] = min(1.0, p["chance"] / driving_share) if driving_share > 0 else None
    return {"columns": cols, "driving_share": driving_share, "pairs": pairs,
            "prefix_matching": {"induction": float(pm[ind["layer"], ind["head"]]), "second": float(pm[second]),
                                "least": float(pm[least])}}


def ensure_trained(out: Path, cfg: DemoConfig, progress: bool, log) -> dict:
    """The training summary (``induction.json``), training first unless it matches ``cfg``."""
    info_path = out / "induction.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else None
    if info is None or info.get("config") != cfg.to_dict():
        log(f"[1/4] corpus + training a {cfg.layers}-layer GPT-NeoX for up to {cfg.steps} steps "
            f"({cfg.rows_per_step} rows of {cfg.seq_len} tokens per step; {cfg.driving_share:.0%} of the rows a "
            "random span tiled along the row)")
        info = run_demo_training(out, cfg, progress=progress)
    return info


def log_formation(info: dict, cfg: DemoConfig, window, log) -> None:
    a, b = window
    log(f"      {info['metric']} score of L{info['layer']}.H{info['head']}: " +
        ", ".join(f"step {s}: {v:.2f}" for s, v in info["curve"].items() if int(s) % 500 == 0 or int(s) == b))
    if info["metric"] != "induction":
        best_ind = max(info.get("induction_best", {"0": 0.0}).values())
        log(f"      no induction head formed in {info.get('last_step', cfg.steps)} steps (best score {best_ind:.2f}); "
            "the demo attributes the previous-token head that formed instead")
    if info.get("window") is None:
        log(f"      no head formed (no score crossed its threshold); attributing the last quarter {a}-{b}")


def demo_pipeline(out: Path, cfg: DemoConfig, info: dict, window, progress: bool = True, log=print,
                  run: str = "mda", units: list[str] | None = None, **settings):
    """The :class:`Pipeline` attributing the checkpoint at the window's end over the window's rows,
    into ``<out>/<run>``: every head (or ``units``) under the demo units' probes; ``settings``
    override the attribution settings."""
    a, b = window
    ck = out / "checkpoints" / f"step{b}"
    model, _ = load_model(str(ck), load_tokenizer=False)
    source = MMIdxSource(corpus_prefix(out), seq_len=cfg.seq_len, vocab_size=cfg.vocab_size)
    all_units, probes = demo_units(info, cfg)
    st = {"probe_vocab_low": cfg.probe_low, "probe_vocab_high": cfg.probe_high, "progress": progress, **settings}
    heads = {"n": cfg.probe_n, "seq_len": 2 * cfg.probe_len, "seed": cfg.probe_seed, "vocab_low": cfg.probe_low,
             "vocab_high": cfg.probe_high}
    return Pipeline(model, select_steps(source, a, b, cfg.rows_per_step), str(out / run), probes,
                    units=units or all_units,
                    tokenizer=byte_tokenizer(), settings=st, heads=heads, model_name=str(ck), log=log)


def unit_reports(p, info: dict, kinds: list[str], row_kind: np.ndarray, strata: list[str] | None = None,
                 row_stratum: np.ndarray | None = None) -> list[dict]:
    """Per demo unit: its top rows (labelled with the corpus's kinds), the influence share of the
    top 10%, the kind enrichment among the top 10% and, with ``strata``, the driving strata's shares
    among the top 10% (label ``-`` = not a driving row)."""
    out = []
    for unit, report in zip(info.get("units", [info]), p.reports):
        for side in ("positive", "negative"):
            for row in report[side]:
                rid = int(row["row_id"])
                row["kind"] = kinds[int(row_kind[rid])]
                if strata and row_stratum[rid] >= 0:              # e.g. "repeated/strong"
                    row["kind"] += "/" + strata[int(row_stratum[rid])]
        enrich = kind_enrichment(p.table.column(report["column"]), p.table.row_ids, row_kind, kinds)
        entry = {"unit": f"L{unit['layer']}.H{unit['head']}.qk", "metric": unit["metric"], "probe": unit["probe"],
                 "column": report["column"], "top10_share_of_positive_influence": report["top10_share"],
                 "kind_enrichment": enrich, "top": report}
        if strata:
            names = list(strata) + ["-"]                      # index -1 -> "-"
            entry["stratum_enrichment"] = kind_enrichment(p.table.column(report["column"]), p.table.row_ids,
                                                          row_stratum, names)
        out.append(entry)
    return out


def run_demo(out: str | Path, cfg: DemoConfig | None = None, top_k: int = 8, progress: bool = True,
             log=print) -> dict:
    """Run every stage of the demo into ``out``; returns (and writes ``out/demo.json``) a summary."""
    cfg = cfg or DemoConfig()
    out = Path(out)
    info = ensure_trained(out, cfg, progress, log)
    a, b = attribution_window(info, cfg)
    log_formation(info, cfg, (a, b), log)
    p = demo_pipeline(out, cfg, info, (a, b), progress, log=None)
    log(f"[2/4] localizing heads at step {b}")
    heads = p.head_scores()
    log(heads.table(sort="prefix_matching" if info["metric"] == "induction" else info["metric"], k=4))
    log(f"[3/4] EK-FAC on the QK subspace of all {len(p.units)} heads, probes {', '.join(p.probes)}, scoring the "
        f"{len(p.window)} rows of steps {a}-{b}")
    p.run(top_k, columns=[column(u) for u in info.get("units", [info])])
    log("[4/4] top rows")
    kinds, row_kind = load_row_kinds(corpus_prefix(out))
    strata, row_stratum = load_row_strata(corpus_prefix(out))
    names = [st["name"] for st in strata] if len(strata) > 1 else None
    per_unit = unit_reports(p, info, kinds, row_kind, names, row_stratum)
    log(format_report(per_unit[0]["top"]))
    for u in per_unit:
        log(f"      {u['column']}: top 10% of rows carry {u['top10_share_of_positive_influence']:.0%} of the positive "
            "influence; kind shares, top 10% vs window: " +
            ", ".join(f"{k} {v['top']:.0%} vs {v['window']:.0%}" for k, v in u["kind_enrichment"].items() if v["window"] > 0))
        if "stratum_enrichment" in u:
            log("        driving strata, top 10% vs window: " + ", ".join(
                f"{k} {v['top']:.0%} vs {v['window']:.0%}" for k, v in u["stratum_enrichment"].items()))
    driving = float(np.mean(row_kind[p.table.row_ids] == kinds.index("repeated")))
    overlap = overlap_report(p.table, heads, info, driving)
    for pair in overlap.get("pairs", []):
        log(f"      top-10% overlap of the induction head with the {pair['b_name']} head: {pair['overlap']:.2f} "
            f"(chance {pair['chance']:.2f}; {pair['chance_within_driving']:.2f} for random driving rows)")
    primary = per_unit[0]
    summary = {"unit": primary["unit"], "metric": info["metric"], "probe": info["probe"],
               "formed": info.get("window") is not None, "window": [a, b], "curve": info["curve"],
               "formation_step": _crossing(info["curve"], cfg.formation_high),
               "top10_share_of_positive_influence": primary["top10_share_of_positive_influence"],
               "kind_enrichment": primary["kind_enrichment"], "top": primary["top"], "units": per_unit,
               "overlap": overlap, "outputs": {"checkpoints": str(out / "checkpoints"), **{
                   k: p.path(k) for k in ("heads", "factors", "scores", "top")}}}
    write_json(out / "demo.json", summary)
    return summary


def _crossing(curve: dict, threshold: float) -> float | None:
    steps = sorted(int(s) for s in curve)
    return emergence(steps, [curve[str(s)] if str(s) in curve else curve[s] for s in steps], threshold)["cross"]
