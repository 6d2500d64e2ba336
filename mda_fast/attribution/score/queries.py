"""Probe gradients on each block and their EK-FAC preconditioning (the score queries).

For probe p and block k: grad_k f_p = (1/n) sum_{probe seqs} sum_t g_t a_t^T  [O, I] (the probe is
summed over its batch, so dividing by the probe-set size n gives the average), then
q_{k,p} = H_k^-1 grad_k f_p = Q_S [(Q_S^T grad Q_A) / (Lambda + damping)] Q_A^T.
"""

from __future__ import annotations

import torch

from mda_fast import ops
from mda_fast.attribution.fit.factors import FactorSet, check_finite
from mda_fast.errors import ConfigError
from mda_fast.probes import probe_forward
from mda_fast.capture import Capture


def _probe_value(model, probe, tokens) -> torch.Tensor:
    val = probe_forward(model, probe, tokens)
    if not isinstance(val, torch.Tensor) or val.numel() != 1:
        shape = tuple(val.shape) if isinstance(val, torch.Tensor) else type(val).__name__
        raise ConfigError(f"probe {probe.name} returned {shape}, expected a scalar (summed over the batch)")
    return val.reshape(())


def probe_gradients(model, adapter, blocks, probe, tokens: torch.Tensor, batch_size: int) -> dict[str, torch.Tensor]:
    """{block: [O, I] fp32} the probe gradient averaged over the probe set ``tokens [n, L]``."""
    device = next(model.parameters()).device
    grads = {b.name: torch.zeros(b.out_dim, b.in_dim, dtype=torch.float32, device=device) for b in blocks}
    n = int(tokens.shape[0])
    if n == 0:
        raise ConfigError(f"probe {probe.name} has no probe sequences")
    for s in range(0, n, batch_size):
        chunk = tokens[s : s + batch_size].to(device)
        with Capture(model, blocks, grad_only_from_layer=True, adapter=adapter) as cap:
            val = _probe_value(model, probe, chunk)
            if not val.requires_grad:  # f does not depend on any block (e.g. a probe below them)
                continue
            val.backward()
            a, g = cap.a, cap.g  # a block the probe does not reach has g == 0
            for b in blocks:
                g2 = g[b.name]
                grads[b.name] += g2.reshape(-1, b.out_dim).float().T @ a[b.name].reshape(-1, b.in_dim).float()
    for b in blocks:
        grads[b.name] /= n
        check_finite(grads[b.name], f"probe gradient of {probe.name}", b.name, "the probe set")
    return grads


def apply_inverse(factors: FactorSet, grads: dict[str, torch.Tensor], backend: str = "auto") -> dict[str, torch.Tensor]:
    """{block: V [n, O, I]} -> {block: H^-1 V [n, O, I]} with one grouped call over all blocks."""
    names = list(grads)
    group = []
    for n in names:
        f = factors[n]
        V = grads[n]
        if tuple(V.shape[1:]) != f.shape:
            raise ConfigError(f"block {n}: probe gradient shape {tuple(V.shape[1:])} does not match the "
                              f"fitted factors {f.shape}; were the factors fitted on another model?")
        QA, QS, lam = f.ops_args(torch.float32, V.device)
        group.append((QA, QS, lam, V.float(), f.damping))
    out = ops.kron_inverse_apply_grouped(group, backend=backend)
    return dict(zip(names, out))


def build_queries(model, adapter, blocks, probes, probe_data, factors: FactorSet, batch_size: int,
                  backend: str = "auto", precondition: bool = True) -> dict[str, torch.Tensor]:
    """{block: [n_probes, O, I]} preconditioned probe gradients, probes in the given order
    (``precondition=False``: the raw gradients, for gradient-dot-product scores)."""
    per_probe = [probe_gradients(model, adapter, blocks, p, probe_data[p.name], batch_size) for p in probes]
    stacked = {b.name: torch.stack([pg[b.name] for pg in per_probe]) for b in blocks}
    return apply_inverse(factors, stacked, backend) if precondition else stacked
