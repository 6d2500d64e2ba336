"""Head scores vs explicit loops, hand-set attention, ICL score, outputs and the `mda heads` CLI."""

import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mda_fast.cli import main
from mda_fast.errors import ConfigError
from mda_fast.heads import HeadScores, head_scores, icl_score, induction_scores
from mda_fast.models import make_tiny_model
from mda_fast.probes import make_data


def loop_scores(att_layers, tokens):
    """Brute force: TransformerLens patterns and "mul" with python loops, averaged over sequences.
    Returns {name: [L, H]} including prefix_matching (mean over rows that have an induction target)."""
    B, T = tokens.shape
    L, H = len(att_layers), att_layers[0].shape[1]
    out = {k: np.zeros((L, H)) for k in ("previous_token", "duplicate_token", "induction", "prefix_matching")}
    for b in range(B):
        tok = tokens[b].tolist()
        pats = {"previous_token": lambda q, k: k == q - 1,
                "duplicate_token": lambda q, k: k < q and tok[k] == tok[q],
                "induction": lambda q, k: 1 <= k <= q and tok[k - 1] == tok[q] and k - 1 < q}
        for l in range(L):
            for h in range(H):
                A = att_layers[l][b, h].double()
                total = A.sum().item()
                for name, pat in pats.items():
                    s = sum(A[q, k].item() for q in range(T) for k in range(T) if pat(q, k))
                    out[name][l, h] += s / total / B
                rows = [q for q in range(T) if any(pats["induction"](q, k) for k in range(T))]
                pm = [sum(A[q, k].item() for k in range(T) if pats["induction"](q, k)) for q in rows]
                out["prefix_matching"][l, h] += np.mean(pm) / B
    return out


@pytest.mark.parametrize("arch", ["neox", "gpt2", "llama"])
def test_head_scores_match_loops(arch):
    model = make_tiny_model(arch, seed=4)
    tokens = make_data(3, 12, 2, 9, seed=7)  # tiny vocab: in-half repeats exercise the patterns
    res = head_scores(model, tokens=tokens, batch_size=2)
    with torch.no_grad():
        att = model(tokens, output_attentions=True).attentions
    want = loop_scores(att, tokens)
    assert res.shape == (2, 4)
    for name, w in want.items():
        np.testing.assert_allclose(res.scores[name], w, rtol=1e-5, atol=1e-7, err_msg=name)


def test_scores_do_not_depend_on_batch_size():
    model = make_tiny_model("neox", seed=1)
    a = head_scores(model, n=5, seq_len=16, vocab_high=200, batch_size=1)
    b = head_scores(model, n=5, seq_len=16, vocab_high=200, batch_size=4)
    for name in a.scores:
        np.testing.assert_allclose(a.scores[name], b.scores[name], rtol=1e-6)


