"""Op 5, linear_cross_entropy: chunked LM head + CE + hidden gradient + label draw vs the plain path,
across chunk sizes, fp32 and bf16; and that a captured pass never forms a [B, T, V] tensor; the
Triton head (interpreter on CPU) vs the torch head and the plain path."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from mda_fast.attribution.score.forward import captured_pass, row_uniforms
from oracles import sample_labels
from mda_fast.models import make_tiny_model
from mda_fast.models.loss import row_losses
from mda_fast.ops import op_linear_cross_entropy as lce
from mda_fast.units import Unit, get_adapter
from op_cases import need

B, T, D, V = 3, 11, 13, 37  # odd sizes: chunks straddle rows
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.bfloat16: dict(rtol=2e-2, atol=2e-2)}


def inputs(dtype, bias=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(B, T, D, generator=gen).to(dtype)
    W = (torch.randn(V, D, generator=gen) * 0.5).to(dtype)
    b = (torch.randn(V, generator=gen) * 0.1).to(dtype) if bias else None
    y = torch.randint(0, V, (B, T), generator=gen)
    return h, W, b, y


def plain(h, W, b, y, go):
    """Row losses and d(sum go * loss)/dh by autograd through the full [B, T, V] logits."""
    h = h.clone().requires_grad_(True)
    loss = lce.reference(h, W, b, y)
    (loss * go).sum().backward()
    return loss.detach(), h.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("chunk", [1, 7, 32, None])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_plain_path(dtype, chunk, bias):
    h, W, b, y = inputs(dtype, bias)
    go = torch.tensor([1.0, -0.5, 2.0])  # rows weighted: the precomputed gradient scales per row
    want_loss, want_grad = plain(h, W, b, y, go)
    hh = h.clone().requires_grad_(True)
    loss = lce.linear_cross_entropy(hh, W, b, y, chunk=chunk)
    (loss * go).sum().backward()
    assert loss.dtype == torch.float32 and hh.grad.dtype == dtype
    torch.testing.assert_close(loss, want_loss, **TOL[dtype])
    torch.testing.assert_close(hh.grad.float(), want_grad.float(), **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_chunk_sizes_agree_and_label_sets_share_a_pass(dtype):
    h, W, b, y = inputs(dtype, seed=1)
    y2 = torch.roll(y, 1, dims=1)
    u = row_uniforms(torch.arange(B) + 40, 5, T)
    full_loss, full_grad, full_drawn = lce.chunked(h, W, b, [y, y2], u, chunk=B * T)
    for chunk in (1, 4, 9):
        loss, grad, drawn = lce.chunked(h, W, b, [y, y2], u, chunk=chunk)
        torch.testing.assert_close(loss, full_loss, rtol=1e-6, atol=1e-5)
        torch.testing.assert_close(grad.float(), full_grad.float(), rtol=1e-6, atol=1e-6)
        assert torch.equal(drawn, full_drawn)
    for k, labels in enumerate([y, y2, full_drawn]):  # every set equals its own single-set pass
        torch.testing.assert_close(full_loss[k], lce.chunked(h, W, b, [labels])[0][0], rtol=1e-6, atol=1e-5)


def test_draw_equals_sampling_the_full_logits():
    h, W, b, _ = inputs(torch.float32, seed=2)
    ids = torch.tensor([7, 1000, 3])
    logits = lce.F.linear(h, W, b)  # [B, T, V]
    want = sample_labels(logits, ids, seed=11)
    _, _, drawn = lce.chunked(h, W, b, [], row_uniforms(ids, 11, T), chunk=5)
    assert torch.equal(drawn, want)
    assert len(torch.unique(drawn)) > 5  # a real draw, not a constant
    other = lce.chunked(h, W, b, [], row_uniforms(ids, 12, T), chunk=5)[2]
    assert not torch.equal(drawn, other)


def test_bad_input_names_the_argument():
    h, W, b, y = inputs(torch.float32)
    with pytest.raises(ValueError, match="weight must have shape"):
        lce.chunked(h, W[:, :5], b, [y])
    with pytest.raises(ValueError, match=r"labels\[0\] must lie in"):
        lce.chunked(h, W, b, [y + V])
    with pytest.raises(ValueError, match="at least one label set"):
        lce.chunked(h, W, b, [])


class _Largest(TorchDispatchMode):
    """Records the largest number of elements of any tensor an op returns with a dimension of
    size ``vocab`` that is not the LM head's weight [V, d] (or a view of it)."""

    def __init__(self, vocab, d):
        super().__init__()
        self.vocab, self.d, self.largest = vocab, d, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and self.vocab in t.shape and t.numel() != self.vocab * self.d:
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("labels", ["data", "sampled"])
def test_captured_pass_forms_no_vocabulary_sized_tensor(labels, monkeypatch):
    vocab = 4096  # > every other activation of the model per token (d 64, MLP 256)
    model = make_tiny_model("neox", seed=0, vocab_size=vocab)
    adapter = get_adapter(model)
    blocks = Unit.parse("L1.H2.qkvo").blocks(adapter)
    tokens = torch.randint(0, vocab, (4, 33))
    monkeypatch.setattr(lce, "CHUNK_ELEMS", 16 * vocab)  # chunks of 16 of the 128 tokens
    with _Largest(vocab, 64) as seen:
        _, g, loss = captured_pass(model, adapter, blocks, tokens, torch.arange(4), labels=labels, seed=3)
    assert seen.largest <= 16 * vocab < 4 * 32 * vocab
    # and the pass still is the plain one: same row losses as the full logits give
    inputs_, targets = tokens[:, :-1], tokens[:, 1:]
    with torch.no_grad():
        logits = model(input_ids=inputs_).logits
    if labels == "sampled":
        targets = sample_labels(logits, torch.arange(4), 3)
    torch.testing.assert_close(loss, row_losses(logits, targets), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("arch", ["neox", "gpt2", "llama"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_captured_pass_equals_the_plain_eager_pass(arch, dtype):
    """Chunked head + fused attention give the captures of the plain path (eager attention, full
    logits, F.cross_entropy); the model keeps its eager attention afterwards."""
    from mda_fast.capture import Capture

    model = make_tiny_model(arch, seed=1).to(dtype)
    adapter = get_adapter(model)
    blocks = Unit.parse("L1.H1.qkvo").blocks(adapter)
    tokens = torch.randint(0, 256, (3, 20))
    _, g, loss = captured_pass(model, adapter, blocks, tokens, torch.arange(3))
    assert model.config._attn_implementation == "eager"
    with Capture(model, blocks, grad_only_from_layer=True, adapter=adapter) as cap:
        want_loss = row_losses(model(input_ids=tokens[:, :-1]).logits, tokens[:, 1:])
        want_loss.sum().backward()
        want = cap.g
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=5e-2, atol=5e-2)
    torch.testing.assert_close(loss, want_loss.detach(), **tol)
    for name in want:
        scale = float(want[name].float().abs().max())
        torch.testing.assert_close(g[name].float() / scale, want[name].float() / scale, **tol)


@pytest.mark.parametrize("block", [1, 4, 36, 37])
def test_two_level_draw_equals_one_level(block):
    """The block-sum search finds the label a single float64 CDF over the whole vocabulary finds."""
    gen = torch.Generator().manual_seed(4)
    probs = torch.softmax(torch.randn(500, V, generator=gen) * 3, -1)
    u = torch.rand(500, generator=gen, dtype=torch.float64)
    cdf = probs.double().cumsum(-1)
    want = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None]).squeeze(-1).clamp(max=V - 1)
    got = lce.inverse_cdf(probs, u, block=block)
    assert torch.equal(got, want)  # (fp32 block sums could move a draw sitting within 1e-7 of a boundary)
    assert len(torch.unique(want)) > V // 2


