"""The HTML report: written, self-contained, references PNGs that exist; renders in Chromium."""

import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from mda_fast.attribution.store.scores import ScoreTable
from mda_fast.data import ArraySource
from mda_fast.codec import ByteCodec
from mda_fast.io import write_json
from mda_fast.intervene.report import highlight_row, write_report


def _fake_experiment(d):
    steps = list(range(0, 101, 10))
    curve = lambda mid: {"steps": steps, "induction": [[[0.0], [0.8 / (1 + np.exp(-(s - mid) / 6))]]  # noqa: E731
                                                       for s in steps],
                         "prev_token": [[[0.0], [0.0]] for _ in steps], "probe": [0.0] * len(steps),
                         "icl": [0.0] * len(steps)}
    curves = {"baseline": {"0": curve(40), "1": curve(45)}, "delete": {"0": curve(70), "1": curve(80)}}
    from mda_fast.intervene.summary import TrackedUnit, plot_curves, summarize

    units = [TrackedUnit.of("induction", 1, 0, "induction")]
    s = summarize(curves, (20, 80), units, 0.4)
    write_json(d / "summary.json", s)
    write_json(d / "curves.json", curves)
    plot_curves(curves, (20, 80), d / "curves.png", units, s["threshold"])
    write_json(d / "config.json", {"units": [u.to_dict() for u in units], "window": [20, 80], "end_step": 100,
                                   "rows_per_step": 4, "seeds": [0, 1], "cadence": 10, "seed_meaning": "data order"})
    write_json(d / "heads.json", {"induction": [[0.1, 0.2], [0.7, 0.1]], "prev_token": [[0.5, 0.1], [0.1, 0.1]],
                                  "unit": [1, 0]})
    c = ByteCodec()
    text = "<b>x</b> & the repeat span one <b>x</b> & the repeat span one!"
    rows = np.array([(c.encode(text) + [32] * 80)[:80] for _ in range(10)])
    table = ScoreTable(np.arange(10), np.linspace(-1, 3, 10, dtype=np.float32)[:, None], ["L1.H0.qk/copy"],
                       np.zeros(10, np.float32), {})
    return table, ArraySource(rows, vocab_size=257)


def test_report_references_existing_pngs(tmp_path):
    table, src = _fake_experiment(tmp_path)
    path = write_report(tmp_path, scores=table, source=src, n_top=3)
    page = path.read_text()
    imgs = re.findall(r'<img src="([^"]+)"', page)
    assert set(imgs) == {"curves.png", "heads.png", "scores.png"}
    for name in imgs:
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    assert "http" not in page and "<script" not in page                   # self-contained
    assert page.count("<mark>") >= 3 and "&lt;b&gt;" in page               # highlighted + escaped
    assert "delete" in page and "baseline" in page
    assert not list(tmp_path.glob("*.tmp*"))


def test_highlight_marks_only_the_repeat():
    c = ByteCodec()
    h = highlight_row(c.encode("abcdefghijklmnop--abcdefghijklmnop"), c, 12)
    assert h == "abcdefghijklmnop--<mark>abcdefghijklmnop</mark>"


def _browser():
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def test_ci_has_a_browser():
    """CI (.ci/run, CI=true) installs Debian's chromium (scripts/ci_system_deps.sh), so there the
    browser test below must run, not skip."""
    if os.environ.get("CI") != "true":
        pytest.skip("outside CI the browser test may skip")
    assert _browser() is not None, "CI has no headless Chromium: see scripts/ci_system_deps.sh's line in the CI log"


@pytest.mark.skipif(_browser() is None, reason="no headless Chromium installed (scripts/ci_system_deps.sh installs it)")
def test_report_renders_in_headless_chromium(tmp_path):
    table, src = _fake_experiment(tmp_path)
    page = write_report(tmp_path, scores=table, source=src, n_top=3)
    shot = tmp_path / "shot.png"
    subprocess.run([_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    f"--screenshot={shot}", "--window-size=1200,2400", page.resolve().as_uri()],
                   check=True, timeout=90, capture_output=True)
    data = shot.read_bytes()
    assert data[:4] == b"\x89PNG" and len(data) > 20_000     # a blank page compresses far below this
