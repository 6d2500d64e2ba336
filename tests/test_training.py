"""Training loop: resume exactness, masked rows, schedule, checkpoints."""

import json
import math

import numpy as np
import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from mda_fast.errors import ConfigError, DataError
from mda_fast.training import (OptimConfig, list_checkpoints, lr_at, pythia_save_steps, read_state,
                               train)
from mda_fast.models.loss import model_row_losses as row_losses

V, L = 50, 17


def tiny_model(seed=0):
    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    return GPTNeoXForCausalLM(cfg)


class Rows:
    """Minimal RowSource: read(positions) + row_ids() (global ids offset by 1000)."""

    def __init__(self, n=200, seed=0):
        self.data = np.random.default_rng(seed).integers(0, V, size=(n, L))
        self.seq_len = L

    def __len__(self):
        return len(self.data)

    def row_ids(self):
        return np.arange(len(self.data)) + 1000

    def read(self, positions):
        return self.data[positions]


def params(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


OPT = OptimConfig(lr=3e-3, weight_decay=0.01, warmup_steps=3, total_steps=20)


def test_resume_matches_straight_run(tmp_path):
    src = Rows()
    m1 = tiny_model()
    train(m1, src, (0, 20), 4, OPT, out_dir=tmp_path / "a", save_steps=[10, 20])
    m2 = tiny_model()
    train(m2, src, (0, 10), 4, OPT, out_dir=tmp_path / "b", save_steps=[10])
    m3 = tiny_model(seed=99)  # different init: everything must come from the checkpoint
    res = train(m3, src, (0, 20), 4, OPT, out_dir=tmp_path / "b", save_steps=[20])
    assert res.start_step == 10 and len(res.history) == 10
    p1, p3 = params(m1), params(m3)
    for k in p1:
        torch.testing.assert_close(p3[k], p1[k], rtol=1e-6, atol=1e-7)
    # also via init_from into a new out_dir (the intervention path)
    m4 = tiny_model(seed=5)
    train(m4, src, (10, 20), 4, OPT, out_dir=tmp_path / "c", init_from=tmp_path / "b" / "step10")
    for k, v in params(m4).items():
        torch.testing.assert_close(v, p1[k], rtol=1e-6, atol=1e-7)
    # and the model actually moved
    assert any((params(tiny_model())[k] - p1[k]).abs().max() > 1e-3 for k in p1)


def test_init_from_wrong_step(tmp_path):
    src = Rows()
    train(tiny_model(), src, (0, 2), 4, OPT, out_dir=tmp_path, save_steps=[2])
    with pytest.raises(ConfigError, match="step 2"):
        train(tiny_model(), src, (5, 6), 4, OPT, init_from=tmp_path / "step2")


def test_zero_weight_equals_row_removed():
    torch.manual_seed(0)
    tokens = torch.randint(0, V, (6, L))
    ids = torch.arange(6)
    m = tiny_model()
    # the loop's objective with row 2 deleted
    w = (ids != 2).float()
    loss = (w * row_losses(m, tokens)).sum() / (6 * (L - 1))
    loss.backward()
    g_masked = {n: p.grad.clone() for n, p in m.named_parameters()}
    m.zero_grad()
    # the same rows without row 2, same per-token normalization
    keep = tokens[ids != 2]
    (row_losses(m, keep).sum() / (6 * (L - 1))).backward()
    for n, p in m.named_parameters():
        torch.testing.assert_close(g_masked[n], p.grad, rtol=1e-5, atol=1e-7)


def test_row_weights_in_loop_and_transform():
    src = Rows()
    seen = []

    def weights(row_ids):
        seen.append(row_ids.clone())
        return (row_ids % 2 == 0).float()

    def transform(step, row_ids, tokens):
        # duplicate the first row in place of the last
        row_ids, tokens = row_ids.clone(), tokens.clone()
        row_ids[-1], tokens[-1] = row_ids[0], tokens[0]
        return row_ids, tokens

    res = train(tiny_model(), src, (3, 5), 4, OPT, row_weights=weights, batch_transform=transform)
    assert seen[0].tolist() == [1012, 1013, 1014, 1012]    # step 3 = positions 12..15, ids +1000
    assert seen[1].tolist() == [1016, 1017, 1018, 1016]
    assert [h["rows_zero_weight"] for h in res.history] == [1, 1]
    assert [h["step"] for h in res.history] == [4, 5]


def test_all_zero_weights_leave_weights_but_decay():
    """Weight 0 on every row: no gradient signal, only decoupled weight decay changes matrices."""
    m = tiny_model()
    before = params(m)
    opt = OptimConfig(lr=1e-2, weight_decay=0.0, schedule="constant", clip=None)
    train(m, Rows(), (0, 3), 4, opt, row_weights=lambda ids: torch.zeros(len(ids)))
    for k, v in params(m).items():
        torch.testing.assert_close(v, before[k])


def test_micro_batch_same_gradient():
    """Micro-batching splits the same normalized sum: the first update's gradient is unchanged."""
    src = Rows()
    grads = []

    def grab(step, model, metrics):
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})

    opt = OptimConfig(lr=3e-3, clip=None, schedule="constant")
    r1 = train(tiny_model(), src, (0, 1), 8, opt, callbacks=[grab])
    r2 = train(tiny_model(), src, (0, 1), 8, opt, callbacks=[grab], micro_batch=3)
    for n, g in grads[0].items():
        torch.testing.assert_close(grads[1][n], g, rtol=1e-5, atol=1e-7)
    assert r1.history[0]["loss"] == pytest.approx(r2.history[0]["loss"], rel=1e-6)


