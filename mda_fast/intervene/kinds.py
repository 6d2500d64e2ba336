"""Rule-based detectors of the document kinds the paper finds among top-influence rows.

Kinds (multi-label; a row may be both code and repeated): ``latex``, ``markup`` (XML/HTML),
``code``, ``records`` (lists, tables, CSV/database records), ``repeated`` (a long token span
occurring again later in the row), ``prose`` (none of the structural kinds and mostly words).
The rules are deliberately simple and documented here, so enrichment figures can be read:

- latex:   >= 3 backslash commands (``\\frac``, ``\\begin``...) or any ``\\begin{``/``$$``.
- markup:  >= 4 tags ``<name ...>``/``</name>`` and >= 2 closing tags.
- code:    >= 3 distinct signals among keywords (def/return/import/class/function/var/const/
           #include/public/for(/if(/while), lines ending in ``;``/``{``/``}``/``:``, ``==``/``!=``,
           ``->``/``=>``, indented lines; needs at least one keyword-like signal.
- records: >= 3 lines of list/table shape (bullets, numbered items, ``|`` cells, >= 2 tabs or
           >= 2 commas with a constant count across 3 consecutive lines, ``key: value`` runs).
- repeated: the fraction of tokens covered by a span of >= ``min_len`` tokens that already
           occurred earlier in the row is >= ``min_cover`` (see :func:`repeated_spans`).
- prose:   none of the above and >= 70% of characters letters/spaces with sentence punctuation.
"""

from __future__ import annotations

import re

import numpy as np

KINDS = ("latex", "markup", "code", "records", "repeated", "prose")

_LATEX_CMD = re.compile(r"\\[a-zA-Z]{2,}")
_LATEX_STRONG = re.compile(r"\\begin\{|\\end\{|\$\$|\\documentclass|\\usepackage")
_TAG = re.compile(r"</?[A-Za-z][\w:.-]*(\s[^<>]{0,200})?/?>")
_CLOSE = re.compile(r"</[A-Za-z][\w:.-]*>")
_KEYWORDS = re.compile(
    r"(^|\s)(def|return|import|class|function|var|let|const|public|private|static|void|elif|"
    r"lambda|struct|#include|#define)\b|\b(for|if|while|switch)\s*\(", re.M)
_LIST_LINE = re.compile(r"^\s*([-*+\u2022]\s+\S|\d{1,3}[.)]\s+\S|[A-Za-z_][\w ]{0,30}:\s+\S)")


def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


def is_latex(text: str) -> bool:
    return bool(_LATEX_STRONG.search(text)) or len(_LATEX_CMD.findall(text)) >= 3


def is_markup(text: str) -> bool:
    return len(_TAG.findall(text)) >= 4 and len(_CLOSE.findall(text)) >= 2


def is_code(text: str) -> bool:
    lines = _lines(text)
    signals = set()
    if _KEYWORDS.search(text):
        signals.add("keyword")
    if sum(ln.rstrip().endswith((";", "{", "}")) for ln in lines) >= 2:
        signals.add("braces")
    if sum(ln.rstrip().endswith(":") for ln in lines) >= 2 and "keyword" in signals:
        signals.add("colon-blocks")
    if re.search(r"[=!<>]=|&&|\|\|", text):
        signals.add("operators")
    if re.search(r"->|=>|::", text):
        signals.add("arrows")
    if sum(ln.startswith(("    ", "\t")) for ln in lines) >= 2:
        signals.add("indent")
    if re.search(r"\w+\([^()\n]*\)", text):
        signals.add("calls")
    return len(signals) >= 3 and bool(signals & {"keyword", "braces"})


def is_records(text: str) -> bool:
    lines = _lines(text)
    if len(lines) < 3:
        return False
    n_list = sum(bool(_LIST_LINE.match(ln)) for ln in lines)
    n_pipe = sum(ln.count("|") >= 2 for ln in lines)
    n_tab = sum(ln.count("\t") >= 2 for ln in lines)
    # CSV-like: >= 3 consecutive lines with the same (>= 2) comma count
    commas = [ln.count(",") for ln in lines]
    run = best = 1
    for a, b in zip(commas, commas[1:]):
        run = run + 1 if (a == b and a >= 2) else 1
        best = max(best, run)
    return max(n_list, n_pipe, n_tab) >= 3 or best >= 3


def repeated_spans(tokens, min_len: int = 8) -> list[tuple[int, int, int]]:
    """Spans repeating earlier material in the row.

    tokens: int[T]. Returns merged intervals ``(start, end, first_start)``: every ``min_len``-gram
    inside ``[start, end)`` already occurred earlier in the row (``first_start`` is where the
    interval's first gram first occurred). Grams made of one repeated token (runs of spaces) are
    ignored so indentation does not count as repetition.
    """
    t = np.asarray(tokens, dtype=np.int64).reshape(-1)
    n = t.size - min_len + 1
    if n <= 1:
        return []
    grams = np.lib.stride_tricks.sliding_window_view(t, min_len)          # [n, k]
    w = np.random.default_rng(0x5EED).integers(1, 2**62, size=min_len, dtype=np.uint64) | 1
    with np.errstate(over="ignore"):
        h = (grams.astype(np.uint64) * w).sum(axis=1)                       # [n] 64-bit hash
    _, first_idx, inv = np.unique(h, return_index=True, return_inverse=True)
    first = first_idx[inv]                                                   # [n] first occurrence
    uniform = (grams == grams[:, :1]).all(axis=1)
    rep = (first < np.arange(n)) & ~uniform
    spans, i = [], 0
    idx = np.flatnonzero(rep)
    while i < idx.size:
        s = j = idx[i]
        while i + 1 < idx.size and idx[i + 1] == j + 1:
            i += 1
            j = idx[i]
        spans.append((int(s), int(j + min_len), int(first[s])))
        i += 1
    return spans


def repeat_coverage(tokens, min_len: int = 8) -> float:
    """Fraction of the row's tokens inside a :func:`repeated_spans` interval."""
    t = np.asarray(tokens).reshape(-1)
    if t.size == 0:
        return 0.0
    cov = np.zeros(t.size, dtype=bool)
    for s, e, _ in repeated_spans(t, min_len):
        cov[s:e] = True
    return float(cov.mean())


def is_prose(text: str) -> bool:
    if not text.strip():
        return False
    good = sum(c.isalpha() or c.isspace() or c in ".,;:'\"!?()-" for c in text)
    return good / len(text) >= 0.9 and sum(c.isalpha() for c in text) / len(text) >= 0.6 \
        and bool(re.search(r"[a-z]{3,}[.!?](\s|$)", text))


def detect_kinds(text: str, tokens=None, min_len: int = 8, min_cover: float = 0.2) -> set[str]:
    """The set of :data:`KINDS` a row belongs to (possibly empty = "other")."""
    kinds = set()
    if is_latex(text):
        kinds.add("latex")
    if is_markup(text):
        kinds.add("markup")
    if is_code(text):
        kinds.add("code")
    if is_records(text):
        kinds.add("records")
    if tokens is not None and repeat_coverage(tokens, min_len) >= min_cover:
        kinds.add("repeated")
    if not kinds and is_prose(text):
        kinds.add("prose")
    return kinds