# ---- Triton head (kernels/linear_cross_entropy.py) vs the torch head and the plain path ------------
# Under TRITON_INTERPRET=1 on CPU tensors (tests/conftest.py sets it without CUDA), compiled on CUDA.
# Tolerances: the kernel's fp32 exp/sum orders differ from torch's by ulps, so losses, lse and p agree
# to ~1e-6 relative (fp32 TOL above); bf16 adds the rounding of p to bf16 before p @ W (bf16 TOL).
# Draws: both take the fp32 sum of each 1024-block of p; those sums can differ by ~1e-7 of a block's
# mass, which moves a draw only when u * total lies that close to a CDF boundary. So a draw may differ
# only where the float64 margin (distance of the target from the nearest boundary, relative to the
# total) is below DRAW_MARGIN; at these sizes none does.
TRITON = [pytest.param("triton", "cpu", id="triton-cpu"), pytest.param("triton", "cuda", id="triton-cuda")]
DRAW_MARGIN = 1e-5


def draw_margin(p, u):
    """[c] float64: distance of u * total from the nearest boundary of the float64 CDF of p, / total."""
    cdf = p.double().cumsum(-1)
    tot = cdf[:, -1:]
    return ((cdf - u.double()[:, None] * tot).abs() / tot).amin(-1).cpu()


