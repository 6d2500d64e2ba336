"""Whole-window fit and scores in two passes: pass 2 of the fit (per-sample Lambda) and the score
pass share one forward + truncated backward per batch (``fit_fraction 1``, the paper's configuration,
costs pass 1 + this pass instead of three passes).

Lambda needs every row's (sampled-label) gradient before any score can be preconditioned, so each
row's data-label gradient is kept rotated into pass 1's eigenbases, Gt_b = Q_S^T G_b Q_A [O, I]
(fp32), and scored once Lambda is known:

    score[b, (u, p)] = - sum_{k in u} < Gt_{b,k}, Vt_{k,p} / (Lambda_k + damping_k) >     Vt = Q_S^T grad f_p Q_A

which is -<G_b, H^-1 grad f_p> of the score pass (Q_A, Q_S orthogonal). Memory: this rank's rows x
sum_k O_k I_k fp32 (64 KiB a row for one Pythia-14M head, qkvo). With the empirical Fisher the data
labels serve both, so there is one backward; with the true Fisher two backwards share the forward
and the LM head's chunked pass.
"""

from __future__ import annotations

import numpy as np
import torch

from mda_fast import ops
from mda_fast.attribution.fit.ekfac import accumulate_lambda, lambda_sums
from mda_fast.attribution.run import dist
from mda_fast.attribution.run.settings import Settings
from mda_fast.attribution.score.forward import captured_multi_pass
from mda_fast.attribution.score.scorer import rank_batches


def shared_pass(model, adapter, blocks, source, settings: Settings, eig: dict):
    """Pass 2 + the score pass over this rank's rows of ``source`` (the whole window).

    eig: {block: (A, S, Q_A, Q_S)} of pass 1. Returns (lam_sum {block: [O, I] float64, rank-summed},
    n_rows (all ranks), row ids int64[n], losses float32[n], kept {block: [n, O*I] fp32 rotated
    data-label gradients}).
    """
    device = next(model.parameters()).device
    eig32 = {n: (QA.float().to(device), QS.float().to(device)) for n, (_, _, QA, QS) in eig.items()}
    kinds = ("sampled", "data") if settings.fisher == "true" else ("data",)
    lam_sum, n_rows = lambda_sums(blocks, device), torch.zeros(1, dtype=torch.float64, device=device)
    ids, losses, kept = [], [], {b.name: [] for b in blocks}
    for batch in rank_batches(source, settings, 0, "EK-FAC pass 2/2 + scores"):
        a, gs, ls = captured_multi_pass(model, adapter, blocks, batch.tokens.to(device), batch.row_ids, kinds,
                                        seed=settings.fit_seed, backend=settings.backend)
        accumulate_lambda(lam_sum, a, gs[0], blocks, eig32, settings.backend)
        for b in blocks:
            Gt = ops.project_per_sample_grad(a[b.name], gs[-1][b.name], *eig32[b.name], backend=settings.backend)
            kept[b.name].append(Gt.reshape(Gt.shape[0], -1).cpu())  # Q_S^T G_b Q_A (op 1)
        n_rows += batch.tokens.shape[0]
        ids.append(batch.row_ids.numpy())
        losses.append(ls[-1].cpu().numpy())
    dist.all_reduce_sum([*lam_sum.values(), n_rows])
    cat = lambda xs, empty: np.concatenate(xs) if xs else empty  # noqa: E731
    kept = {n: torch.cat(v) if v else torch.zeros(0, b.out_dim * b.in_dim)
            for (n, v), b in zip(kept.items(), blocks)}
    return lam_sum, float(n_rows), cat(ids, np.zeros(0, np.int64)), cat(losses, np.zeros(0, np.float32)), kept
