"""The one inner-product scorer: every score of every stage is

    score[z, (unit, p)] = - sum_{k in unit} <R_k(z), Q_{k,p}>_F

with a training-side representation R_k(z) of row z's loss gradient on block k and a query-side
representation Q_{k,p} of probe p's gradient in the same basis (dattri's attributor template):

    training side (``*_rows``)                  query side                                   stage
    captured (a, g): G_k(z) = sum_t g_t a_t^T   H^-1 grad f (op 4), or grad f                score pass
    Q_S^T G Q_A, kept in memory (op 1)          Q_S^T grad f Q_A / (Lambda + damping) (op 1) whole-window pass
    index coordinates C(G) (op 1, stored)       C(grad f) (op 1, ``index_basis.BlockBasis``) index query

I(z) = -grad L(z)^T H^-1 grad f (mda-reference §1): the first-order change of f when row z is
up-weighted, so a positive score means the row strengthens the probed behaviour. Every
representation is a factored gradient (a [B, T, I], g [B, T, O]) with G = sum_t g_t a_t^T; a matrix
M [B, O, I] is (M, identity) (sum_o e_o M[o]^T = M). So every contraction is op 2
(``ops.grad_dot_queries``) and every rotation op 1 (``ops.project_per_sample_grad``), each routed to
the compiled kernels. One batch loop (:class:`Scorer` over :func:`fill_store`), one scatter
(:class:`Columns`), one store path (``store.ScoreStore``).
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from mda_fast import ops
from mda_fast.attribution.fit.factors import check_finite
from mda_fast.attribution.run import dist
from mda_fast.attribution.run.settings import Settings
from mda_fast.attribution.score.forward import captured_pass, rows_where


def rank_batches(source, settings: Settings, start: int = 0, desc: str = "pass"):
    """This rank's batches of ``source`` from row ``start`` of its share (every pass's one batch
    iterator), with a progress bar when ``settings.progress`` (one line per rank)."""
    r, w = dist.rank(), dist.world_size()
    it = source.batches(settings.batch_size, rank=r, world_size=w, start=start)
    if not settings.progress:
        return it
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


def as_factored(M: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Matrices M [B, O, I] as op 1/2's factored gradient (a = M, g = identity [B, O, O] without
    copies): sum_o e_o M[o]^T = M, its rows are the "tokens"."""
    B, O = M.shape[:2]
    return M, torch.eye(O, dtype=M.dtype, device=M.device).expand(B, O, O)


def rotate(V: torch.Tensor, Q_A: torch.Tensor, Q_S: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Q_S^T V_n Q_A [n, O, I] fp32 of matrices V [n, O, I] (op 1 with P_in = Q_A, P_out = Q_S)."""
    return ops.project_per_sample_grad(*as_factored(V.float()), Q_A, Q_S, backend=backend)


class Columns:
    """Where each block's inner products land: unit u's probes are columns [u * n, (u + 1) * n);
    a block shared by several units adds to each of them."""

    def __init__(self, units, unit_blocks: dict[str, list[str]], n_probes: int):
        self.n_probes, self.n_cols = n_probes, len(units) * n_probes
        self.first: dict[str, list[int]] = {}
        for ui, unit in enumerate(units):
            for bn in unit_blocks[unit.name]:
                self.first.setdefault(bn, []).append(ui * n_probes)

    def scatter(self, dots: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scores [B, C] = -sum over each unit's blocks of ``dots`` {block: [B, n_probes]}."""
        d0 = next(iter(dots.values()))
        out = torch.zeros(d0.shape[0], self.n_cols, dtype=torch.float32, device=d0.device)
        n = self.n_probes
        for name, d in dots.items():
            for c0 in self.first.get(name, ()):
                out[:, c0 : c0 + n] -= d
        return out


class Scorer:
    """``scorer(batch) -> (row ids int64[B], scores float32[B, C], losses float32[B])``: the rows'
    representations from the strategy ``rows(batch) -> (ids, {block: (a, g)}, losses)``, each block
    contracted with its queries {block: [n_probes, O, I]} by op 2, scattered into columns, checked finite."""

    def __init__(self, rows, queries: dict[str, torch.Tensor], columns: Columns, backend: str = "auto"):
        self.rows, self.queries, self.columns, self.backend = rows, queries, columns, backend

    def __call__(self, batch):
        ids, reps, loss = self.rows(batch)
        dots = {n: ops.grad_dot_queries(*reps[n], Q, backend=self.backend) for n, Q in self.queries.items()}
        sc = self.columns.scatter(dots)
        check_finite(sc, "score", ",".join(self.queries), rows_where(ids))
        return np.asarray(ids), sc.cpu().numpy(), np.asarray(loss)


# ---- training-side representations ----------------------------------------------------------------
def captured_rows(ctx):
    """Exact per-head gradient blocks: one forward + truncated backward of the batch's rows."""
    def rows(batch):
        a, g, loss = captured_pass(ctx.model, ctx.adapter, ctx.blocks, batch.tokens.to(ctx.device), batch.row_ids,
                                   backend=ctx.settings.backend)
        return batch.row_ids.numpy(), {n: (a[n], g[n]) for n in a}, loss.cpu().numpy()
    return rows


def kept_rows(ids: np.ndarray, losses: np.ndarray, kept: dict[str, torch.Tensor], shapes: dict[str, tuple]):
    """Eigen-rotated gradients kept in memory {block: [n, O*I]}; a batch is a slice of the rows."""
    def rows(sl: slice):
        return ids[sl], {n: as_factored(K[sl].view(-1, *shapes[n])) for n, K in kept.items()}, losses[sl]
    return rows


def index_rows(batch):
    """Stored index coordinates: a batch (row ids, losses, {block: [B, dim]}) of ``IndexFiles.batches``
    as 1 x dim matrices."""
    ids, loss, coords = batch
    return ids, {n: as_factored(X.float().unsqueeze(1)) for n, X in coords.items()}, loss
