"""Probes against explicit loop implementations on tiny models."""

import math

import pytest
import torch

from mda_fast.errors import ConfigError
from mda_fast.models import make_tiny_model
from mda_fast.probes import (
    CallableProbe,
    CopyTargetProbe,
    PrevAttnProbe,
    make_data,
    parse_probe,
    probe_forward,
)


@pytest.fixture(scope="module")
def neox():
    return make_tiny_model("neox", seed=1)


def loop_copy_target(logits, tokens, offset):
    """Independent reference: python loops, math.log of a softmax computed by hand."""
    total = 0.0
    B, T = tokens.shape
    for b in range(B):
        seq = tokens[b].tolist()
        for t in range(T):
            j = max((k for k in range(t) if seq[k] == seq[t]), default=None)
            if j is None or j + offset >= T:
                continue
            row = logits[b, t].double()
            p = torch.exp(row - row.max())
            p = p / p.sum()
            total += math.log(p[seq[j + offset]].item())
    return total


def test_make_data_shape_range_determinism():
    x = make_data(5, 10, vocab_low=2, vocab_high=7, seed=3)
    assert x.shape == (5, 10) and x.dtype == torch.long
    assert torch.equal(x[:, :5], x[:, 5:])
    assert int(x.min()) >= 2 and int(x.max()) < 7
    assert torch.equal(x, make_data(5, 10, 2, 7, seed=3))
    assert not torch.equal(make_data(5, 10, 2, 200, seed=3), make_data(5, 10, 2, 200, seed=4))
    d = make_data(vocab_high=50277)
    assert d.shape == (32, 64)
    with pytest.raises(ConfigError):
        make_data(2, 7, 2, 10)
    r = PrevAttnProbe(0, 0).make_data(4, 7, 2, 50, seed=1)
    assert r.shape == (4, 7) and torch.equal(r, make_data(4, 7, 2, 50, seed=1, repeat=False))
    assert not torch.equal(r[:, :3], r[:, 3:6])
    assert CopyTargetProbe().make_data(2, 8, 2, 50, seed=1).equal(make_data(2, 8, 2, 50, seed=1))


@pytest.mark.parametrize("offset", [1, 2])
def test_copy_target_matches_loop(neox, offset):
    # mixed data: repeated halves plus a sequence with in-half repeats and a non-repeated one
    tokens = torch.cat([make_data(3, 16, 2, 20, seed=0),
                        torch.tensor([[5, 6, 5, 7, 5, 6, 8, 9, 5, 2, 3, 4, 6, 5, 7, 7]]),
                        torch.arange(2, 18)[None]])
    with torch.no_grad():
        logits = neox(tokens).logits
        got = probe_forward(neox, CopyTargetProbe(offset), tokens)
    want = loop_copy_target(logits, tokens, offset)
    assert got.shape == ()
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_copy_target_targets_on_repeated_data():
    tokens = torch.tensor([[3, 4, 5, 3, 4, 5]])
    tgt, valid = CopyTargetProbe(1).targets(tokens)
    assert valid.tolist() == [[False, False, False, True, True, True]]
    assert tgt[0, 3:].tolist() == [4, 5, 3]  # the next token of the repeat (last: wraps to index 3)
    tgt2, valid2 = CopyTargetProbe(2).targets(tokens)
    assert valid2.tolist() == [[False, False, False, True, True, True]]
    assert tgt2[0, 3:].tolist() == [5, 3, 4]


def test_copy_target_is_differentiable(neox):
    tokens = make_data(2, 16, 2, 50, seed=1)
    val = probe_forward(neox, CopyTargetProbe(), tokens)
    val.backward()
    w = neox.gpt_neox.layers[1].attention.query_key_value.weight
    assert w.grad is not None and w.grad.abs().sum() > 0
    neox.zero_grad(set_to_none=True)


@pytest.mark.parametrize("arch", ["neox", "gpt2", "llama"])
def test_prev_attn_matches_direct_attentions(arch):
    model = make_tiny_model(arch, seed=2)
    tokens = make_data(3, 12, 2, 100, seed=5)
    with torch.no_grad():
        att = model(tokens, output_attentions=True).attentions
        got = probe_forward(model, PrevAttnProbe(1, 2), tokens)
    want = sum(att[1][b, 2, t, t - 1].item() for b in range(3) for t in range(1, 12))
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_prev_attn_range_checked(neox):
    with pytest.raises(ConfigError, match="layer 5 out of range"):
        PrevAttnProbe(5, 0).check(neox)
    with pytest.raises(ConfigError, match="head 4 out of range"):
        PrevAttnProbe(0, 4).check(neox)
    PrevAttnProbe(1, 3).check(neox)


def test_callable_probe_checks_result(neox):
    tokens = make_data(2, 8, 2, 50, seed=0)
    good = CallableProbe(lambda out, tok: out.logits[:, -1, 0].sum(), name="last0")
    with torch.no_grad():
        assert probe_forward(neox, good, tokens).item() == pytest.approx(neox(tokens).logits[:, -1, 0].sum().item())
    with pytest.raises(ConfigError, match="shape \\(2,\\)"):
        probe_forward(neox, CallableProbe(lambda out, tok: out.logits[:, -1, 0]), tokens)
    with pytest.raises(ConfigError, match="non-finite"):
        probe_forward(neox, CallableProbe(lambda out, tok: out.logits.sum() * float("inf")), tokens)
    with pytest.raises(ConfigError, match="float"):
        probe_forward(neox, CallableProbe(lambda out, tok: 1.0), tokens)


def test_probe_forward_rejects_out_of_vocab(neox):
    with pytest.raises(ConfigError, match="\\[0, 256\\)"):
        probe_forward(neox, CopyTargetProbe(), torch.tensor([[3, 300, 3, 300]]))


def test_parse_probe():
    assert parse_probe("copy_target").offset == 1
    assert parse_probe("copy_target2").offset == 2
    p = parse_probe("prev_attn:L1.H3")
    assert (p.layer, p.head, p.needs_attentions) == (1, 3, True)
    assert (parse_probe("prev_attn:0.2").layer, parse_probe("prev_attn:0.2").head) == (0, 2)
    assert parse_probe("math:fsum").name == "fsum"
    with pytest.raises(ConfigError, match="unknown probe"):
        parse_probe("bogus")


def test_probe_set_defaults_have_one_value():
    """Settings, HEAD_DEFAULTS and the head scores use the probe module's defaults."""
    import inspect

    from mda_fast import probes
    from mda_fast.attribution.run.settings import HEAD_DEFAULTS, Settings
    from mda_fast.heads import head_scores

    s, kw = Settings(), inspect.signature(head_scores).parameters
    assert (s.probe_n, s.probe_seq_len, s.probe_seed, s.probe_vocab_low) == \
        (probes.DEFAULT_N, probes.DEFAULT_SEQ_LEN, probes.DEFAULT_SEED, probes.DEFAULT_VOCAB_LOW)
    assert [HEAD_DEFAULTS[k] for k in ("n", "seq_len", "seed", "vocab_low")] == \
        [kw[k].default for k in ("n", "seq_len", "seed", "vocab_low")] == \
        [probes.DEFAULT_N, probes.DEFAULT_SEQ_LEN, probes.DEFAULT_SEED, probes.DEFAULT_VOCAB_LOW]
