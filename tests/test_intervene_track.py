"""Emergence step computation, summaries over seeds, and the tracker on a tiny model."""

import math

import numpy as np
import pytest
import torch

from mda_fast.errors import ConfigError
from mda_fast.intervene.summary import TrackedUnit, format_summary, plot_curves, resolve_threshold, summarize
from mda_fast.intervene.track import (StopRule, Tracker, emergence, icl_positions, repeated_random_tokens, series)
from test_intervene_helpers import one_thread  # noqa: F401 (autouse fixture)


UNIT = TrackedUnit.of("induction", 1, 0, "induction")


def _sigmoid_curve(mid, steps=np.arange(0, 201, 10), top=0.8):
    v = top / (1 + np.exp(-(steps - mid) / 8))
    return {"steps": steps.tolist(), "induction": [[[0.0], [x]] for x in v],
            "prev_token": [[[x], [0.0]] for x in v[::-1]], "probe": (-v).tolist(), "icl": (-v).tolist()}


def test_emergence_interpolates_crossing_and_finds_steepest():
    e = emergence([0, 10, 20, 30], [0.0, 0.1, 0.5, 0.6], 0.3)
    assert e["cross"] == pytest.approx(15.0)
    assert e["steepest"] == pytest.approx(15.0)
    assert emergence([0, 10], [0.5, 0.6], 0.3)["cross"] == 0.0
    never = emergence([0, 10, 20], [0.0, 0.1, 0.2], 0.3)
    assert never["cross"] is None and never["max"] == pytest.approx(0.2)
    c = _sigmoid_curve(100)
    e = emergence(c["steps"], series(c, "induction", (1, 0)), 0.4)
    assert abs(e["cross"] - 100) < 2 and abs(e["steepest"] - 100) <= 5


def test_summarize_paired_shifts_intervals_and_censoring():
    curves = {"baseline": {"0": _sigmoid_curve(80), "1": _sigmoid_curve(90)},
              "delete": {"0": _sigmoid_curve(130), "1": _sigmoid_curve(150)},
              "never": {"0": _sigmoid_curve(80, top=0.2), "1": _sigmoid_curve(90, top=0.2)}}
    s = summarize(curves, (50, 150), [UNIT], threshold="50%")
    u = s["units"]["induction"]
    assert u["threshold"] == pytest.approx(0.4, abs=0.01)           # half the baseline peak
    b, d = u["conditions"]["baseline"], u["conditions"]["delete"]
    assert b["cross_mean"] == pytest.approx(85, abs=2)
    sh = d["shift_pct"]
    assert sh["mean"] == pytest.approx(55, abs=3)                    # (50 + 60) / 2 steps of a 100-step window
    assert sh["std"] == pytest.approx(math.sqrt(50), abs=2) and sh["n"] == 2
    assert sh["ci95"][0] <= sh["mean"] <= sh["ci95"][1] and sh["p"] == pytest.approx(0.5)  # 2 of 4 sign patterns
    n = u["conditions"]["never"]
    assert n["censored"] == 2 and n["suppressed"] and n["cross_mean"] == 200
    assert summarize(curves, (50, 150), [UNIT], threshold="0.1")["threshold"] == 0.1
    # the ICL score is compared at the baseline's mean emergence step
    assert s["icl"]["step"] == pytest.approx(b["cross_mean"])
    assert s["icl"]["conditions"]["delete"]["change"]["mean"] > 0         # less context use when delayed
    text = format_summary(s)
    assert "delete" in text and "p=" in text and "[+" in text
    with pytest.raises(ConfigError):
        resolve_threshold("50%", {"delete": curves["delete"]}, UNIT)
    with pytest.raises(ConfigError):
        resolve_threshold("high", curves, UNIT)


def test_a_second_unit_is_summarized_from_the_same_runs():
    curves = {"baseline": {"0": _sigmoid_curve(80)}, "delete": {"0": _sigmoid_curve(130)}}
    prev = TrackedUnit.of("previous-token", 0, 0, "prev_token")
    s = summarize(curves, (50, 150), [UNIT, prev], threshold=0.4)
    assert set(s["units"]) == {"induction", "previous-token"}
    # the fixture's previous-token curve falls: it starts above the threshold, so both cross at step 0
    assert s["units"]["previous-token"]["conditions"]["delete"]["shift_pct"]["mean"] == 0.0


