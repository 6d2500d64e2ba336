"""`mda heads` (heads.head_scores) against TransformerLens 4's head detector
(``transformer_lens.head_detector.detect_head``, "mul" measure) through a TransformerBridge around the
demo's model (its config, a wide random init: nothing downloaded or trained). The previous-token,
duplicate-token and induction scores agree to float tolerance when the bridge tokenizes the same
ids (the bridge's default for GPT-NeoX: no BOS); with a BOS prepended (its default for most other
architectures) there is one more key every query may attend to and every pattern shifts by one, so
the numbers differ (README, "Peer check of localization")."""

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


def tl_scores(held, texts, bos: bool | None = None) -> dict[str, np.ndarray]:
    """detect_head's scores of ``texts``; ``bos``: prepend a BOS (None: the bridge's default)."""
    default = held.cfg.default_prepend_bos
    held.cfg.default_prepend_bos = default if bos is None else bos
    try:
        return {ours: detector.detect_head(held, texts, theirs).double().numpy() for ours, theirs in PAIRS.items()}
    finally:
        held.cfg.default_prepend_bos = default


def test_head_detector_agrees_on_the_same_tokens(demo):
    held, tokens, texts = demo
    # TransformerLens 4 prepends no BOS to GPT-NeoX (Pythia was not trained with one): the same ids
    assert held.cfg.default_prepend_bos is False
    assert held.to_tokens(texts[1])[0].tolist() == tokens[1].tolist()
    ours = head_scores(held, tokens=tokens).scores
    theirs = tl_scores(held, texts)
    for name in PAIRS:
        assert np.ptp(ours[name]) > 1e-3, name  # the heads differ: a definition change would show
        np.testing.assert_allclose(ours[name], theirs[name], rtol=0, atol=1e-6, err_msg=name)


def test_head_detector_with_a_bos_differs(demo):
    """prepend_bos=True (TransformerLens' default for GPT-2, Llama and most others) scores
    [BOS] + the sequence: one more key to attend to, every pattern shifted by one."""
    held, tokens, texts = demo
    ours = head_scores(held, tokens=tokens).scores
    theirs = tl_scores(held, texts, bos=True)
    for name in PAIRS:
        assert np.abs(ours[name] - theirs[name]).max() > 1e-5, name
