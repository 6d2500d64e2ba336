"""Whole-window fit: pass 2 and the score pass sharing one pass give the separate passes' factors
and scores; Pipeline.run uses it for fit_fraction 1 (two passes over the window, not three)."""

import os

import numpy as np
import pytest
import torch

from mda_fast.attribution import MDA, Settings
from mda_fast.attribution.pipeline import Pipeline
from mda_fast.errors import ConfigError

from oracles import RecordingWindow
from test_attr_bruteforce import tiny, window  # noqa: F401
from test_attr_bruteforce import one_thread  # noqa: F401  (autouse fixture)
from test_attr_invariance import close

UNITS = ["L1.H2.qkvo", "L1.H2.qk", "L0.H1.v"]  # L1.H2.qk sits in two units: two columns per block
PROBES = ["copy_target", "prev_attn:L1.H2"]
N = 13


def settings(**kw):
    return Settings(**dict(dict(fit_fraction=1.0, batch_size=4, progress=False, probe_n=6, probe_seq_len=16,
                                chunk_rows=5), **kw))


@pytest.mark.parametrize("fisher,preconditioner", [("true", "ekfac"), ("empirical", "ekfac"), ("true", "identity")])
def test_shared_pass_equals_separate_passes(tmp_path, fisher, preconditioner):
    model = tiny("neox", 2)
    s = settings(fisher=fisher, preconditioner=preconditioner)
    sep = MDA(model, UNITS, PROBES, settings=s).fit(window(n=N))
    want = sep.score(window(n=N), str(tmp_path / "sep"))
    both = MDA(model, UNITS, PROBES, settings=settings(fisher=fisher, preconditioner=preconditioner, batch_size=3))
    got = both.fit_and_score(window(n=N), str(tmp_path / "shared"), factors_dir=str(tmp_path / "factors"))
    for name, f in sep.factors.blocks.items():
        g = both.factors[name]
        torch.testing.assert_close(g.lam, f.lam, rtol=1e-5, atol=1e-9 * float(f.lam.abs().max()))
        torch.testing.assert_close(g.A, f.A, rtol=1e-9, atol=1e-12)
        assert g.n_samples == f.n_samples == N and g.damping == pytest.approx(f.damping, rel=1e-5)
    np.testing.assert_array_equal(got.row_ids, want.row_ids)
    assert got.columns == want.columns
    close(got.scores, want.scores, 1e-5)
    np.testing.assert_allclose(got.loss, want.loss, rtol=1e-5)
    assert got.manifest["identity"] == want.manifest["identity"]  # same run, whichever way computed
    # the saved factors score the same rows alike through the ordinary score pass
    again = MDA(model, UNITS, PROBES, settings=s).load_factors(str(tmp_path / "factors"))
    close(again.score(window(n=N), str(tmp_path / "again")).scores, got.scores, 1e-5)


def test_pipeline_run_shares_the_pass(tmp_path):
    w = RecordingWindow(window(n=N))  # counts the passes over the window
    model = tiny("neox", 2)
    p = Pipeline(model, w, str(tmp_path / "run"), PROBES, units=UNITS, settings=settings(), log=None)
    table = p.run(top_k=3)
    assert (w.passes, len(w.seen)) == (2, 2 * N)  # pass 1, then pass 2 shared with the scores: no third pass
    assert len(table.row_ids) == N and os.path.isfile(tmp_path / "run" / "factors" / "manifest.json")
    assert p.factors_current()
    p.run(top_k=3)  # this run's factors and scores are complete: reused, no pass
    assert w.passes == 2
    p.run(top_k=3, refit=True)
    assert (w.passes, len(w.seen)) == (4, 4 * N)


def test_subsample_settings_are_refused(tmp_path):
    mda = MDA(tiny("neox", 2), UNITS, PROBES, settings=settings(fit_fraction=0.5))
    assert not mda.whole_window(window(n=N))
    with pytest.raises(ConfigError, match="whole window"):
        mda.fit_and_score(window(n=N), str(tmp_path / "x"))