def test_checkpoints_layout_and_callbacks(tmp_path):
    from transformers import AutoModelForCausalLM

    calls = []

    class CB:
        def on_train_start(self, step, model):
            calls.append(("start", step))

        def on_step_end(self, step, model, metrics):
            calls.append(("end", step, metrics["step"]))

    m = tiny_model()
    res = train(m, Rows(), (0, 5), 4, OPT, out_dir=tmp_path, save_steps=pythia_save_steps(5, every=4),
                callbacks=[CB(), lambda s, mdl, met: calls.append(("fn", s))])
    assert sorted(list_checkpoints(tmp_path)) == [0, 1, 2, 4, 5] == res.saved
    assert calls[0] == ("start", 0) and ("end", 3, 3) in calls and ("fn", 5) in calls
    d = tmp_path / "step4"
    assert (d / "model.safetensors").is_file() and (d / "optimizer.pt").is_file()
    st = read_state(d)
    assert st["step"] == 4 and st["rows_per_step"] == 4 and "torch" in st["rng"]
    assert not list(tmp_path.glob("*.tmp"))
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3, 4, 5]
    hf = AutoModelForCausalLM.from_pretrained(d)
    # step5 weights differ from step4: loading step4 really gives the step-4 state
    m5 = AutoModelForCausalLM.from_pretrained(tmp_path / "step5")
    k = "gpt_neox.layers.0.attention.query_key_value.weight"
    assert not torch.equal(hf.state_dict()[k], m5.state_dict()[k])
    torch.testing.assert_close(m5.state_dict()[k], m.state_dict()[k])


def test_pythia_save_steps():
    assert pythia_save_steps(143000)[:12] == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000]
    assert pythia_save_steps(143000)[-1] == 143000 and len(pythia_save_steps(143000)) == 154
    assert pythia_save_steps(300, every=100, extra=[150, 999]) == \
        [0, 1, 2, 4, 8, 16, 32, 64, 100, 128, 150, 200, 256, 300]
    with pytest.raises(ConfigError):
        pythia_save_steps(10, every=0)


def test_schedule_neox():
    cfg = OptimConfig.pythia("pythia-70m-deduped")
    assert cfg.lr == 1e-3 and cfg.warmup_steps == 1430 and cfg.weight_decay == 0.1
    assert lr_at(cfg, 0) == 0.0
    assert lr_at(cfg, 715) == pytest.approx(5e-4)
    assert lr_at(cfg, 1430) == pytest.approx(1e-3)
    assert lr_at(cfg, 143000) == pytest.approx(1e-4)
    mid = 1430 + (143000 - 1430) // 2
    assert lr_at(cfg, mid) == pytest.approx(1e-4 + 0.9e-3 * 0.5 * (1 + math.cos(math.pi * 0.5)), rel=1e-4)
    const = OptimConfig(lr=3e-3, schedule="constant")
    assert lr_at(const, 0) == lr_at(const, 10**6) == 3e-3
    with pytest.raises(ConfigError):
        OptimConfig.pythia("999m")
    with pytest.raises(ConfigError):
        OptimConfig(schedule="linear")


def test_bad_window():
    with pytest.raises(DataError, match="200 rows"):
        train(tiny_model(), Rows(), (0, 60), 4, OPT)
    with pytest.raises(ConfigError):
        train(tiny_model(), Rows(), (5, 2), 4, OPT)


def test_a_callback_can_stop_the_run(tmp_path):
    class StopAt:
        stop_requested = False

        def on_step_end(self, step, model, metrics):
            self.stop_requested = step >= 3

    m = tiny_model()
    res = train(m, Rows(), (0, 10), 4, OPT, out_dir=tmp_path, save_steps=[2, 3, 10], callbacks=[StopAt()])
    assert res.end_step == 3 and len(res.history) == 3 and res.saved == [2, 3]
    straight = tiny_model()
    train(straight, Rows(), (0, 3), 4, OPT)
    for a, b in zip(m.parameters(), straight.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
