"""Fitting EK-FAC on the blocks of a set of units (two passes over a random subsample).

pass 1: A = E_tok[a a^T], S = E_tok[g g^T] accumulated in float64 (summed over ranks), eigendecomposed
in float64;
pass 2: Lambda = E_b[(Q_S^T G_b Q_A)^2] from per-sample gradients (mda_fast.ops), summed over ranks.
Both passes use the same labels (sampled per row from the model for the true Fisher).
"""

from __future__ import annotations

import numpy as np
import torch

from mda_fast import ops
from mda_fast.attribution.fit.factors import BlockFactors, FactorSet, check_finite, covariance, damping_of, eigh_factor
from mda_fast.attribution.run import dist
from mda_fast.attribution.run.settings import Settings
from mda_fast.attribution.score.forward import captured_pass
from mda_fast.attribution.score.scorer import rank_batches
from mda_fast.errors import DataError


def fit_positions(n_rows: int, settings: Settings) -> np.ndarray:
    """Sorted positions of the rows the factors are fitted on (seeded; same on every rank)."""
    if n_rows <= 0:
        raise DataError("the window is empty: there are no rows to fit EK-FAC on")
    n = settings.fit_rows if settings.fit_rows is not None else int(round(settings.fit_fraction * n_rows))
    n = min(max(int(n), 1), n_rows)
    rng = np.random.default_rng(settings.fit_seed)
    return np.sort(rng.choice(n_rows, size=n, replace=False)).astype(np.int64)


def _captured_batches(model, adapter, blocks, source, settings: Settings, desc: str, **kw):
    """(batch, a, g) per batch of ``source`` (captures checked finite by captured_pass)."""
    device = next(model.parameters()).device
    for batch in rank_batches(source, settings, 0, desc):
        a, g, _ = captured_pass(model, adapter, blocks, batch.tokens.to(device), batch.row_ids,
                               backend=settings.backend, **kw)
        yield batch, a, g


def _span(sl: slice | None):
    return None if sl is None else (sl.start, sl.stop, sl.step)


def input_key(block) -> tuple:
    """Blocks with equal keys read the same input a (e.g. every head's qk and v block of a layer:
    the layer's attention input), so they share A and its eigenbasis (a block with ``bias`` reads
    the input plus a column of ones: another A)."""
    p = block.pieces[0]
    return p.module, _span(p.in_cols), block.bias


def output_key(block) -> tuple:
    """Blocks with equal keys see the same output gradient g (e.g. every head's o block of a
    layer: the attention output projection's whole output), so they share S and its eigenbasis."""
    return tuple((p.module, _span(p.out_rows)) for p in block.pieces)


def _factor_sums(blocks, key, dim, device) -> tuple[dict, dict]:
    """({key: first block with that key}, {key: float64 zeros [dim, dim]}) for keys shared by blocks."""
    first = {}
    for b in blocks:
        first.setdefault(key(b), b)
    return first, {k: torch.zeros(dim(b), dim(b), dtype=torch.float64, device=device) for k, b in first.items()}


def _eigen(first: dict, sums: dict, n_tok: float, which: str) -> dict:
    """{key: (covariance, its eigenvectors)} of each shared sum."""
    out = {}
    for k, b in first.items():
        C = covariance(sums[k], n_tok)
        out[k] = (C, eigh_factor(C, b.name, which)[1])
    return out


def covariance_pass(model, adapter, blocks, sub, settings: Settings) -> tuple[dict, float]:
    """Pass 1 over ``sub``: ({block: (A, S, Q_A, Q_S)} float64, tokens seen), summed over ranks.
    A (and Q_A) is computed once per distinct block input (:func:`input_key`), S (and Q_S) once per
    distinct output gradient (:func:`output_key`)."""
    device = next(model.parameters()).device
    first_a, A_sum = _factor_sums(blocks, input_key, lambda b: b.in_dim, device)
    first_g, S_sum = _factor_sums(blocks, output_key, lambda b: b.out_dim, device)
    n_tok = torch.zeros(1, dtype=torch.float64, device=device)
    kw = fit_labels(settings)
    for batch, a, g in _captured_batches(model, adapter, blocks, sub, settings, "EK-FAC pass 1/2 (covariances)", **kw):
        for sums, first, x, dim in ((A_sum, first_a, a, "in_dim"), (S_sum, first_g, g, "out_dim")):
            for k, b in first.items():
                x2 = x[b.name].reshape(-1, getattr(b, dim)).double()
                sums[k] += x2.T @ x2  # fp64 products and sum: rounding barely depends on the batch size
        n_tok += batch.tokens.shape[0] * (batch.tokens.shape[1] - 1)
    dist.all_reduce_sum([*A_sum.values(), *S_sum.values(), n_tok])
    if float(n_tok) == 0:
        raise DataError("the EK-FAC subsample has no tokens (rows shorter than 2 tokens?)")
    eig_A, eig_S = _eigen(first_a, A_sum, float(n_tok), "A"), _eigen(first_g, S_sum, float(n_tok), "S")
    for _, Q in (*eig_A.values(), *eig_S.values()):
        dist.broadcast([Q])  # ranks must share one eigenbasis even where eigh is not bitwise stable
    return {b.name: (eig_A[input_key(b)][0], eig_S[output_key(b)][0], eig_A[input_key(b)][1],
                     eig_S[output_key(b)][1]) for b in blocks}, float(n_tok)


