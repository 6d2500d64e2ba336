"""The score pass: one forward + truncated backward per batch, all units x probes at once.

For row z, block k and probe p, with q_{k,p} = H_k^-1 grad_k f_p (see queries.py):

    score[z, (unit, p)] = - sum_{k in unit} <G_k(z), q_{k,p}>_F      G_k(z) = sum_t g_t a_t^T

i.e. I(z) = -grad L(z)^T H^-1 grad f (mda-reference §1): the first-order change of f when row z is
up-weighted, so a positive score means the row strengthens the probed behaviour.
"""

from __future__ import annotations

import torch

from mda_fast import ops
from mda_fast.attribution import dist
from mda_fast.attribution.factors import check_finite
from mda_fast.attribution.forward import captured_pass
from mda_fast.attribution.settings import Settings
from mda_fast.attribution.store import ScoreStore


def score_batch(a, g, queries, block_cols: dict[str, list[int]], n_cols: int, n_probes: int,
                backend: str = "auto") -> torch.Tensor:
    """Scores [B, C] of one batch from captured a/g and queries {block: [n_probes, O, I]}."""
    B = next(iter(a.values())).shape[0]
    out = torch.zeros(B, n_cols, dtype=torch.float32, device=next(iter(a.values())).device)
    for name, Q in queries.items():
        d = ops.grad_dot_queries(a[name], g[name], Q, backend=backend)  # [B, n_probes] = <G_b, q>
        for c0 in block_cols[name]:
            out[:, c0 : c0 + n_probes] -= d
    return out


def run_score_pass(model, adapter, units, blocks, queries, source, store: ScoreStore, settings: Settings,
                   unit_blocks: dict[str, list[str]], n_probes: int, fail_after: int | None = None) -> None:
    """Score this rank's rows of ``source`` from ``store.cursor`` on, flushing chunks as they fill.

    fail_after: tests only; raise after that many batches to simulate a killed run.
    """
    r, w = dist.rank(), dist.world_size()
    device = next(model.parameters()).device
    block_cols = {b.name: [] for b in blocks}
    for ui, unit in enumerate(units):
        for bn in unit_blocks[unit.name]:
            block_cols[bn].append(ui * n_probes)
    n_cols = len(units) * n_probes
    it = source.batches(settings.batch_size, rank=r, world_size=w, start=store.cursor)
    if settings.progress:
        from tqdm.auto import tqdm

        it = tqdm(it, total=source.num_batches(settings.batch_size, r, w, store.cursor), desc=f"scoring (rank {r})",
                  unit="batch", position=r)
    try:
        _loop(it, model, adapter, blocks, queries, store, settings, block_cols, n_cols, n_probes, device, fail_after)
    finally:  # the buffer holds whole batches only: keep them so a resume does not redo them
        store.flush()


def _loop(it, model, adapter, blocks, queries, store, settings, block_cols, n_cols, n_probes, device, fail_after):
    for i, batch in enumerate(it):
        if fail_after is not None and i >= fail_after:
            raise KeyboardInterrupt("simulated kill")
        ids = batch.row_ids
        where = f"the batch of rows {int(ids[0])}..{int(ids[-1])}"
        a, g, loss = captured_pass(model, adapter, blocks, batch.tokens.to(device), ids, where=where)
        for b in blocks:
            check_finite(g[b.name], "output gradient", b.name, where)
        sc = score_batch(a, g, queries, block_cols, n_cols, n_probes, settings.backend)
        check_finite(sc, "score", ",".join(queries), where)
        store.add(ids.numpy(), sc.cpu().numpy(), loss.cpu().numpy())