def same_draws(got, want, margin):
    diff = (got.reshape(-1) != want.reshape(-1)).cpu()
    assert (margin.reshape(-1)[diff] < DRAW_MARGIN).all(), "a draw differs away from a CDF boundary"
    assert not diff.any()  # expected at these sizes; a failure here alone means a boundary case


def lce_inputs(N_rows, T_, D_, V_, dtype, bias, device, seed):
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(T_, N_rows, D_, generator=gen).to(dtype).transpose(0, 1)  # [B, T, d], not contiguous
    W = (torch.randn(V_, D_, generator=gen) * 0.5).to(dtype)
    b = (torch.randn(V_, generator=gen) * 0.1).to(dtype) if bias else None
    ys = [torch.randint(0, V_, (N_rows, T_), generator=gen) for _ in range(2)]
    u = torch.rand(N_rows, T_, generator=gen, dtype=torch.float64)
    mv = lambda x: None if x is None else x.to(device)  # noqa: E731
    return mv(h), mv(W), mv(b), [mv(y) for y in ys], mv(u)


@pytest.mark.parametrize("backend,device", TRITON)
@pytest.mark.parametrize("V_", [257, 1031, 2100])  # one block; 1024 + a ragged 7; 3 blocks, ragged 52
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("chunk", [1, 7, None])
def test_triton_head_matches_torch_chunked(backend, device, V_, dtype, chunk):
    need(backend, device)
    h, W, b, ys, u = lce_inputs(3, 3, 13, V_, dtype, bias=V_ != 1031, device=device, seed=V_)  # 9 tokens
    for K in (0, 1, 2):  # given label sets, plus the drawn one
        got = lce.chunked(h, W, b, ys[:K], u, chunk=chunk, backend="triton")
        want = lce.chunked(h, W, b, ys[:K], u, chunk=chunk, backend="torch")
        torch.testing.assert_close(got[0], want[0], **TOL[dtype])
        torch.testing.assert_close(got[1].float(), want[1].float(), **TOL[dtype])
        assert got[1].dtype == dtype and got[2].dtype == torch.long
        logits = lce.F.linear(h, W, b).float().reshape(-1, V_)
        same_draws(got[2], want[2], draw_margin(torch.softmax(logits, -1), u.reshape(-1)))
    # no uniforms: the kernel's no-draw specialization
    got = lce.chunked(h, W, b, ys, chunk=chunk, backend="triton")
    torch.testing.assert_close(got[0], want[0][:2], **TOL[dtype])
    assert got[2] is None


