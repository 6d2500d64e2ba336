"""`mda heads` (heads.head_scores) against TransformerLens 4's head detector
(``transformer_lens.head_detector.detect_head``, "mul" measure) through a TransformerBridge around the
demo's model (its config, a wide random init: nothing downloaded or trained). The previous-token,
duplicate-token and induction scores agree to float tolerance when the bridge tokenizes the same
ids (no BOS); TransformerLens' default prepends a BOS, which adds a key every query may attend to
and shifts the patterns by one, so its numbers differ (README, "Peer check of localization")."""

import numpy as np
import pytest

from mda_fast.demo.config import DemoConfig
from mda_fast.heads import head_scores
from mda_fast.models.configs import model_from_config
from mda_fast.probes import make_data

from test_interop import bridge, saved_tokenizer

detector = pytest.importorskip("transformer_lens.head_detector")

PAIRS = {"previous_token": "previous_token_head", "duplicate_token": "duplicate_token_head",
         "induction": "induction_head"}


@pytest.fixture(scope="module")
def demo():
    """(bridge around the demo's model, probe tokens [n, T] of printable bytes, their texts)."""
    cfg = DemoConfig()
    config = cfg.model_config()
    config.initializer_range = 0.3  # sharper random attention than the 0.02 init's near-uniform one
    held = bridge(model_from_config(config, seed=0), saved_tokenizer())
    tokens = make_data(4, 32, cfg.probe_low, cfg.probe_high, cfg.probe_seed)
    return held, tokens, [bytes(row.tolist()).decode("ascii") for row in tokens]


def tl_scores(held, texts, bos: bool) -> dict[str, np.ndarray]:
    held.cfg.default_prepend_bos = bos
    try:
        return {ours: detector.detect_head(held, texts, theirs).double().numpy() for ours, theirs in PAIRS.items()}
    finally:
        held.cfg.default_prepend_bos = True


def test_head_detector_agrees_on_the_same_tokens(demo):
    held, tokens, texts = demo
    held.cfg.default_prepend_bos = False
    assert held.to_tokens(texts[1])[0].tolist() == tokens[1].tolist()  # the same ids reach the model
    ours = head_scores(held, tokens=tokens).scores
    theirs = tl_scores(held, texts, bos=False)
    for name in PAIRS:
        assert np.ptp(ours[name]) > 1e-3, name  # the heads differ: a definition change would show
        np.testing.assert_allclose(ours[name], theirs[name], rtol=0, atol=1e-6, err_msg=name)


def test_head_detector_default_bos_differs(demo):
    held, tokens, texts = demo
    ours = head_scores(held, tokens=tokens).scores
    theirs = tl_scores(held, texts, bos=True)
    for name in PAIRS:
        assert np.abs(ours[name] - theirs[name]).max() > 1e-5, name
