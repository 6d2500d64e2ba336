"""Generated structured documents, one function per kind: the demo corpus's structured kinds and
the synthetic rows of ``mda augment`` (``insert-synthetic`` plans) come from this one set.

Each ``gen_<kind>(rng, ...) -> str`` makes one document from a ``random.Random``; they carry the
repetitive structure the paper finds among top-influence rows (repeated tags, table rows, record
fields, verbatim repeated spans):

- ``markup``:   XML/HTML, a root with children sharing one set of tags and attributes;
- ``latex``:    a tabular with repeated ``\\hline`` / ``&`` structure, sometimes an align block;
- ``records``:  CSV with a header, ``key: value`` blocks or a bulleted list;
- ``table``:    a markdown (``| a | b |``) or CSV table with a fixed column structure;
- ``repeated``: a random printable span repeated 4-40 times with random gaps;
- ``spans``:    a span of words repeated 3-12 times at log-uniform distances up to ``max_gap``;
- ``tiled``:    a random printable span tiled with no gaps to ``n_chars`` (the structure of the
  demo's top-influence rows).

Kind names match the detectors of ``mda_fast.intervene.kinds`` where they overlap.
"""

from __future__ import annotations

import math
import random
import string

_PRINTABLE = string.ascii_letters + string.digits + string.punctuation + " "
_TAGS = ["item", "row", "entry", "node", "record", "field", "name", "value", "title", "link", "li", "td",
         "span", "div", "p", "key", "data", "attr", "cell", "ref"]


def _word(rng: random.Random, lo: int = 2, hi: int = 9) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(lo, hi)))


def _num(rng: random.Random) -> str:
    return rng.choice([str(rng.randint(0, 999)), f"{rng.uniform(0, 100):.2f}", str(rng.randint(1900, 2030))])


def gen_markup(rng: random.Random) -> str:
    """XML/HTML: a root with 4-30 children sharing a random set of tags and attributes."""
    root, child = rng.sample(_TAGS, 2)
    fields = rng.sample(_TAGS, rng.randint(1, 4))
    attr = _word(rng, 2, 6)
    lines = ['<?xml version="1.0"?>' if rng.random() < 0.5 else "<html><body>", f"<{root}>"]
    for i in range(rng.randint(4, 30)):
        inner = "".join(f"<{f}>{rng.choice([_word(rng), _num(rng)])}</{f}>" for f in fields)
        lines.append(f'  <{child} {attr}="{i}">{inner}</{child}>')
    lines.append(f"</{root}>")
    if lines[0].startswith("<html"):
        lines.append("</body></html>")
    return "\n".join(lines) + "\n"


def gen_latex(rng: random.Random) -> str:
    """LaTeX: a tabular with repeated \\hline / & structure, sometimes an align block."""
    ncol = rng.randint(2, 5)
    head = [_word(rng, 3, 8).capitalize() for _ in range(ncol)]
    out = [f"\\begin{{table}}[h]\n\\centering\n\\begin{{tabular}}{{{'|'.join('l' + 'r' * (ncol - 1))}}}",
           "\\hline", " & ".join(f"\\textbf{{{h}}}" for h in head) + " \\\\", "\\hline"]
    for _ in range(rng.randint(3, 20)):
        out.append(" & ".join([_word(rng)] + [f"${_num(rng)}$" for _ in range(ncol - 1)]) + " \\\\")
        if rng.random() < 0.3:
            out.append("\\hline")
    out += ["\\hline", "\\end{tabular}", f"\\caption{{{_word(rng)} {_word(rng)}}}", "\\end{table}"]
    if rng.random() < 0.5:
        v = rng.choice(["x", "y", "\\alpha", "\\beta", "f(x)"])
        out.append("\\begin{align}")
        for _ in range(rng.randint(2, 6)):
            out.append(f"{v}_{{{rng.randint(0, 9)}}} &= \\frac{{{_num(rng)}}}{{{v} + {_num(rng)}}} \\\\")
        out.append("\\end{align}")
    return "\n".join(out) + "\n"


