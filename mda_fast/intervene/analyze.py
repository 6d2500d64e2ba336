"""``mda analyze``: which kinds of documents are enriched among the top-scored rows.

share(kind, rows) = fraction of rows the detectors of :mod:`mda_fast.intervene.kinds` label with
that kind (multi-label, so shares need not sum to 1; rows with no kind count as ``other``).
enrichment = share among the top rows / share among the whole window (a uniform sample of at
most ``sample`` rows of it). Written: ``kinds.json`` and ``kinds.png`` in the output directory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mda_fast.attribution.store.scores import load_scores
from mda_fast.codec import ByteCodec, codec_for_vocab
from mda_fast.data import open_source
from mda_fast.intervene.kinds import KINDS, detect_kinds
from mda_fast.intervene.plans import pick_column, select_top
from mda_fast.io import pyplot, save_figure, write_json
from mda_fast.vocab import resolve_count

ALL_KINDS = KINDS + ("other",)


def default_min_len(codec) -> int:
    """Repeated-span length in tokens: ~12 characters for bytes, 6 BPE tokens otherwise."""
    return 12 if isinstance(codec, ByteCodec) else 6


def label_rows(rows: np.ndarray, codec, min_len: int) -> tuple[list[set], list[str]]:
    """Kinds (set per row) and decoded texts of rows [n, L]."""
    texts = [codec.decode(r).replace("<|endoftext|>", "\n") for r in rows]   # EOD is a boundary, not text
    return [detect_kinds(t, r, min_len=min_len) for t, r in zip(texts, rows)], texts


def shares(labels: list[set], kinds=KINDS) -> dict:
    """Share of rows labelled with each kind (multi-label sets; unlabelled rows count as "other")."""
    n = max(1, len(labels))
    out = {k: sum(k in s for s in labels) / n for k in kinds}
    out["other"] = sum(not s for s in labels) / n
    return out


def enrichment(top_labels: list[set], window_labels: list[set], kinds=KINDS) -> dict:
    """{"share_top", "share_window", "enrichment"} per kind (+ "other"): share among the top rows,
    share in the window, and their ratio (inf when a kind is absent from the window only)."""
    s_top, s_win = shares(top_labels, kinds), shares(window_labels, kinds)
    ratio = {k: (s_top[k] / s_win[k] if s_win[k] > 0 else (float("inf") if s_top[k] > 0 else None)) for k in s_top}
    return {"share_top": s_top, "share_window": s_win, "enrichment": ratio}


def analyze_rows(top_rows, window_rows, codec=None, min_len: int | None = None, top_ids=None,
                 top_scores=None, n_examples: int = 3, example_chars: int = 300) -> dict:
    """Enrichment of kinds among ``top_rows`` [n, L] against ``window_rows`` [m, L]."""
    codec = codec or ByteCodec()
    min_len = min_len or default_min_len(codec)
    top_labels, top_texts = label_rows(np.asarray(top_rows), codec, min_len)
    win_labels, _ = label_rows(np.asarray(window_rows), codec, min_len)
    enrich = enrichment(top_labels, win_labels)
    examples = {k: [] for k in ALL_KINDS}
    for i, (lab, text) in enumerate(zip(top_labels, top_texts)):
        for k in (lab or {"other"}):
            if len(examples[k]) < n_examples:
                examples[k].append({"row_id": int(top_ids[i]) if top_ids is not None else i,
                                    "score": float(top_scores[i]) if top_scores is not None else None,
                                    "text": text[:example_chars]})
    return {"kinds": list(ALL_KINDS), "n_top": len(top_labels), "n_window": len(win_labels),
            **enrich, "min_len": min_len,
            "examples": examples}


def plot_enrichment(result: dict, path) -> Path:
    """Grouped bars: share of each kind among top rows vs the window."""
    plt = pyplot()
    kinds = result["kinds"]
    x = np.arange(len(kinds))
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    ax.bar(x - 0.2, [result["share_window"][k] for k in kinds], 0.4, label=f"window (n={result['n_window']})",
           color="#9aa5b1")
    ax.bar(x + 0.2, [result["share_top"][k] for k in kinds], 0.4, label=f"top rows (n={result['n_top']})",
           color="#d9480f")
    for i, k in enumerate(kinds):
        e = result["enrichment"][k]
        if e is not None and np.isfinite(e):
            ax.text(i + 0.2, result["share_top"][k] + 0.01, f"x{e:.1f}", ha="center", fontsize=8)
    ax.set_xticks(x, kinds)
    ax.set_ylabel("share of rows")
    ax.set_title("Document kinds: top-scored rows vs the window")
    ax.legend(frameon=False, fontsize=8)
    return save_figure(fig, path)


def run_analyze(scores_path, source, out_dir, column: str | None = None, top: str = "10%",
                tail: str = "positive", tokenizer=None, sample: int = 5000, seed: int = 0,
                table=None, vocab_size: int | None = None) -> dict:
    """Load scores + rows, compute enrichment, write ``kinds.json`` / ``kinds.png`` under ``out_dir``."""
    table = table or load_scores(str(scores_path))
    source = open_source(source)
    col = pick_column(table.columns, column)
    vals = table.scores[:, col]
    count = resolve_count(top, len(table.row_ids), "analyze")
    order = np.argsort(-vals if tail == "positive" else vals, kind="stable")[:count]
    top_ids = select_top(table.row_ids, vals, count, tail)
    rng = np.random.default_rng(seed)
    win_ids = table.row_ids if len(table.row_ids) <= sample else np.sort(rng.choice(table.row_ids, sample, replace=False))
    top_show = top_ids[: max(sample, 1)]
    top_rows = source.read(source.positions_of(top_show))
    win_rows = source.read(source.positions_of(win_ids))
    codec = codec_for_vocab(vocab_size or getattr(source, "vocab_size", None), tokenizer, win_rows)
    result = analyze_rows(top_rows, win_rows, codec, top_ids=top_show, top_scores=vals[order][: len(top_show)])
    result.update({"scores": str(scores_path), "column": table.columns[col], "top": top, "tail": tail,
                   "count": int(count)})
    out = Path(out_dir)
    write_json(out / "kinds.json", result)
    plot_enrichment(result, out / "kinds.png")
    return result
