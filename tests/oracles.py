"""Test and benchmark oracles: plain, slow forms of what the product computes (never imported by
``mda_fast``). The op benchmarks use the ``naive_*`` forms as their baselines (benchmarks/conftest.py
puts this folder on ``sys.path``).
"""

from __future__ import annotations

import torch

from mda_fast.attribution.score.forward import row_uniforms
from mda_fast.ops import op_linear_cross_entropy as lce
from mda_fast.ops.projection import dense
from mda_fast.ops.tensors import f32


def sample_labels(logits: torch.Tensor, row_ids: torch.Tensor, seed: int, chunk: int = 256) -> torch.Tensor:
    """Labels [B, T] drawn from softmax(logits [B, T, V]) by inverse-CDF sampling (float64 CDF of the
    float32 softmax) with ``forward.row_uniforms``: the draws the chunked pass makes from the same logits."""
    B, T, V = logits.shape
    u = row_uniforms(row_ids, seed, T).to(logits.device)
    out = torch.empty(B, T, dtype=torch.long, device=logits.device)
    for b in range(B):
        for t0 in range(0, T, chunk):
            probs = lce.softmax_lse(logits[b, t0 : t0 + chunk].float().clone())[0]
            out[b, t0 : t0 + chunk] = lce.inverse_cdf(probs, u[b, t0 : t0 + chunk])
    return out


def blocks_of(units, adapter) -> list:
    """All blocks of ``units``, each named once (two units may share a block)."""
    seen = {}
    for unit in units:
        for block in unit.blocks(adapter):
            seen.setdefault(block.name, block)
    return list(seen.values())


def per_sample_grads(cap) -> dict[str, torch.Tensor]:
    """Block name -> ``G [B, O, I]`` materialized from a ``capture.Capture`` (small blocks only)."""
    a, g = cap.a, cap.g
    up = lambda t: t.to(torch.promote_types(t.dtype, torch.float32))  # noqa: E731  fp32 accumulation
    return {n: torch.einsum("bto,bti->boi", up(g[n]), up(a[n])) for n in a}


def naive_project_per_sample_grad(a, g, P_in, P_out) -> torch.Tensor:
    """Op 1 materializing G [B, O, I], then projecting both sides (the benchmarks' baseline)."""
    G = torch.bmm(f32(g).transpose(1, 2), f32(a))
    return dense(P_out, g.device).T @ G @ dense(P_in, a.device)


def naive_grad_dot_queries(a, g, Q) -> torch.Tensor:
    """Op 2 materializing all of G [B, O, I] at once, then contracting with Q (the benchmarks' baseline)."""
    G = torch.bmm(f32(g).transpose(1, 2), f32(a))
    return torch.einsum("boi,noi->bn", G, f32(Q))


def naive_ekfac_lambda_accumulate(a, g, Q_A, Q_S, out) -> torch.Tensor:
    """Op 3 materializing G [B, O, I], rotating each into the eigenbasis, squaring, summing (baseline)."""
    G = torch.bmm(f32(g).transpose(1, 2), f32(a))
    R = f32(Q_S).T @ G @ f32(Q_A)
    out += (R * R).sum(0).to(out.dtype)
    return out


def naive_kron_inverse_apply(Q_A, Q_S, lam, V, damping: float) -> torch.Tensor:
    """Op 4 as a Python loop of 2-D matmuls over the n queries (the benchmarks' unbatched baseline)."""
    QA, QS, d = f32(Q_A), f32(Q_S), f32(lam) + float(damping)
    return torch.stack([QS @ ((QS.T @ v @ QA) / d) @ QA.T for v in f32(V)])


def naive_kron_inverse_apply_grouped(blocks) -> list[torch.Tensor]:
    return [naive_kron_inverse_apply(*blk) for blk in blocks]


class RecordingWindow:
    """A window (RowSource) that records what the passes over it read: ``passes`` (calls of
    ``batches``) and ``seen`` (the row ids of every batch handed out, in order). Everything else is
    the wrapped source's; derived sources (``subset``, ``slice``) are the wrapped source's own."""

    def __init__(self, source):
        self.source, self.passes, self.seen = source, 0, []

    def __len__(self) -> int:
        return len(self.source)

    def __getattr__(self, name):
        return getattr(self.source, name)

    def batches(self, *args, **kw):
        self.passes += 1
        for batch in self.source.batches(*args, **kw):
            self.seen.extend(batch.row_ids.tolist())
            yield batch


def module_ekfac_scores(model, modules, rows: torch.Tensor, probe_fn, alpha: float = 0.1) -> torch.Tensor:
    """EK-FAC influence scores [N, len(modules)] float64 from scratch, on whole linear modules with
    the empirical Fisher over every row (kronfluence's EK-FAC, and the peers' reference_ekfac):

    modules: [(module, with_bias)], nn.Linear (weight [O, I]) or GPT-2 Conv1D (weight [I, O]);
    rows [N, L] (inputs rows[:, :-1], labels rows[:, 1:]); probe_fn(model) -> the probe's mean f.
    Per module: [W | b] [O, I+1] (with_bias) or W; Q_A, Q_G = eigenvectors of sum_tok a a^T ([a; 1])
    and sum_tok g g^T; per-row gradients G_n from autograd (the weights' .grad); Lambda = mean_n
    (Q_G^T G_n Q_A)^2, damping alpha * mean Lambda; score[n] = -<G_n, H^-1 grad f> (mda-fast's sign).
    """
    seen = {}
    hooks = [m.register_forward_hook(lambda m, i, o: seen.__setitem__((m, "a"), i[0].detach())) for m, _ in modules]
    hooks += [m.register_full_backward_hook(lambda m, gi, go: seen.__setitem__((m, "g"), go[0].detach()))
              for m, _ in modules]
    A = {m: 0.0 for m, _ in modules}
    S = {m: 0.0 for m, _ in modules}
    grads = {m: [] for m, _ in modules}
    try:
        for r in rows:
            model.zero_grad(set_to_none=True)
            logits = model(input_ids=r[None, :-1]).logits[0]
            torch.nn.functional.cross_entropy(logits.float(), r[1:], reduction="sum").backward()
            for m, bias in modules:
                a = seen[m, "a"][0].double()
                a = torch.cat([a, a.new_ones(len(a), 1)], 1) if bias else a
                g = seen[m, "g"][0].double()
                A[m], S[m] = A[m] + a.T @ a, S[m] + g.T @ g
                grads[m].append(_weight_grad(m, bias))
        model.zero_grad(set_to_none=True)
        probe_fn(model).backward()
        queries = {m: _weight_grad(m, bias) for m, bias in modules}
    finally:
        for h in hooks:
            h.remove()
        model.zero_grad(set_to_none=True)
    out = torch.zeros(len(rows), len(modules), dtype=torch.float64)
    for k, (m, _) in enumerate(modules):
        qa, qg = torch.linalg.eigh(A[m])[1], torch.linalg.eigh(S[m])[1]
        lam = sum((qg.T @ x @ qa) ** 2 for x in grads[m]) / len(grads[m])
        hq = qg @ ((qg.T @ queries[m] @ qa) / (lam + alpha * lam.mean())) @ qa.T
        out[:, k] = -torch.stack([(hq * x).sum() for x in grads[m]])
    return out


def _weight_grad(module, bias: bool) -> torch.Tensor:
    """The module's weight gradient [O, I] float64 (Conv1D's [I, O] transposed), [W | b] with ``bias``."""
    w = module.weight.grad.double()
    w = w.T if type(module).__name__ == "Conv1D" else w
    return torch.cat([w, module.bias.grad.double()[:, None]], 1) if bias else w.clone()