def test_plot_curves_writes_png(tmp_path):
    curves = {"baseline": {"0": _sigmoid_curve(80)}, "delete": {"0": _sigmoid_curve(100)}}
    p = plot_curves(curves, (50, 150), tmp_path / "c.png", [UNIT], 0.4)
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
    tr = Tracker(toks, held, cadence=5, end_step=12)
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
    assert c["induction"][0][1][2] == pytest.approx(want, rel=1e-5)
    assert series(c, "prev_token", (1, 2))[0] == pytest.approx(
        np.mean([att[:, t, t - 1].mean().item() for t in range(1, 12)]), rel=1e-5)
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
    point = Tracker(toks, held, cadence=1).measure(m, 0)
    ind = heads.induction_scores(m, n=n, S=S, low=low, high=high, seed=seed).numpy()
    T = 2 * S                                 # head_scores' "mul" previous_token = per-row mean x (T-1)/T
    prev = heads.head_scores(m, tokens=toks).scores["previous_token"] * T / (T - 1)
    np.testing.assert_allclose(point["induction"], ind, rtol=1e-6)
    np.testing.assert_allclose(point["prev_token"], prev, rtol=1e-5)
    every = track.all_head_scores(m, toks)
    np.testing.assert_allclose(every["induction"], ind, rtol=1e-6)
    np.testing.assert_allclose(every["prev_token"], prev, rtol=1e-5)
    early, late = icl_positions(held.shape[1])   # prediction i is token i + 1 in heads.icl_score's terms
    assert point["icl"] == pytest.approx(heads.icl_score(m, held, early=early + 1, late=late + 1), rel=1e-6)


def test_stop_rule_stops_once_every_target_has_emerged_plus_margin():
    class FakeTracker(Tracker):
        def __init__(self, values, **kw):
            super().__init__(torch.zeros(1, 4, dtype=torch.long), None, 1, **kw)
            self.values = values

        def measure(self, model, step):           # the rule only reads the points it is given
            point = {"step": step, "induction": [[0.0], [self.values["ind"][step]]],
                     "prev_token": [[self.values["prev"][step]], [0.0]], "probe": 0.0, "icl": 0.0}
            self.points.append(point)
            self._check_stop(point)
            return point

    ind = [0.0, 0.2, 0.6, 0.7, 0.7, 0.7, 0.7]
    prev = [0.0, 0.1, 0.2, 0.55, 0.6, 0.6, 0.6]
    rule = StopRule((("induction", 1, 0), ("prev_token", 0, 0)), 0.5, after=2)
    tr = FakeTracker({"ind": ind, "prev": prev}, stop=rule)
    stopped = None
    for step in range(len(ind)):
        tr.measure(None, step)
        if tr.stop_requested:
            stopped = step
            break
    assert stopped == 5                          # prev crosses last, at step 3; 2 more steps
    with pytest.raises(ConfigError):
        StopRule((("probe", 0, 0),), 0.5)


def test_tracker_scores_each_named_heldout_set():
    from transformers import AutoModelForCausalLM

    from mda_fast.models.configs import tiny_neox_config

    torch.manual_seed(2)
    m = AutoModelForCausalLM.from_config(tiny_neox_config(vocab_size=257, hidden_size=32, intermediate_size=64),
                                         attn_implementation="eager").eval()
    toks = repeated_random_tokens(2, 4, 32, 127, seed=1)
    a, b = torch.randint(32, 127, (3, 20)), torch.randint(32, 127, (3, 20))
    c = Tracker(toks, {"mix": a, "natural": b}, cadence=1)
    c.measure(m, 0)
    curve = c.curve()
    alone = Tracker(toks, b, cadence=1).measure(m, 0)["icl"]
    assert curve["icl"] == curve["icl/mix"] and curve["icl/natural"] == [alone]
    assert series(curve, "icl/natural") == [alone]
