"""``mda report``: one self-contained HTML page per experiment directory (PNGs next to it).

The page has no scripts and no external resources; images are relative links to PNGs in the
same directory. Sections (each skipped when its inputs are missing): emergence summary table,
emergence curves (``curves.png``), head heat-map (``heads.png``), score histogram and cumulative
influence curve (``scores.png``), top rows with repeated spans highlighted, kind enrichment
(``kinds.png`` + examples).
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from mda_fast.attribution.store.scores import load_scores
from mda_fast.codec import codec_for_vocab
from mda_fast.data import open_source
from mda_fast.intervene.analyze import default_min_len
from mda_fast.intervene.kinds import repeated_spans
from mda_fast.intervene.plans import pick_column
from mda_fast.io import pyplot, read_json, save_figure, write_text

_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:24px auto;color:#212529;padding:0 12px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #dee2e6}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #dee2e6;padding:3px 8px;text-align:right}
th{background:#f8f9fa}td:first-child,th:first-child{text-align:left}img{max-width:100%}
pre{white-space:pre-wrap;word-break:break-all;background:#f8f9fa;padding:6px;font-size:12px;border-radius:4px}
mark{background:#ffd43b}.note{color:#495057;font-size:13px}"""


def plot_heads(heads: dict, path) -> Path:
    """Heat-maps layer x head of the induction and previous-token scores."""
    plt = pyplot()
    keys = [k for k in ("induction", "prev_token") if k in heads]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 2.8), squeeze=False)
    for ax, k in zip(axes[0], keys):
        m = np.asarray(heads[k], dtype=float)
        im = ax.imshow(m, cmap="viridis", vmin=0, vmax=max(1e-6, float(m.max())), aspect="auto")
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="w" if v < m.max() / 2 else "k", fontsize=7)
        if "unit" in heads:
            ax.add_patch(plt.Rectangle((heads["unit"][1] - 0.5, heads["unit"][0] - 0.5), 1, 1, fill=False,
                                       ec="#d9480f", lw=2))
        ax.set_xticks(range(m.shape[1]))
        ax.set_yticks(range(m.shape[0]))
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_title(k.replace("_", "-") + " score")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_scores(values: np.ndarray, path, column: str = "") -> tuple[Path, dict]:
    """Histogram of scores and cumulative share of |score| mass vs fraction of rows (sorted desc)."""
    plt = pyplot()
    v = np.asarray(values, dtype=np.float64)
    fig, (h, c) = plt.subplots(1, 2, figsize=(9, 3.2))
    h.hist(v, bins=80, color="#495057")
    h.set_yscale("log")
    h.set_title(f"scores {column}".strip())
    h.set_xlabel("influence score")
    mag = np.sort(np.abs(v))[::-1]
    cum = np.cumsum(mag) / max(mag.sum(), 1e-30)
    frac = np.arange(1, v.size + 1) / max(v.size, 1)
    c.plot(frac, cum, color="#d9480f")
    c.plot([0, 1], [0, 1], color="#adb5bd", ls="--", lw=0.8)
    k10 = max(1, int(round(0.1 * v.size)))
    share10 = float(cum[k10 - 1]) if v.size else 0.0
    c.axvline(0.1, color="#868e96", lw=0.8)
    c.set_title(f"top 10% of rows carry {100 * share10:.0f}% of |score| mass")
    c.set_xlabel("fraction of rows (by |score|)")
    c.set_ylabel("cumulative |score| share")
    fig.tight_layout()
    return save_figure(fig, path), {"top10_abs_share": share10, "n": int(v.size)}


def highlight_row(tokens, codec, min_len: int) -> str:
    """HTML of a row with its repeated spans (see kinds.repeated_spans) in <mark>."""
    t = np.asarray(tokens).reshape(-1)
    cov = np.zeros(t.size, dtype=bool)
    for s, e, _ in repeated_spans(t, min_len):
        cov[s:e] = True
    parts, i = [], 0
    while i < t.size:
        j = i
        while j < t.size and cov[j] == cov[i]:
            j += 1
        text = html.escape(codec.decode(t[i:j]))
        parts.append(f"<mark>{text}</mark>" if cov[i] else text)
        i = j
    return "".join(parts)


def _fmt(x, nd=1):
    return "–" if x is None else (f"{x:.{nd}f}" if isinstance(x, (int, float)) else html.escape(str(x)))


def _effect_cell(e: dict | None) -> str:
    if not e or e.get("mean") is None:
        return "–"
    lo, hi = e["ci95"]
    ci = f" [{lo:+.1f}, {hi:+.1f}]" if lo is not None else ""
    return f"{e['mean']:+.1f}%{ci}, p = {_fmt(e.get('p'), 3)}"


