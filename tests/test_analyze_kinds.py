"""Kind detectors on crafted examples, repeated spans, and enrichment."""

import numpy as np
import pytest

from mda_fast.intervene.analyze import analyze_rows, plot_enrichment
from mda_fast.codec import ByteCodec
from mda_fast.intervene.kinds import detect_kinds, repeat_coverage, repeated_spans

LATEX = r"We have \begin{equation} \frac{a}{b} = \alpha \end{equation} and \sum_i x_i."
HTML = '<html><body><ul><li class="a">one</li><li class="a">two</li><li>three</li></ul></body></html>'
CODE = "def f(x):\n    if x == 1:\n        return g(x)\n    return None\n\nclass A:\n    pass\n"
CSV = "name,age,city,zip\nann,31,oslo,0150\nbob,42,rome,00100\ncid,23,lima,15001\n"
LIST = "- apples and pears\n- bread\n- milk (2 liters)\n- eggs\n"
PROSE = "The committee met on Tuesday to discuss the proposal. Most members agreed that it was sound."


@pytest.mark.parametrize("text,kind", [(LATEX, "latex"), (HTML, "markup"), (CODE, "code"), (CSV, "records"),
                                       (LIST, "records"), (PROSE, "prose")])
def test_detectors_find_their_kind(text, kind):
    assert kind in detect_kinds(text)


def test_detectors_do_not_fire_on_prose():
    assert detect_kinds(PROSE) == {"prose"}
    assert "code" not in detect_kinds(CSV) and "markup" not in detect_kinds(LATEX)


def test_repeated_spans_locates_the_copy():
    c = ByteCodec()
    text = "xq7 the quick brown fox! lorem ipsum dolor zz the quick brown fox! end"
    t = np.array(c.encode(text))
    spans = repeated_spans(t, min_len=12)
    assert len(spans) == 1
    s, e, first = spans[0]
    assert c.decode(t[s:e]) == " the quick brown fox! " and first == text.index(" the quick")
    assert s == text.index(" the quick", 10)
    assert repeated_spans(np.array(c.encode(" " * 60 + "abc")), 12) == []       # whitespace runs ignored
    assert repeat_coverage(t, 12) == pytest.approx((e - s) / t.size)
    assert "repeated" in detect_kinds(text, t, min_len=12, min_cover=0.2)


def test_enrichment_counts(tmp_path):
    c = ByteCodec()
    rows = lambda texts: np.array([(c.encode(t) + [256] * 120)[:120] for t in texts])  # noqa: E731
    top = rows([HTML, HTML, PROSE, CSV])
    win = rows([HTML, PROSE, PROSE, PROSE, CSV, CODE, PROSE, PROSE])
    r = analyze_rows(top, win, c, top_ids=[5, 6, 7, 8], top_scores=[4.0, 3.0, 2.0, 1.0])
    assert r["share_top"]["markup"] == 0.5 and r["share_window"]["markup"] == 0.125
    assert r["enrichment"]["markup"] == pytest.approx(4.0)
    assert r["enrichment"]["prose"] == pytest.approx(0.25 / 0.625)
    assert r["examples"]["markup"][0]["row_id"] == 5 and r["examples"]["markup"][0]["score"] == 4.0
    png = plot_enrichment(r, tmp_path / "k.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_detectors_agree_with_the_generators():
    from mda_fast.intervene.generators import GENERATORS
    import random

    detected_as = {"table": "records", "spans": "repeated", "tiled": "repeated"}
    c, rng = ByteCodec(), random.Random(0)
    for kind, gen in GENERATORS.items():
        hits = 0
        for _ in range(40):
            doc = gen(rng, 128 // 3) if kind == "spans" else gen(rng)   # as augment calls it for 128-token rows
            t = c.encode(doc)[:128]                            # one demo row's worth
            hits += detected_as.get(kind, kind) in detect_kinds(c.decode(t), t, min_len=12)
        assert hits >= 28, (kind, hits)                        # >= 70% recall per kind
