"""The exact oracle (mda_fast.oracle) against independent references on a tiny float64 GPT-NeoX.

(a) autograd through the whole unrolled run, with AdamW/clipping written out here (plain and smooth);
(b) central finite differences of retraining with the real loop (training.train) with re-weighted rows;
(c) the snapshot interval does not change the result (bitwise); (d) a killed sweep resumes bitwise.
"""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call
from transformers import GPTNeoXForCausalLM

from mda_fast.heads import eager_attention
from mda_fast.models.configs import tiny_neox_config
from mda_fast.oracle import InductionScore, Replayer, exact_metagradient
from mda_fast.oracle.step_vjp import leaves, update
from mda_fast.training import OptimConfig, train

torch.set_num_threads(1)
V, L, RPS, STEPS = 16, 9, 4, 4


def _model():
    torch.manual_seed(0)
    cfg = tiny_neox_config(vocab_size=V, hidden_size=16, num_attention_heads=2, intermediate_size=32,
                           max_position_embeddings=32)
    # sdpa as the demo trains: the oracle must switch to eager attention for the double backward
    m = GPTNeoXForCausalLM._from_config(cfg, attn_implementation="sdpa").double()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))          # biases / norms away from their 0 / 1 init
    return m


def _rows():
    g = torch.Generator().manual_seed(1)
    rows = torch.randint(0, V, (STEPS * RPS, L), generator=g)
    first = torch.randperm(2 * V, generator=g) % V       # step 0's inputs hold every token twice
    rows[:RPS, :L - 1] = first.view(RPS, L - 1)
    return rows


def _optim(smooth=False):
    # warmup 1: step 0 has lr 0 (the NeoX quirk), so its rows act only through Adam's moments
    return OptimConfig(lr=2e-2, betas=(0.9, 0.95), eps=1e-3 if smooth else 1e-8, weight_decay=0.1,
                       clip=0.5, warmup_steps=1, total_steps=8, schedule="cosine", smooth_adam=smooth)


PROBE = torch.tensor([[3, 7, 1, 12, 3, 7, 1, 12], [5, 2, 9, 14, 5, 2, 9, 14]])


def logprob_target(model):
    """float64 copy-target log-probability (independent of the package's probe code)."""
    logits = model(input_ids=PROBE[:, :-1]).logits
    return logits.log_softmax(-1)[:, 3:, :].gather(-1, PROBE[:, 4:, None]).sum()


def _lr(opt, s):
    # the schedule written out (warmup 1 -> lr 0 at s = 0; cosine to 0.1 lr over 8 steps)
    if s == 0:
        return 0.0
    frac = (s - 1) / (opt.total_steps - 1)
    return 0.1 * opt.lr + 0.9 * opt.lr * 0.5 * (1 + math.cos(math.pi * frac))


def unrolled_target(model, rows, w_all, opt, target):
    """target(theta_T) as one autograd graph over all updates, AdamW written out independently."""
    names = [n for n, _ in model.named_parameters()]
    theta = [p.detach().clone().requires_grad_() for p in model.parameters()]
    m = [torch.zeros_like(p) for p in theta]
    v = [torch.zeros_like(p) for p in theta]
    b1, b2 = opt.betas
    for s in range(STEPS):
        tok, w = rows[s * RPS:(s + 1) * RPS], w_all[s * RPS:(s + 1) * RPS]
        with eager_attention(model):
            logits = functional_call(model, dict(zip(names, theta)), (tok[:, :-1],)).logits
        ce = F.cross_entropy(logits.float().reshape(-1, V), tok[:, 1:].reshape(-1), reduction="none")
        loss = (w * ce.view(RPS, L - 1).sum(1)).sum() / (RPS * (L - 1))
        g = torch.autograd.grad(loss, theta, create_graph=True)
        norm = torch.sqrt(sum((x * x).sum() for x in g))
        g = [x * torch.clamp(opt.clip / (norm + 1e-6), max=1.0) for x in g]
        lr, n = _lr(opt, s), s + 1
        new = []
        for i, (p, gi) in enumerate(zip(theta, g)):
            wd = opt.weight_decay if p.ndim >= 2 else 0.0
            m[i] = b1 * m[i] + (1 - b1) * gi
            v[i] = b2 * v[i] + (1 - b2) * gi * gi
            mh, vh = m[i] / (1 - b1 ** n), v[i] / (1 - b2 ** n)
            den = torch.sqrt(vh + opt.eps ** 2) if opt.smooth_adam else torch.sqrt(vh) + opt.eps
            new.append(p * (1 - lr * wd) - lr * mh / den)
        theta = new
    with eager_attention(model):
        return target(_Bound(model, names, theta))


class _Bound(torch.nn.Module):
    """``model`` evaluated at the given parameter tensors (for a target written as target(model))."""

    def __init__(self, model, names, theta):
        super().__init__()
        self.model, self.params = model, dict(zip(names, theta))
        self.config = model.config

    def forward(self, **kw):
        return functional_call(self.model, self.params, (), kw)


