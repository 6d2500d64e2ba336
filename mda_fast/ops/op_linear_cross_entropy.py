"""Op 5, linear_cross_entropy: LM head + row losses + gradient into the final hidden state, in token
chunks, never a [B, T, V] tensor (fused linear-cross-entropy in the manner of Liger-Kernel).

    z_t = W h_t + c  [V]      loss_b = sum_t lse(z_t) - z_t[y_bt]      dloss_b/dh_t = W^T (softmax(z_t) - e_{y_bt})

The tokens of the batch are cut into chunks of C; only one chunk's [C, V] logits (and, when labels are
drawn from the model, its float64 CDF) exist at a time, so memory grows with B x T x d, not B x T x V.
The gradient into h is formed during the forward (the logits are gone by backward) and handed to
autograd by :class:`_PrecomputedGrad`; several label sets (data labels and sampled labels) share one
chunk's logits and softmax. The LM head's weight gets no gradient (attribution freezes every weight).

Rounding follows the plain path (:func:`reference`, what ``model(...).logits`` + ``F.cross_entropy``
compute): logits in the model's dtype, upcast to fp32 for the softmax; the logit gradient cast back
to the model's dtype before the GEMM into h. Chunking changes no formula, only GEMM blocking.

One chunk of c tokens: z = F.linear(h, W, b) [c, V] (GEMM, 2cVd FLOPs), then the "head" (softmax in
place, lse, losses lse - z[y], the draw), then pW = p @ W (GEMM, 2cVd). The GEMMs are torch (cuBLAS)
on every backend; only the head has backends (:func:`head` is the torch one, kernels/
linear_cross_entropy.py the Triton one). The drawn label's logit is :func:`_logit_of` on every
backend (the label is known only once z holds p), so both give the same rounding of it.

Routing (``backends.choose`` with this op's backends, "torch" and "triton"): CUDA tensors -> triton
when available, CPU tensors -> torch (the interpreter only by name, for tests). Cost of the head per
token row, in bytes: torch ~36 V (amax reads; sub, exp and div each read and write; sum and block
sums read) plus tens of KiB for the draw (a [c, 1024] int64 index, its gather, float64 cumsum); Triton
12 V (two reads, one write) + 4 KiB. The GEMMs do 4 V d FLOPs per row. On an H100-class GPU (bf16
~1e15 FLOP/s, ~3e12 B/s) the torch head costs as much as the GEMMs at 4d / 1e15 = 36 / 3e12, i.e.
d ~ 3000, so at every Pythia width (d <= 2048) it is the larger part, and the kernel cuts it to a
third (an estimate: not yet timed on a GPU). The kernel changes no FLOP count and adds no pass.

Files of this op: this module (front door, head in torch, reference); kernels/linear_cross_entropy.py
(Triton head); tests/test_op_linear_cross_entropy.py; benchmarks/bench_op_linear_cross_entropy.py
(and benchmarks/bench_peers.py, end to end).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from . import backends, validate

HAS = ("torch", "triton")  # the head's backends; the GEMMs are torch on every one
# Elements of one chunk's [C, V] logits (fp32: 64 MiB); C = CHUNK_ELEMS // V tokens.
CHUNK_ELEMS = 1 << 24


def chunk_tokens(V: int, chunk: Optional[int] = None) -> int:
    """Tokens per chunk: ``chunk`` if given, else as many as keep [C, V] within CHUNK_ELEMS."""
    return int(chunk) if chunk is not None else max(1, CHUNK_ELEMS // max(1, V))


def inverse_cdf(probs: torch.Tensor, u: torch.Tensor, block: int = 1024) -> torch.Tensor:
    """Labels [C] drawn from ``probs`` [C, V] (rows of a softmax) with uniforms u [C] by inverse-CDF.

    Two levels: the float64 CDF of the sums of ``block`` consecutive probabilities picks the block
    holding u * total, the float64 running sum inside that block the label. This reads the
    probabilities once instead of writing a [C, V] float64 CDF; the block sums are fp32 (as exact
    as the fp32 softmax they sum). Row c of the result depends on probs[c] and u[c] only, so any
    chunking of the tokens gives the same draws.
    """
    C, V = probs.shape
    nf = V // block
    sums = [probs[:, : nf * block].reshape(C, nf, block).sum(-1)] if nf else []
    if nf * block < V:
        sums.append(probs[:, nf * block :].sum(-1, keepdim=True))
    bcdf = torch.cat(sums, 1).double().cumsum_(-1)  # [C, blocks]
    target = u.to(probs.device).double() * bcdf[:, -1]  # [C]
    k = torch.searchsorted(bcdf, target[:, None]).squeeze(-1).clamp_(max=bcdf.shape[1] - 1)  # block of the draw
    before = torch.where(k > 0, bcdf.gather(1, (k - 1).clamp(min=0)[:, None]).squeeze(-1), torch.zeros_like(target))
    idx = k[:, None] * block + torch.arange(block, device=probs.device)  # [C, block]
    inner = probs.gather(1, idx.clamp(max=V - 1)).masked_fill_(idx >= V, 0).double().cumsum_(-1) + before[:, None]
    j = torch.searchsorted(inner, target[:, None]).squeeze(-1).clamp_(max=block - 1)
    return (k * block + j).clamp_(max=V - 1)


def softmax_lse(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(softmax(z) [C, V], logsumexp(z) [C]) of fp32 logits z, with one exp pass, in z's storage."""
    mx = z.amax(dim=-1, keepdim=True)
    e = z.sub_(mx).exp_()
    tot = e.sum(dim=-1, keepdim=True)
    return e.div_(tot), (mx + tot.log()).squeeze(-1)