def _summary_table(unit: dict) -> str:
    rows = ["<tr><th>condition</th><th>emergence step (mean ± std)</th>"
            "<th>shift, % of window [95% CI], sign-flip p</th><th>final score</th><th>never crossed</th></tr>"]
    for cond, r in unit.get("conditions", {}).items():
        rows.append(
            f"<tr><td>{html.escape(cond)}</td><td>{'≥ ' if r['censored'] else ''}{_fmt(r['cross_mean'])} ± "
            f"{_fmt(r['cross_std'])}</td><td>{_effect_cell(r.get('shift_pct'))}</td>"
            f"<td>{_fmt(r['final_mean'], 3)}</td><td>{r['censored']}/{len(r['seeds'])}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _kinds_section(kinds: dict) -> str:
    rows = ["<tr><th>kind</th><th>share among top</th><th>share in window</th><th>enrichment</th></tr>"]
    for k in kinds["kinds"]:
        e = kinds["enrichment"][k]
        rows.append(f"<tr><td>{k}</td><td>{100 * kinds['share_top'][k]:.1f}%</td>"
                    f"<td>{100 * kinds['share_window'][k]:.1f}%</td><td>{_fmt(e, 2)}</td></tr>")
    ex = []
    for k, items in kinds.get("examples", {}).items():
        for it in items[:2]:
            ex.append(f"<p class=note>{k} — row {it['row_id']} (score {_fmt(it.get('score'), 4)})</p>"
                      f"<pre>{html.escape(it['text'])}</pre>")
    return "<table>" + "".join(rows) + "</table>" + "".join(ex)


def _emergence_sections(d: Path, cfg: dict, summary: dict) -> list[str]:
    sec = []
    if cfg:
        units = ", ".join(f"{u['name']} {u['head']}" for u in cfg.get("units", []))
        sec.append(f"<p class=note>units {html.escape(units)}, window steps "
                   f"{cfg['window'][0]}–{cfg['window'][1]} (trained to {cfg['end_step']}), "
                   f"{cfg['rows_per_step']} rows/step, seeds {cfg['seeds']}, tracked every {cfg['cadence']} steps. "
                   f"{html.escape(cfg.get('seed_meaning', ''))}</p>")
    for name, unit in summary.get("units", {}).items():
        sec.append(f"<h2>Emergence of {html.escape(name)} ({unit['head']})</h2><p class=note>emergence = first step "
                   f"the {unit['metric']} score reaches {unit['threshold']:.3f}; shifts paired by seed, "
                   "positive = later. Runs that never cross count at their last tracked step.</p>")
        sec.append(_summary_table(unit))
    for png, title in (("curves.png", "Emergence curves"), ("effects.png", "Effects (95% intervals)"),
                       ("dose.png", "Dose response")):
        if (d / png).is_file():
            sec.append(f'<h2>{title}</h2><img src="{png}" alt="{title.lower()}">')
    if (d / "heads.json").is_file():
        plot_heads(read_json(d / "heads.json"), d / "heads.png")
        sec.append('<h2>Head scores</h2><img src="heads.png" alt="head heat-map">')
    return sec


def _score_sections(d: Path, table, source, tokenizer, n_top: int) -> list[str]:
    kinds = read_json(d / "kinds.json") if (d / "kinds.json").is_file() else {}
    col = pick_column(table.columns, kinds.get("column") or (table.columns[0] if len(table.columns) > 1 else None))
    vals = table.scores[:, col]
    _, st = plot_scores(vals, d / "scores.png", table.columns[col])
    sec = [f"<h2>Scores</h2><p class=note>{st['n']} rows; the top 10% carry "
           f"{100 * st['top10_abs_share']:.0f}% of the |score| mass.</p><img src=\"scores.png\" alt=\"scores\">"]
    if source is not None:
        source = open_source(source)
        top = np.argsort(-vals, kind="stable")[:n_top]
        rows = source.read(source.positions_of(table.row_ids[top]))
        codec = codec_for_vocab(getattr(source, "vocab_size", None), tokenizer, rows)
        sec.append("<h2>Top rows</h2><p class=note>repeated spans (already seen earlier in the row) "
                   "are <mark>highlighted</mark>.</p>")
        for i, r in zip(top, rows):
            sec.append(f"<p class=note>row {int(table.row_ids[i])}, score {vals[i]:.4g}</p>"
                       f"<pre>{highlight_row(r, codec, default_min_len(codec))}</pre>")
    return sec


def write_report(exp_dir, scores=None, source=None, tokenizer=None, n_top: int = 8) -> Path:
    """Write ``exp_dir/report.html`` (+ heads.png, scores.png); returns its path.

    scores: ScoreTable or run dir (default: ``config.json``'s scores); source: RowSource or spec
    (default: config's source when it is openable) for the top rows.
    """
    d = Path(exp_dir)
    cfg = read_json(d / "config.json") if (d / "config.json").is_file() else {}
    summary = read_json(d / "summary.json") if (d / "summary.json").is_file() else {}
    sec = [f"<h1>MDA causal validation — {html.escape(d.name)}</h1>", *_emergence_sections(d, cfg, summary)]
    scores = scores if scores is not None else cfg.get("scores")
    if scores is not None:
        table = load_scores(str(scores)) if isinstance(scores, (str, Path)) else scores
        sec += _score_sections(d, table, source, tokenizer, n_top)
    if (d / "kinds.json").is_file():
        sec.append("<h2>Document kinds</h2>")
        if (d / "kinds.png").is_file():
            sec.append('<img src="kinds.png" alt="kind enrichment">')
        sec.append(_kinds_section(read_json(d / "kinds.json")))
    page = (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>MDA report {html.escape(d.name)}</title>"
            f"<style>{_CSS}</style></head><body>{''.join(sec)}</body></html>\n")
    return write_text(d / "report.html", page)