def oracle(smooth=False, **kw):
    model = _model()
    return exact_metagradient(model, _rows(), (0, STEPS), RPS, _optim(smooth), logprob_target,
                              micro_batch=2, **kw)


@pytest.mark.parametrize("smooth", [False, True])
def test_oracle_equals_unrolled_autograd(smooth):
    mg = oracle(smooth)
    w = torch.ones(STEPS * RPS, dtype=torch.float64, requires_grad=True)
    ref = unrolled_target(_model(), _rows(), w, _optim(smooth), logprob_target)
    (ref_grad,) = torch.autograd.grad(ref, w)
    ref_grad = ref_grad.numpy()
    assert abs(mg.target - float(ref.detach())) <= 1e-7 * abs(float(ref.detach()))   # the loop's CE is float32
    assert np.abs(ref_grad).min() > 0 and np.abs(ref_grad[:RPS]).max() > 0   # every row matters
    err = np.linalg.norm(mg.weight_grad - ref_grad) / np.linalg.norm(ref_grad)
    print(f"oracle vs unrolled autograd (smooth={smooth}): relative error {err:.2e}")
    assert err <= 1e-5, (err, mg.weight_grad, ref_grad)
    np.testing.assert_array_equal(mg.row_ids, np.arange(STEPS * RPS))


def test_oracle_matches_finite_differences_of_real_retraining():
    mg = oracle()
    d = np.zeros(STEPS * RPS)
    d[[1, 6, 9, 14]] = [1.0, -1.0, 1.0, 1.0]
    h = 2.0 ** -8                                      # exact in the loop's float32 row weights

    def retrained(sign):
        model = _model()
        weights = torch.as_tensor(1.0 + sign * h * d)
        train(model, _rows(), (0, STEPS), RPS, _optim(), row_weights=lambda ids: weights[ids], micro_batch=2)
        with torch.no_grad():
            return float(logprob_target(model))

    fd = (retrained(+1) - retrained(-1)) / (2 * h)
    pred = float(mg.weight_grad @ d)
    assert abs(pred) > 1e-3
    print(f"finite differences {fd:.6g} vs oracle {pred:.6g}: relative {abs(fd - pred) / abs(pred):.2e}")
    assert abs(fd - pred) <= 2e-3 * abs(pred), (fd, pred)


def test_replayed_update_equals_the_training_step():
    """The differentiable update (step_vjp.update) reproduces the loop's real step from a replayed state.

    The key bias has no effect on any output (softmax shift), so its true gradient is 0 and plain
    Adam turns the float32 CE's rounding noise there into O(lr) steps that differ between attention
    kernels: it is checked through the model's outputs instead of entry by entry."""
    for smooth in (False, True):
        model = _model()
        rep = Replayer(model, _rows(), (0, STEPS), RPS, _optim(smooth), micro_batch=2)
        st = rep.run_to(rep.snapshot(0), 3, keep_every=1)[-1]
        after = rep.snapshot(3)
        theta, m0, v0, ones = leaves(st, RPS)
        p, m, v = update(model, st, theta, m0, v0, ones, rep.batch(2)[1], _lr(rep.optim, 2), rep.optim, 2)
        names = [n for n, _ in model.named_parameters()]
        for name, got, want in zip(names * 3, p + m + v, after.params + after.exp_avg + after.exp_avg_sq):
            if not (got is p[names.index(name)] and name.endswith("query_key_value.bias")):
                torch.testing.assert_close(got.detach(), want, rtol=1e-5, atol=1e-8)   # float32 CE
        outs = [functional_call(model, dict(zip(names, ps)), (_rows()[:, :-1],)).logits.detach()
                for ps in (p, after.params, st.params)]
        torch.testing.assert_close(outs[0], outs[1], rtol=1e-6, atol=1e-9)
        assert (outs[1] - outs[2]).abs().max() > 1e-3                     # the step did move the model


def test_snapshot_interval_does_not_change_the_result():
    base = oracle(every=1).weight_grad
    for k in (2, 3, 4):
        np.testing.assert_array_equal(oracle(every=k).weight_grad, base)


@pytest.mark.parametrize("every", [2, 4])          # progress at a snapshot / inside a segment
def test_killed_sweep_resumes_bitwise(tmp_path, every):
    full = oracle(every=every)

    def kill(step):
        if step == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        oracle(every=every, out_dir=tmp_path, save_every=1, on_step=kill)
    assert (tmp_path / "progress.pt").is_file() and not (tmp_path / "manifest.json").exists()
    resumed = oracle(every=every, out_dir=tmp_path, save_every=1)
    assert resumed.info["resumed_from"] == 2
    np.testing.assert_array_equal(resumed.weight_grad, full.weight_grad)
    assert resumed.target == full.target
    again = oracle(every=3, out_dir=tmp_path)               # complete: reused, not recomputed
    assert again.info == {"reused": True}
    np.testing.assert_array_equal(again.weight_grad, full.weight_grad)
    other = exact_metagradient(_model(), _rows(), (0, STEPS), RPS, _optim(), logprob_target,
                               micro_batch=2, out_dir=tmp_path, target_key="another target")
    assert "reused" not in other.info                      # other inputs: recomputed


