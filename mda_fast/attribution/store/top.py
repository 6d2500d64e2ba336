"""Top rows (most positive / most negative influence), decoded, and two figures.

Cumulative influence: rows sorted by score, descending, among the positive ones; the curve gives
the share of the total positive influence carried by the top x% of rows (of all scored rows).
"""

from __future__ import annotations

import numpy as np

from mda_fast.attribution.store.scores import ScoreTable
from mda_fast.codec import EOD_ID, decode_ids, get_codec
from mda_fast.io import save_figure
from mda_fast.vocab import resolve_count


def cumulative_share(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fraction of rows [N], share of positive influence [N]) for the top-x rows, x = 1..N."""
    s = np.sort(np.asarray(scores, np.float64))[::-1]
    pos = np.clip(s, 0.0, None)
    total = pos.sum()
    share = np.cumsum(pos) / total if total > 0 else np.zeros_like(pos)
    frac = np.arange(1, len(s) + 1) / max(len(s), 1)
    return frac, share


def top_share(scores: np.ndarray, fraction: float = 0.1) -> float:
    """Share of the total positive influence carried by the top ``fraction`` of rows."""
    frac, share = cumulative_share(scores)
    if len(frac) == 0:
        return 0.0
    k = max(1, int(np.ceil(fraction * len(frac))))
    return float(share[k - 1])


def _decode(tokens, tokenizer, max_chars: int) -> str:
    if tokenizer is not None:
        text = get_codec(tokenizer).decode(tokens)
    elif max(tokens, default=0) <= EOD_ID:  # byte-level vocabulary (the demo model)
        text = decode_ids(tokens)
    else:
        text = " ".join(str(int(t)) for t in tokens)
    text = text.replace("\n", "\\n")
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


def top_rows(table: ScoreTable, k: int | str = 10, column: str | None = None, source=None, tokenizer=None,
             max_chars: int = 200) -> dict:
    """{"column", "positive": [...], "negative": [...], "top10_share", "n"}: the ``k`` rows per side
    (a count, or ``"10%"`` of the scored rows); each row is {"row_id", "score", "loss", "text"}
    (text only when ``source`` is given)."""
    col = column or table.columns[0]
    s = table.column(col)
    k = resolve_count(k, len(s), "-k", cap=True)
    order = np.argsort(-s, kind="stable")
    picks = {"positive": [i for i in order[:k] if s[i] > 0], "negative": [i for i in order[::-1][:k] if s[i] < 0]}
    out = {"column": col, "n": int(len(s)), "top10_share": top_share(s, 0.1)}
    for key, idx in picks.items():
        rows = []
        for i in idx:
            row = {"row_id": int(table.row_ids[i]), "score": float(s[i]), "loss": float(table.loss[i])}
            if source is not None:
                tokens = source.read(np.array([source.position_of(int(table.row_ids[i]))]))[0]
                row["text"] = _decode(tokens, tokenizer, max_chars)
            rows.append(row)
        out[key] = rows
    return out


def _save(fig, path: str) -> str:
    """Write ``fig`` to ``path`` atomically (a half-written PNG never carries the final name)."""
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    return path


def _pyplot():
    """matplotlib.pyplot on the Agg backend; imported here, on the first figure, because it takes
    about a second to import (reading scores and printing top rows never need it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_histogram(scores: np.ndarray, path: str, title: str = "") -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(np.asarray(scores, np.float64), bins=min(100, max(10, len(scores) // 20)), color="#3b6ea8")
    ax.set_yscale("log")
    ax.set_xlabel("influence score (positive = strengthens the probed behaviour)")
    ax.set_ylabel("rows")
    ax.set_title(title or "score histogram")
    return _save(fig, path)


def plot_cumulative(scores: np.ndarray, path: str, title: str = "") -> str:
    plt = _pyplot()
    frac, share = cumulative_share(scores)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(100 * frac, 100 * share, color="#a83b3b")
    ax.plot([0, 100], [0, 100], ls=":", color="grey")
    t10 = top_share(scores, 0.1)
    ax.axvline(10, ls="--", color="grey")
    ax.annotate(f"top 10%: {100 * t10:.1f}%", (10, 100 * t10), xytext=(15, 100 * t10 - 10))
    ax.set_xlabel("top x% of rows (by score)")
    ax.set_ylabel("% of total positive influence")
    ax.set_title(title or "cumulative influence")
    return _save(fig, path)


def format_report(report: dict) -> str:
    lines = [f"column {report['column']}: {report['n']} rows; top 10% of rows carry "
             f"{100 * report['top10_share']:.1f}% of the positive influence"]
    for key in ("positive", "negative"):
        lines.append(f"top {key}:")
        for r in report[key]:
            text = f"  {r['text']}" if "text" in r else ""
            kind = f"  [{r['kind']}]" if "kind" in r else ""
            lines.append(f"  row {r['row_id']:>10d}  score {r['score']:+.4e}  loss {r['loss']:8.3f}{kind}{text}")
    return "\n".join(lines)