def gen_records(rng: random.Random) -> str:
    """Lists and records: CSV with a header, ``key: value`` blocks or a bulleted list."""
    style = rng.choice(["csv", "kv", "list"])
    keys = [_word(rng, 3, 8) for _ in range(rng.randint(2, 5))]
    n = rng.randint(4, 30)
    if style == "csv":
        rows = [",".join(keys)] + [",".join(rng.choice([_word(rng), _num(rng)]) for _ in keys) for _ in range(n)]
        return "\n".join(rows) + "\n"
    if style == "kv":
        blocks = ["\n".join(f"{k}: {rng.choice([_word(rng), _num(rng)])}" for k in keys) for _ in range(n)]
        return "\n---\n".join(blocks) + "\n"
    prefix = rng.choice(["- ", "* ", "1. ", "[ ] "])
    label = _word(rng)
    return "\n".join(f"{prefix}{label} {_word(rng)} ({_num(rng)})" for _ in range(n)) + "\n"


def gen_repeated(rng: random.Random) -> str:
    """A random printable span (6-24 chars) repeated 4-40 times with random gaps (0-12 chars)."""
    span = "".join(rng.choice(_PRINTABLE) for _ in range(rng.randint(6, 24)))
    parts = []
    for _ in range(rng.randint(4, 40)):
        parts.append("".join(rng.choice(_PRINTABLE) for _ in range(rng.randint(0, 12))))
        parts.append(span)
    return "".join(parts) + "\n"


_WORDS = ("data value name item list node time user type code text page file line size "
          "key id set get run map log row col sum max min new old top end".split())
_PUNCT = "-_.:;/=#@+"


def _vocab_word(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return rng.choice(_WORDS)
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 8)))


def _filler(rng: random.Random, n_chars: int) -> str:
    out = []
    while sum(len(w) + 1 for w in out) < n_chars:
        out.append(_vocab_word(rng))
    return " ".join(out)[:n_chars]


def gen_spans(rng: random.Random, max_gap: int = 200) -> str:
    """One span repeated 3-12 times with log-uniform gaps in [0, max_gap] characters."""
    span = ""
    target = rng.randint(8, 32)
    while len(span) < target:
        span += _vocab_word(rng) + rng.choice(_PUNCT + " ")
    span = span[:target]
    parts = []
    for _ in range(rng.randint(3, 12)):
        gap = int(math.exp(rng.uniform(0, math.log(max_gap + 1)))) - 1
        parts += [_filler(rng, gap), " " if gap else "", span, " "]
    return "".join(parts).strip() + "\n"


def gen_table(rng: random.Random) -> str:
    """A markdown or CSV table: header + 3-20 rows with the same columns."""
    cols = [_vocab_word(rng) for _ in range(rng.randint(2, 5))]
    n = rng.randint(3, 20)
    cell = lambda: _vocab_word(rng) if rng.random() < 0.5 else str(rng.randint(0, 9999))  # noqa: E731
    if rng.random() < 0.5:
        out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
        out += ["| " + " | ".join(cell() for _ in cols) + " |" for _ in range(n)]
    else:
        out = [",".join(cols)] + [",".join(cell() for _ in cols) for _ in range(n)]
    return "\n".join(out) + "\n"


def gen_tiled(rng: random.Random, n_chars: int = 256) -> str:
    """A random printable span (6-30 characters) tiled with no gaps to ``n_chars``: the structure of
    the demo's top-influence rows (a row that is one span repeated), generated afresh."""
    span = "".join(rng.choice(_PRINTABLE)
                   for _ in range(rng.randint(6, 30)))
    return (span * (n_chars // len(span) + 1))[:n_chars]


GENERATORS = {"markup": gen_markup, "latex": gen_latex, "records": gen_records, "table": gen_table,
              "repeated": gen_repeated, "spans": gen_spans, "tiled": gen_tiled}