def _logit_of(h: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
    """Logits [c] of labels y [c] at hidden states h [c, d] (fp32 dots, then rounded to the model's
    dtype like F.linear's output; the chunk's z is the softmax by now)."""
    z = (h.float() * weight[y].float()).sum(-1)
    z = z if bias is None else z + bias[y].float()
    return z.to(h.dtype).float()


def reference(hidden: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
              labels: torch.Tensor) -> torch.Tensor:
    """The plain path: full logits [B, T, V] then F.cross_entropy; row losses [B] fp32 (autograd)."""
    B, T, _ = hidden.shape
    logits = F.linear(hidden, weight, bias).float()
    ce = F.cross_entropy(logits.reshape(B * T, -1), labels.reshape(B * T), reduction="none")
    return ce.view(B, T).sum(1)


def _check(hidden, weight, bias, label_sets, uniforms) -> tuple[int, int, int, int]:
    """(B, T, d, V); ValueError naming the argument otherwise."""
    validate.tensor(hidden, "hidden", "[B, T, d]", 3)
    B, T, d = hidden.shape
    validate.tensor(weight, "weight", "[V, d]", 2, hidden.device, dtypes=(hidden.dtype,))
    if weight.shape[1] != d:
        raise ValueError(f"weight must have shape [V, d] with d = {d} from hidden, got {tuple(weight.shape)}")
    V = weight.shape[0]
    if bias is not None:
        validate.sized(bias, "bias", "[V]", (V,), hidden.device, dtypes=(hidden.dtype,))
    for i, y in enumerate(label_sets):
        validate.sized(y, f"labels[{i}]", "[B, T]", (B, T), hidden.device, dtypes=(torch.long,))
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= V):
            raise ValueError(f"labels[{i}] must lie in [0, {V}), got ids in [{int(y.min())}, {int(y.max())}]")
    if uniforms is not None:
        validate.sized(uniforms, "uniforms", "[B, T]", (B, T), uniforms.device, dtypes=(torch.float64,))
    if not label_sets and uniforms is None:
        raise ValueError("give at least one label set or uniforms to draw labels from")
    return B, T, d, V


def head(z: torch.Tensor, labels: Sequence[torch.Tensor], u: Optional[torch.Tensor]):
    """The torch backend of one chunk's head. z [c, V] fp32 logits (becomes softmax(z) in place),
    labels: K LongTensors [c], u [c] float64 | None. Returns (lse [c], losses [K, c] = lse - z[y_k],
    drawn [c] | None); kernels/linear_cross_entropy.py computes the same."""
    picked = [z.gather(1, y[:, None]).squeeze(1) for y in labels]  # before z becomes the softmax
    p, lse = softmax_lse(z)
    losses = torch.stack([lse - x for x in picked]) if picked else lse.new_empty(0, lse.shape[0])
    return lse, losses, (inverse_cdf(p, u) if u is not None else None)


