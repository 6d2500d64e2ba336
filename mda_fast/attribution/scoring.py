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
from mda_fast.attribution.forward import captured_pass, rows_where
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


def column_map(units, blocks, unit_blocks: dict[str, list[str]], n_probes: int) -> dict[str, list[int]]:
    """{block: first score column of every unit that contains it}; unit u's probes are columns
    [u * n_probes, (u + 1) * n_probes)."""
    cols = {b.name: [] for b in blocks}
    for ui, unit in enumerate(units):
        for bn in unit_blocks[unit.name]:
            cols[bn].append(ui * n_probes)
    return cols


def score_rows(model, adapter, blocks, queries, batch, block_cols, n_cols: int, n_probes: int, backend: str):
    """(row ids, scores [B, C], losses [B]) of one batch, checked finite."""
    device = next(model.parameters()).device
    ids = batch.row_ids
    a, g, loss = captured_pass(model, adapter, blocks, batch.tokens.to(device), ids, backend=backend)
    sc = score_batch(a, g, queries, block_cols, n_cols, n_probes, backend)
    check_finite(sc, "score", ",".join(queries), rows_where(ids))
    return ids.numpy(), sc.cpu().numpy(), loss.cpu().numpy()


def rank_batches(source, settings: Settings, start: int, desc: str):
    """This rank's batches of ``source`` from row ``start`` of its share, with a progress bar when
    ``settings.progress`` (one line per rank)."""
    r, w = dist.rank(), dist.world_size()
    it = source.batches(settings.batch_size, rank=r, world_size=w, start=start)
    if not settings.progress:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, total=source.num_batches(settings.batch_size, r, w, start), desc=f"{desc} (rank {r})",
                unit="batch", position=r)


def fill_store(store, batches, rows_of, on_batch=None) -> None:
    """``store.add(*rows_of(batch))`` for every batch, flushing chunks as they fill.

    ``on_batch(done)`` is called after every batch added (``done`` = batches so far); an exception
    it raises stops the pass with every finished chunk kept (resumable).
    """
    try:
        for done, batch in enumerate(batches, 1):
            store.add(*rows_of(batch))
            if on_batch is not None:
                on_batch(done)
    finally:  # the buffer holds whole batches only: keep them so a resume does not redo them
        store.flush()


def run_score_pass(model, adapter, units, blocks, queries, source, store: ScoreStore, settings: Settings,
                   unit_blocks: dict[str, list[str]], n_probes: int, on_batch=None) -> None:
    """Score this rank's rows of ``source`` from ``store.cursor`` on (:func:`fill_store`)."""
    block_cols = column_map(units, blocks, unit_blocks, n_probes)
    n_cols = len(units) * n_probes
    fill_store(store, rank_batches(source, settings, store.cursor, "scoring"),
               lambda batch: score_rows(model, adapter, blocks, queries, batch, block_cols, n_cols, n_probes,
                                        settings.backend), on_batch)
