"""A window scored in parts by independent jobs (`mda score --part I/N`), then `mda merge`: the
merged table is bitwise the single run's; a missing, doubled or foreign part is refused; scoring
another window with chosen factors only when asked (`--other-window`), recorded in the manifest."""

import json
import shutil

import numpy as np
import pytest

from mda_fast.attribution import load_scores
from mda_fast.attribution.store.parts import parse_part, part_bounds
from mda_fast.cli import main
from mda_fast.errors import ConfigError

from test_attr_bruteforce import one_thread  # noqa: F401  (autouse fixture)
from test_attr_cli import files  # noqa: F401  (module fixture: a tiny checkpoint, rows.npy, run.yaml)


@pytest.mark.parametrize("n_rows,bs,count", [(20, 4, 3), (21, 4, 5), (7, 8, 2), (100, 7, 8)])
def test_part_bounds_tile_the_window_in_whole_batches(n_rows, bs, count):
    bounds = [part_bounds(n_rows, bs, i, count) for i in range(count)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n_rows
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    assert all(lo % bs == 0 or lo == hi == n_rows for lo, hi in bounds)   # an empty last part is refused when scored


def test_parse_part():
    assert parse_part("3/8") == (3, 8) and parse_part((0, 1)) == (0, 1)
    for bad in ("8/8", "x", "-1/3", "1/0"):
        with pytest.raises(ConfigError):
            parse_part(bad)


@pytest.fixture(scope="module")
def fitted(files):  # noqa: F811
    """A run directory with factors, its single-run scores, and the command-line arguments."""
    out = files / "out_parts"
    common = ["-c", str(files / "run.yaml"), "--out", str(out), "--batch-size", "3"]
    assert main(["fit", *common]) == 0 and main(["score", *common]) == 0
    return out, common


def test_parts_merge_bitwise_into_the_single_runs_table(fitted, tmp_path):
    out, common = fitted
    single = load_scores(str(out / "scores"))
    run = tmp_path / "array"
    shutil.copytree(out / "factors", run / "factors")
    args = [*common[:2], "--out", str(run), *common[4:]]
    for i in (2, 0, 1):                       # independent jobs, any order
        assert main(["score", *args, "--part", f"{i}/3"]) == 0
    part = load_scores(str(run / "parts" / "1-of-3"))
    assert 0 < len(part.row_ids) < len(single.row_ids)
    assert main(["merge", "--out", str(run)]) == 0
    merged = load_scores(str(run / "scores"))
    assert np.array_equal(merged.row_ids, single.row_ids)
    assert np.array_equal(merged.scores, single.scores) and np.array_equal(merged.loss, single.loss)
    assert merged.manifest["fingerprint"] == single.manifest["fingerprint"]
    assert [m["index"] for m in merged.manifest["merged_from"]] == [0, 1, 2]


def test_merge_refuses_missing_doubled_and_foreign_parts(fitted, tmp_path, capsys):
    out, common = fitted
    run = tmp_path / "array"
    shutil.copytree(out / "factors", run / "factors")
    args = [*common[:2], "--out", str(run), *common[4:]]
    assert main(["score", *args, "--part", "0/2"]) == 0
    assert main(["merge", "--out", str(run)]) == 2
    assert "parts 1 of 2 are missing" in capsys.readouterr().err and not (run / "scores").exists()

    assert main(["score", *args, "--part", "1/2"]) == 0
    shutil.copytree(run / "parts" / "1-of-2", tmp_path / "copy")
    assert main(["merge", "--out", str(run), "--parts", *map(str, [run / "parts" / "0-of-2", run / "parts" / "1-of-2",
                                                                    tmp_path / "copy"])]) == 2
    assert "appears twice" in capsys.readouterr().err

    assert main(["score", *args, "--part", "0/3"]) == 0          # a part of another split
    assert main(["merge", "--out", str(run)]) == 2
    assert "different splits" in capsys.readouterr().err
    shutil.rmtree(run / "parts" / "0-of-3")

    # a part scored with other factors (another fit seed) is named
    other = tmp_path / "other"
    assert main(["fit", *common[:2], "--out", str(other), "--fit-seed", "5", *common[4:]]) == 0
    shutil.rmtree(run / "parts" / "1-of-2")
    assert main(["score", *common[:2], "--out", str(other), *common[4:], "--part", "1/2"]) == 0
    shutil.copytree(other / "parts" / "1-of-2", run / "parts" / "1-of-2")
    assert main(["merge", "--out", str(run)]) == 2
    assert "factors" in capsys.readouterr().err and not (run / "scores").exists()


def test_scoring_another_window_needs_other_window_and_is_recorded(fitted, files, tmp_path, capsys):  # noqa: F811
    out, common = fitted
    shifted = ["--steps", "3:6"]                # rows of another window than the fitted one
    args = [*common, *shifted, "--factors", str(out / "factors")]
    args[3] = str(tmp_path / "elsewhere")
    assert main(["score", *args]) == 2
    err = capsys.readouterr().err
    assert "were fitted on" in err and "--other-window" in err
    assert main(["score", *args, "--other-window"]) == 0
    m = json.load(open(tmp_path / "elsewhere" / "scores" / "manifest.json"))
    assert "factors_window" in m["identity"] and "another window" in m["factors_window"]


def test_sub_windows_stored_elsewhere_are_verified_by_content_and_merge(fitted, files, tmp_path, capsys):  # noqa: F811
    out, common = fitted
    single = load_scores(str(out / "scores"))
    rows = np.load(files / "rows.npy")                      # the fitted window is rows 8..27 of this file
    run = tmp_path / "elsewhere"
    shutil.copytree(out / "factors", run / "factors")
    args = [*common[:2], "--out", str(run), *common[4:], "--set", "data.steps=", "--part", "sub"]
    for lo, hi in ((20, 28), (8, 20)):                       # two files, each holding a piece of the window
        np.save(tmp_path / f"rows_{lo}.npy", rows[lo:hi])
        assert main(["score", *args, "--data", str(tmp_path / f"rows_{lo}.npy"),
                     "--set", f"data.options.row_id_offset={lo}"]) == 0
    assert sorted(p.name for p in (run / "parts").iterdir()) == ["rows-20-27", "rows-8-19"]
    assert main(["merge", "--out", str(run)]) == 0
    merged = load_scores(str(run / "scores"))
    assert np.array_equal(merged.row_ids, single.row_ids)
    np.testing.assert_allclose(merged.scores, single.scores, rtol=0, atol=1e-6 * np.abs(single.scores).max())
    assert merged.manifest["fingerprint"] == single.manifest["fingerprint"]

    bad = rows[8:14].copy()
    bad[3, 5] = (bad[3, 5] + 1) % 250 + 2                    # one token of row 11 changed
    np.save(tmp_path / "bad.npy", bad)
    run2 = tmp_path / "bad_run"
    shutil.copytree(out / "factors", run2 / "factors")
    args2 = [*common[:2], "--out", str(run2), *common[4:], "--set", "data.steps=", "--part", "sub",
             "--data", str(tmp_path / "bad.npy")]
    assert main([*["score"], *args2, "--set", "data.options.row_id_offset=8"]) == 2
    assert "row 11" in capsys.readouterr().err and not (run2 / "parts" / "rows-8-13" / "scores.npz").exists()
    np.save(tmp_path / "outside.npy", rows[26:32])           # rows 26..31: past the window's end
    args2[args2.index(str(tmp_path / "bad.npy"))] = str(tmp_path / "outside.npy")
    assert main(["score", *args2, "--set", "data.options.row_id_offset=26"]) == 2
    assert "not a contiguous run of rows of the factors' window" in capsys.readouterr().err