@pytest.mark.parametrize("backend,device", TRITON)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("bias", [True, False])
def test_triton_path_matches_plain_path(backend, device, dtype, bias):
    """Losses and the hidden-state gradient through autograd equal reference()'s."""
    need(backend, device)
    h, W, b, ys, _ = lce_inputs(3, 5, 13, 1031, dtype, bias, device, seed=7)
    go = torch.tensor([1.0, -0.5, 2.0], device=device)
    want_loss, want_grad = plain(h, W, b, ys[0], go)
    hh = h.detach().clone().requires_grad_(True)
    loss = lce.linear_cross_entropy(hh, W, b, ys[0], chunk=4, backend="triton")
    (loss * go).sum().backward()
    torch.testing.assert_close(loss, want_loss, **TOL[dtype])
    torch.testing.assert_close(hh.grad.float(), want_grad.float(), **TOL[dtype])


@pytest.mark.parametrize("backend,device", TRITON)
def test_triton_head_draws_like_inverse_cdf(backend, device):
    """The head alone on 120 rows of flat to peaked logits: p in place, lse, losses, draws."""
    need(backend, device)
    from mda_fast.ops import backend_triton

    gen = torch.Generator().manual_seed(5)
    V_ = 2100
    z = torch.randn(120, V_, generator=gen) * torch.linspace(0.1, 8, 120)[:, None]
    u = torch.rand(120, generator=gen, dtype=torch.float64)
    ys = [torch.randint(0, V_, (120,), generator=gen) for _ in range(2)]
    z, u, ys = z.to(device), u.to(device), [y.to(device) for y in ys]
    zt, zk = z.clone(), z.clone()
    want = lce.head(zt, ys, u)
    got = backend_triton.linear_cross_entropy_head(zk, ys, u)
    torch.testing.assert_close(zk, zt, rtol=1e-5, atol=1e-7)  # p written in place
    torch.testing.assert_close(got[0], want[0], **TOL[torch.float32])
    torch.testing.assert_close(got[1], want[1], **TOL[torch.float32])
    same_draws(got[2], want[2], draw_margin(zt, u))
    assert len(torch.unique(got[2])) > 60


def test_auto_head_backend_and_unimplemented_backends(monkeypatch):
    h, W, b, y = inputs(torch.float32)
    want = lce.chunked(h, W, b, [y], backend="torch")[0]
    assert torch.equal(lce.chunked(h, W, b, [y])[0], want)  # CPU auto: torch (never the interpreter)
    for name in ("cpp", "cuda"):
        with pytest.raises(ValueError, match="backend="):
            lce.chunked(h, W, b, [y], backend=name)
    # CUDA tensors: auto takes triton when it is there, never the cuda extension (no op 5 in it)
    from mda_fast.ops import backends

    cuda, has = torch.device("cuda"), lce.HAS
    monkeypatch.setitem(backends._cache, "cuda", (True, "fake"))
    monkeypatch.setitem(backends._cache, "triton", (False, "fake"))
    assert backends.choose("auto", cuda, empty=False, prefer_cpp=False, has=has) == "torch"
    monkeypatch.setitem(backends._cache, "triton", (True, "fake"))
    assert backends.choose("auto", cuda, empty=False, prefer_cpp=False, has=has) == "triton"


def test_run_backend_setting_reaches_op5(monkeypatch):
    """The run's backend names op 5's head when op 5 has it (torch, triton); any other means auto."""
    from mda_fast.attribution.score import forward

    seen = []
    real = lce.chunked
    monkeypatch.setattr(lce, "chunked", lambda *a, backend="auto", **k: seen.append(backend) or real(*a, **k))
    h = torch.randn(2, 5, 8)
    head = torch.nn.Linear(8, 11, bias=False)
    monkeypatch.setattr(forward, "lm_head", lambda model: (head.weight.detach(), None))  # a bare LM head
    for setting, expect in (("torch", "torch"), ("cpp", "auto"), ("auto", "auto")):
        forward.head_losses(None, h, torch.randint(0, 11, (2, 5)), torch.arange(2), 0, ("data",), setting)
        assert seen[-1] == expect