def test_induction_target_is_differentiable_through_the_sweep():
    tokens = torch.cat([PROBE[:, :4], PROBE[:, :4]], 1)
    mg = exact_metagradient(_model(), _rows(), (1, STEPS), RPS, _optim(), InductionScore(1, 0, tokens))
    assert mg.weight_grad.shape == ((STEPS - 1) * RPS,) and np.all(np.isfinite(mg.weight_grad))
    assert np.abs(mg.weight_grad).max() > 0
    np.testing.assert_array_equal(mg.row_ids, np.arange(RPS, STEPS * RPS))


def test_smooth_adam_option_keeps_existing_identities():
    assert "smooth_adam" not in OptimConfig().to_dict()
    d = OptimConfig(smooth_adam=True).to_dict()
    assert d["smooth_adam"] is True and OptimConfig.from_dict(d).smooth_adam
    model = copy.deepcopy(_model())
    res = train(model, _rows(), (0, 2), RPS, _optim(True))
    assert all(math.isfinite(h["loss"]) for h in res.history)


def test_window_starting_at_a_checkpoint_gives_the_same_later_rows(tmp_path):
    """From a checkpoint of training.train at step 1 (weights + Adam moments, restored with its
    optimizer groups), the rows of steps 1.. get the metagradient of the run from step 0."""
    full = oracle()
    model = _model()
    train(model, _rows(), (0, 1), RPS, _optim(), out_dir=tmp_path / "ck", save_steps=[1], micro_batch=2)
    late = exact_metagradient(_model(), _rows(), (1, STEPS), RPS, _optim(), logprob_target, micro_batch=2,
                              init_from=tmp_path / "ck" / "step1")
    np.testing.assert_allclose(late.weight_grad, full.weight_grad[RPS:], rtol=1e-9, atol=1e-12)
    assert late.target == pytest.approx(full.target, rel=1e-12)


def test_run_exact_reads_the_window_and_settings_from_a_run(tmp_path):
    """The `mda exact` handler: checkpoint + data files -> metagrad.npz / manifest.json."""
    from mda_fast.models import load_model
    from mda_fast.oracle.run_exact import run_exact

    rows = _rows()
    np.save(tmp_path / "rows.npy", rows.numpy().astype(np.int64))
    model = _model().float()
    train(model, rows, (0, 2), RPS, _optim(), out_dir=tmp_path / "ck", save_steps=[1])
    mg = run_exact(tmp_path / "ck", str(tmp_path / "rows.npy"), 1, 3, "induction:L1.H0", tmp_path / "exact",
                   probe_n=2, probe_half=4, vocab_low=0, vocab_high=V, attention="sdpa")
    with np.load(tmp_path / "exact" / "metagrad.npz") as z:
        np.testing.assert_array_equal(z["weight_grad"], mg.weight_grad)
        np.testing.assert_array_equal(z["row_ids"], np.arange(RPS, 3 * RPS))
    direct = exact_metagradient(load_model(str(tmp_path / "ck" / "step1"), load_tokenizer=False)[0], rows, (1, 3),
                                RPS, _optim(), mg_target(), init_from=tmp_path / "ck" / "step1")
    np.testing.assert_allclose(direct.weight_grad, mg.weight_grad, rtol=1e-6, atol=1e-9)
    assert np.abs(mg.weight_grad).max() > 0
    from mda_fast.cli import main                  # `mda exact` is this handler

    assert main(["exact", "--checkpoints", str(tmp_path / "ck"), "--data", str(tmp_path / "rows.npy"), "--steps", "1:3",
                 "--target", "induction:L1.H0", "--out", str(tmp_path / "cli"), "--probe-n", "2", "--probe-half", "4",
                 "--vocab-low", "0", "--vocab-high", str(V), "--attention", "sdpa"]) == 0
    with np.load(tmp_path / "cli" / "metagrad.npz") as z:
        np.testing.assert_array_equal(z["weight_grad"], mg.weight_grad)
    assert main(["exact", "--checkpoints", str(tmp_path / "ck"), "--data", str(tmp_path / "rows.npy"), "--steps", "2:3",
                 "--out", str(tmp_path / "none")]) == 2      # no checkpoint at step 2


def mg_target():
    from mda_fast.oracle.run_exact import parse_target

    return parse_target("induction:L1.H0", 2, 4, 0, V, 12345)
