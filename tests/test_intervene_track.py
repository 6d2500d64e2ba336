"""Emergence step computation, summaries over seeds, and the tracker on a tiny model."""

import math

import numpy as np
import pytest
import torch

from mda_fast.errors import ConfigError
from mda_fast.intervene.summary import plot_curves, resolve_threshold, summarize
from mda_fast.intervene.track import (Tracker, emergence, icl_positions, repeated_random_tokens)
from test_intervene_helpers import one_thread  # noqa: F401 (autouse fixture)


def _sigmoid_curve(mid, steps=np.arange(0, 201, 10), top=0.8):
    return {"steps": steps.tolist(), "induction": (top / (1 + np.exp(-(steps - mid) / 8))).tolist()}


def test_emergence_interpolates_crossing_and_finds_steepest():
    e = emergence([0, 10, 20, 30], [0.0, 0.1, 0.5, 0.6], 0.3)
    assert e["cross"] == pytest.approx(15.0)
    assert e["steepest"] == pytest.approx(15.0)
    assert emergence([0, 10], [0.5, 0.6], 0.3)["cross"] == 0.0
    never = emergence([0, 10, 20], [0.0, 0.1, 0.2], 0.3)
    assert never["cross"] is None and never["max"] == pytest.approx(0.2)
    c = _sigmoid_curve(100)
    e = emergence(c["steps"], c["induction"], 0.4)
    assert abs(e["cross"] - 100) < 2 and abs(e["steepest"] - 100) <= 5


def test_summarize_paired_deltas_and_censoring():
    curves = {"baseline": {"0": _sigmoid_curve(80), "1": _sigmoid_curve(90)},
              "delete": {"0": _sigmoid_curve(130), "1": _sigmoid_curve(150)},
              "never": {"0": _sigmoid_curve(80, top=0.2), "1": _sigmoid_curve(90, top=0.2)}}
    s = summarize(curves, (50, 150), "induction", threshold="50%")
    assert s["threshold"] == pytest.approx(0.4, abs=0.01)          # half the baseline peak
    b, d = s["conditions"]["baseline"], s["conditions"]["delete"]
    assert b["cross_mean"] == pytest.approx(85, abs=2)
    assert d["delta_cross_pct"] == pytest.approx(55, abs=3)         # (50 + 60) / 2 steps of a 100-step window
    assert d["delta_cross_pct_std"] == pytest.approx(math.sqrt(50), abs=2)
    n = s["conditions"]["never"]
    assert n["censored"] == 2 and n["suppressed"] and n["cross_mean"] == 200
    assert summarize(curves, (50, 150), threshold="0.1")["threshold"] == 0.1
    with pytest.raises(ConfigError):
        resolve_threshold("50%", {"delete": curves["delete"]}, "induction")
    with pytest.raises(ConfigError):
        resolve_threshold("high", curves, "induction")


def test_plot_curves_writes_png(tmp_path):
    curves = {"baseline": {"0": {**_sigmoid_curve(80), "icl": [0.0] * 21}}}
    p = plot_curves(curves, (50, 150), tmp_path / "c.png", 0.4)
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_icl_positions_scale_with_context():
    assert icl_positions(2049) == (49, 499)
    e, l = icl_positions(129)
    assert 1 <= e < l < 128


def test_tracker_records_cadence_and_matches_attention():
    from transformers import AutoModelForCausalLM

    from mda_fast.models.configs import tiny_neox_config

    torch.manual_seed(0)
    m = AutoModelForCausalLM.from_config(tiny_neox_config(vocab_size=257, hidden_size=32, intermediate_size=64),
                                         attn_implementation="eager").eval()
    toks = repeated_random_tokens(4, 6, 32, 127, seed=1)
    assert torch.equal(toks[:, :6], toks[:, 6:])
    held = torch.randint(32, 127, (3, 20))
    tr = Tracker((1, 2), toks, held, cadence=5, end_step=12)
    tr.on_train_start(0, m)
    for s in range(1, 13):
        tr.on_step_end(s, m, {})
    c = tr.curve()
    assert c["steps"] == [0, 5, 10, 12]
    with torch.no_grad():
        out = m(input_ids=toks, output_attentions=True)
        ce = torch.nn.functional.cross_entropy(m(input_ids=held[:, :-1]).logits.transpose(1, 2), held[:, 1:],
                                               reduction="none")
    att = out.attentions[1][:, 2]
    # the definitions the tracker has always used (merging it into heads.py must not move them)
    want = np.mean([att[:, t, t - 5].mean().item() for t in range(6, 12)])
    assert c["induction"][0] == pytest.approx(want, rel=1e-5)
    assert c["prev_token"][0] == pytest.approx(np.mean([att[:, t, t - 1].mean().item() for t in range(1, 12)]), rel=1e-5)
    logp = out.logits[:, 6:11].log_softmax(-1).gather(-1, toks[:, 7:12, None])
    assert c["probe"][0] == pytest.approx(logp.mean().item(), rel=1e-5)
    early, late = icl_positions(20)
    assert c["icl"][0] == pytest.approx((ce[:, late] - ce[:, early]).mean().item(), rel=1e-4, abs=1e-6)
    assert all(np.isfinite(c["icl"])) and all(v < 0 for v in c["probe"])


def test_tracker_scores_are_heads_scores():
    """One implementation: the tracker scores with mda_fast.heads and matches its front doors."""
    from transformers import AutoModelForCausalLM

    from mda_fast import heads
    from mda_fast.intervene import track
    from mda_fast.models.configs import tiny_neox_config
    from mda_fast.probes import make_data

    assert track.repeat_scores is heads.repeat_scores and track.icl_score is heads.icl_score
    torch.manual_seed(1)
    m = AutoModelForCausalLM.from_config(tiny_neox_config(vocab_size=257, hidden_size=32, intermediate_size=64),
                                         attn_implementation="eager").eval()
    n, S, low, high, seed = 5, 8, 32, 127, 3
    toks = repeated_random_tokens(n, S, low, high, seed)
    assert torch.equal(toks, make_data(n, 2 * S, low, high, seed))
    held = torch.randint(32, 127, (3, 40), generator=torch.Generator().manual_seed(0))
    point = Tracker((1, 2), toks, held, cadence=1).measure(m, 0)
    ind = heads.induction_scores(m, n=n, S=S, low=low, high=high, seed=seed).numpy()
    T = 2 * S                                 # head_scores' "mul" previous_token = per-row mean x (T-1)/T
    prev = heads.head_scores(m, tokens=toks).scores["previous_token"] * T / (T - 1)
    assert point["induction"] == pytest.approx(ind[1, 2], rel=1e-6)
    assert point["prev_token"] == pytest.approx(prev[1, 2], rel=1e-5)
    every = track.all_head_scores(m, toks)
    np.testing.assert_allclose(every["induction"], ind, rtol=1e-6)
    np.testing.assert_allclose(every["prev_token"], prev, rtol=1e-5)
    early, late = icl_positions(held.shape[1])   # prediction i is token i + 1 in heads.icl_score's terms
    assert point["icl"] == pytest.approx(heads.icl_score(m, held, early=early + 1, late=late + 1), rel=1e-6)