def chunked(hidden: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
            label_sets: Sequence[torch.Tensor] = (), uniforms: Optional[torch.Tensor] = None,
            chunk: Optional[int] = None, *, backend: str = "auto"):
    """Row losses and hidden-state gradients of several label sets from one chunked LM-head pass.

    hidden [B, T, d] (detached), weight [V, d], bias [V] | None, label_sets: LongTensors [B, T];
    uniforms [B, T] float64: also draw one label set from the model (:func:`inverse_cdf`), appended last.
    ``backend`` runs each chunk's head ("auto", "torch", "triton"; module docstring).
    Returns (losses [K, B] fp32, grads [K, B, T, d] in hidden's dtype, drawn labels [B, T] | None).
    """
    B, T, d, V = _check(hidden, weight, bias, label_sets, uniforms)
    N, C = B * T, chunk_tokens(V, chunk)
    name = backends.choose(backend, hidden.device, empty=N == 0, prefer_cpp=False, has=HAS)
    run_head = backends.implementation(name, "linear_cross_entropy_head", head)
    K, L = len(label_sets) + (uniforms is not None), len(label_sets)
    h = hidden.detach().reshape(N, d)
    ys = [y.reshape(N) for y in label_sets]
    u = uniforms.reshape(N) if uniforms is not None else None
    drawn = torch.empty(N, dtype=torch.long, device=h.device) if u is not None else None
    tok_loss = torch.empty(K, N, dtype=torch.float32, device=h.device)
    grads = torch.empty(K, N, d, dtype=h.dtype, device=h.device)
    for s in range(0, N, C):
        sl = slice(s, min(N, s + C))
        z = F.linear(h[sl], weight, bias).float()  # [c, V]: the plain path's logits, one chunk
        y_sl = [y[sl] for y in ys]
        lse, tok_loss[:L, sl], drawn_sl = run_head(z, y_sl, u[sl] if u is not None else None)  # z is p now
        if drawn is not None:
            drawn[sl] = drawn_sl
            y_sl.append(drawn_sl)
            tok_loss[L, sl] = lse - _logit_of(h[sl], weight, bias, drawn_sl)
        pW = z.to(h.dtype) @ weight  # [c, d]; the one-hot part of (p - e_y) W is a row of W
        for k, y in enumerate(y_sl):
            grads[k, sl] = pW - weight[y]
    return tok_loss.view(K, B, T).sum(2), grads.view(K, B, T, d), (drawn.view(B, T) if drawn is not None else None)


class _PrecomputedGrad(torch.autograd.Function):
    """loss [B] = f(hidden) with d loss_b / d hidden[b] = grad[b] known already (scaled by the
    incoming gradient of each row in backward)."""

    @staticmethod
    def forward(ctx, hidden, loss, grad):
        ctx.save_for_backward(grad)
        return loss.clone()

    @staticmethod
    def backward(ctx, go):
        (grad,) = ctx.saved_tensors
        return grad * go.to(grad.dtype)[:, None, None], None, None


def attach(hidden: torch.Tensor, loss: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Row losses [B] whose backward sends ``grad`` [B, T, d] (times each row's incoming gradient)
    into ``hidden`` [B, T, d]."""
    return _PrecomputedGrad.apply(hidden, loss, grad)


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                         labels: torch.Tensor, chunk: Optional[int] = None, *, backend: str = "auto") -> torch.Tensor:
    """Row losses [B] fp32 of ``labels`` [B, T] under the LM head (weight [V, d], bias [V] | None) on
    ``hidden`` [B, T, d]; differentiable w.r.t. ``hidden`` only; equal to :func:`reference`."""
    loss, grad, _ = chunked(hidden, weight, bias, [labels], chunk=chunk, backend=backend)
    return attach(hidden, loss[0], grad[0])