def fit_labels(settings: Settings) -> dict:
    """captured_pass keywords of the fit: labels sampled from the model (true Fisher) or the data's."""
    return dict(labels="sampled" if settings.fisher == "true" else "data", seed=settings.fit_seed)


def accumulate_lambda(lam_sum: dict, a, g, blocks, eig32: dict, backend: str) -> None:
    """lam_sum[block] += sum_b (Q_S^T G_b Q_A)^2 of one batch (float64 sums of fp32 batch terms)."""
    for b in blocks:
        out = torch.zeros(b.out_dim, b.in_dim, dtype=torch.float32, device=lam_sum[b.name].device)
        ops.ekfac_lambda_accumulate(a[b.name], g[b.name], *eig32[b.name], out, backend=backend)
        lam_sum[b.name] += out.double()


def finish_factors(blocks, eig: dict, lam_sum: dict, n_rows: float, n_tok: float, settings: Settings) -> dict:
    """{block: BlockFactors} from pass 1's eigenbases and pass 2's (rank-summed) Lambda sums."""
    factors = {}
    for b in blocks:
        A, S, Q_A, Q_S = eig[b.name]
        lam = lam_sum[b.name] / float(n_rows)
        check_finite(lam, "eigenvalue correction Lambda", b.name, "the end of pass 2")
        factors[b.name] = BlockFactors(b.name, A.cpu(), S.cpu(), Q_A.cpu(), Q_S.cpu(), lam.cpu(),
                                       damping_of(lam, settings.damping, settings.damping_floor),
                                       n_tokens=int(n_tok), n_samples=int(n_rows))
    return factors


def fit_info(manifest: dict | None, settings: Settings, source, positions: np.ndarray) -> dict:
    """The factor manifest: ``manifest`` plus the settings and the rows the factors were fitted on."""
    info = dict(manifest or {})
    info.update(settings=settings.fit_dict(), rows_used=int(len(positions)), window_rows=int(len(source)),
                fit_row_ids=[int(x) for x in source.row_ids_at(positions)] if len(positions) <= 100_000 else None,
                world_size=dist.world_size())
    return info


def lambda_sums(blocks, device) -> dict:
    return {b.name: torch.zeros(b.out_dim, b.in_dim, dtype=torch.float64, device=device) for b in blocks}


def fit_ekfac(model, adapter, blocks, source, settings: Settings, manifest: dict | None = None) -> FactorSet:
    """Fit the EK-FAC factors of ``blocks`` on a subsample of ``source``; same result on every rank.

    source: a RowSource (the window). Returns a FactorSet whose manifest records the rows used.
    """
    positions = fit_positions(len(source), settings)
    sub = source.subset(positions)
    device = next(model.parameters()).device
    eig, n_tok = covariance_pass(model, adapter, blocks, sub, settings)
    eig32 = {n: (QA.float(), QS.float()) for n, (_, _, QA, QS) in eig.items()}
    lam_sum, n_rows = lambda_sums(blocks, device), torch.zeros(1, dtype=torch.float64, device=device)
    kw = fit_labels(settings)
    for batch, a, g in _captured_batches(model, adapter, blocks, sub, settings, "EK-FAC pass 2/2 (eigenvalues)", **kw):
        accumulate_lambda(lam_sum, a, g, blocks, eig32, settings.backend)
        n_rows += batch.tokens.shape[0]
    dist.all_reduce_sum([*lam_sum.values(), n_rows])
    factors = finish_factors(blocks, eig, lam_sum, float(n_rows), n_tok, settings)
    return FactorSet(factors, fit_info(manifest, settings, source, positions))