class HandSetModel(torch.nn.Module):
    """1 layer, 4 heads whose attention is set by hand from the tokens (no softmax):
    head 0 = previous-token, 1 = duplicate, 2 = induction pattern (rows normalised; empty rows
    zero); head 3 = induction but empty rows attend to themselves, as a real softmax must."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(num_hidden_layers=1, num_attention_heads=4, vocab_size=64,
                                      max_position_embeddings=128)

    def forward(self, input_ids, output_attentions=False, use_cache=False):
        B, T = input_ids.shape
        eq = input_ids[:, :, None] == input_ids[:, None, :]
        prev = torch.diag(torch.ones(T - 1), -1).expand(B, T, T)
        dup = (eq & torch.ones(T, T, dtype=torch.bool).tril(-1)).float()
        ind = torch.zeros(B, T, T)
        ind[:, :, 1:] = dup[:, :, :-1]
        heads = [prev, dup, ind]
        norm = [p / p.sum(-1, keepdim=True).clamp_min(1) for p in heads]
        real = norm[2] + torch.diag_embed((norm[2].sum(-1) == 0).float())
        return SimpleNamespace(attentions=(torch.stack([*norm, real], dim=1),))


def test_hand_set_heads_score_one_on_their_pattern():
    res = head_scores(HandSetModel(), n=4, seq_len=20, vocab_high=64)
    s = res.scores
    assert s["previous_token"][0, 0] == pytest.approx(1.0)
    assert s["duplicate_token"][0, 1] == pytest.approx(1.0)
    assert s["induction"][0, 2] == pytest.approx(1.0)
    assert s["prefix_matching"][0, 3] == pytest.approx(1.0)
    # mul counts the first half (nothing to match): about half the mass, as TransformerLens reports
    assert 0.4 < s["induction"][0, 3] < 0.6
    assert s["previous_token"][0, 2] < 0.5 and s["induction"][0, 0] < 0.5
    assert res.top("prefix_matching", 1)[0][:2] in [(0, 2), (0, 3)]


def test_induction_scores_is_mean_attention_to_t_minus_s_plus_1():
    model = make_tiny_model("gpt2", seed=5)
    S = 8
    got = induction_scores(model, n=3, S=S, low=2, high=256, seed=11)
    tokens = make_data(3, 2 * S, 2, 256, seed=11)
    with torch.no_grad():
        att = model(tokens, output_attentions=True).attentions
    for l in range(2):
        for h in range(4):
            want = np.mean([att[l][b, h, t, t - S + 1].item() for b in range(3) for t in range(S, 2 * S)])
            assert got[l, h].item() == pytest.approx(want, rel=1e-5)


def test_icl_score_matches_manual_loss():
    model = make_tiny_model("neox", seed=2)
    tokens = torch.randint(2, 256, (3, 30), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(tokens).logits
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")

    def loss_at(i):  # loss of token i (predicted from position i-1)
        return nll[:, i - 1].mean().item()

    # T=30 <= 500: positions scaled by 29/500 -> early round(2.9)=3, late round(29)=29
    assert icl_score(model, tokens) == pytest.approx(loss_at(29) - loss_at(3), rel=1e-5, abs=1e-6)
    assert icl_score(model, tokens, early=5, late=20) == pytest.approx(loss_at(20) - loss_at(5), rel=1e-5, abs=1e-6)


def test_bad_inputs():
    model = make_tiny_model("neox")
    with pytest.raises(ConfigError, match="\\[0, 256\\)"):
        head_scores(model, n=2, seq_len=8, vocab_high=300)
    with pytest.raises(ConfigError, match="context"):
        head_scores(model, n=1, seq_len=300, vocab_high=256)
    with pytest.raises(ConfigError, match="unknown head score"):
        head_scores(model, n=1, seq_len=8, vocab_high=256).top("bogus")


def test_outputs_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    res = HeadScores({k: rng.random((3, 5)) for k in ("previous_token", "induction")}, "m", "step1", {"n": 2})
    res.to_csv(tmp_path / "h.csv")
    res.to_json(tmp_path / "h.json")
    res.heatmap(tmp_path / "h.png")
    rows = list(csv.DictReader(open(tmp_path / "h.csv")))
    assert len(rows) == 15 and rows[7]["layer"] == "1" and rows[7]["head"] == "2"
    assert float(rows[7]["induction"]) == pytest.approx(res.scores["induction"][1, 2], abs=1e-6)
    back = HeadScores.from_json(tmp_path / "h.json")
    np.testing.assert_allclose(back.scores["induction"], res.scores["induction"])
    assert json.loads((tmp_path / "h.json").read_text())["top"]["induction"][0]["score"] == res.scores["induction"].max()
    assert (tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob("*.tmp"))
    best = res.top("induction", 2)
    assert best[0][2] >= best[1][2] and best[0][2] == res.scores["induction"].max()


def test_cli_heads_writes_outputs(tmp_path, capsys):
    make_tiny_model("neox", seed=0).save_pretrained(tmp_path / "model")
    out = tmp_path / "out"
    rc = main(["heads", "--model", str(tmp_path / "model"), "--n", "4", "--seq-len", "16", "--vocab-high", "200",
               "-k", "3", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "2 layers x 4 heads" in text and text.count("L") >= 3
    assert {p.name for p in out.iterdir()} == {"heads.csv", "heads.json", "heads.png"}
    assert json.loads((out / "heads.json").read_text())["settings"]["seq_len"] == 16


def test_cli_heads_missing_model_is_one_line_error(tmp_path, capsys):
    rc = main(["heads", "--model", str(tmp_path / "missing")])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("mda: error: model directory") and "does not exist" in err and err.count("\n") == 1


def test_sdpa_model_is_switched_to_eager_and_back():
    from transformers import AutoModelForCausalLM

    from mda_fast.models import tiny_neox_config

    torch.manual_seed(0)
    sdpa = AutoModelForCausalLM.from_config(tiny_neox_config(), attn_implementation="sdpa").eval()
    eager = make_tiny_model("neox", seed=9)
    eager.load_state_dict(sdpa.state_dict())
    a = head_scores(sdpa, n=2, seq_len=8, vocab_high=100)
    assert sdpa.config._attn_implementation == "sdpa"
    np.testing.assert_allclose(a.scores["induction"], head_scores(eager, n=2, seq_len=8, vocab_high=100).scores["induction"])
