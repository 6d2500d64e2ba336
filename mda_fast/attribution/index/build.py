"""Building the per-row gradient index of heads (one pass over the window); queries: ``index.query``.

    from mda_fast.attribution.index.build import build_index
    from mda_fast.attribution.index.spec import IndexSpec
    from mda_fast.attribution.index.query import Index
    idx = build_index(model, window, "runs/x/index", units="auto", factors=FactorSet.load("runs/x/factors"))
    table = Index("runs/x/index", model).query("copy_target")            # a ScoreTable, as mda score's
    table = idx.query([my_probe_fn, "prev_attn:L1.H3"], out_dir="runs/q/scores")

:func:`build_index` makes one pass over the window (a forward and a truncated backward per batch,
as the score pass) and stores, per block of every unit, each row's gradient of L(z) in the block's
EK-FAC eigenbasis, whitened by (Λ + damping)^(-1/2) and compressed to k_out x k_in
(``index_basis``), in resumable rank-split chunks (``index_store``). A query computes the probe
gradient, maps it the same way, and scores every row with one streamed product over the index:

    score(z) = -<G_z, H^-1 ∇f> = -<C(G_z), C(∇f)>  ~=  -<R(C(G_z)), R(C(∇f))>

(equal with k "full"). The index records what it was computed from (model weights, window,
units, the factors' fingerprint, the projection); a query refuses a model, window or factors other
than the index's, naming both sides. Queries run in one process; builds split rows across ranks.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import torch

from mda_fast.attribution.fit.factors import FactorSet
from mda_fast.attribution.index.basis import BlockBasis, check_k
from mda_fast.attribution.index.query import Index, index_settings
from mda_fast.attribution.index.spec import IndexSpec
from mda_fast.attribution.index.store import FORMAT, IndexStore, itemsize
from mda_fast.attribution.run import dist
from mda_fast.attribution.run.context import model_name_of
from mda_fast.attribution.run.identity import check_factors, fingerprint, window_info
from mda_fast.attribution.run.inputs import model_dtype, prepare_model, resolve_units
from mda_fast.attribution.score.forward import captured_pass
from mda_fast.attribution.score.scorer import fill_store, rank_batches
from mda_fast.data import rank_bounds
from mda_fast.data.fingerprint import window_fingerprint
from mda_fast.errors import ConfigError, DataError
from mda_fast.lock import claim
from mda_fast.models.fingerprint import weights_fingerprint
from mda_fast.units import Unit, get_adapter


def index_units(factors: FactorSet, adapter) -> list[str]:
    """The default units of an index: every head of the factors' head units' layers, in their modes,
    whose blocks the factors hold, and the factors' whole-module units."""
    fitted = [Unit.parse(u) for u in factors.manifest.get("units") or []]
    out = [u.name for u in fitted if u.head is None]
    for layer, mode in dict.fromkeys((u.layer, u.mode) for u in fitted if u.head is not None):
        for head in range(adapter.n_heads):
            unit = Unit(layer, head, mode)
            if all(b.name in factors.blocks for b in unit.blocks(adapter)):
                out.append(unit.name)
    return out or [u.name for u in fitted]


class IndexBuild:
    """The checked inputs of one index build: model, units, their blocks' bases, settings."""

    def __init__(self, model, units, factors: FactorSet, spec=None, settings=None, factors_where: str | None = None,
                 model_name: str | None = None, revision: str | None = None):
        self.settings = index_settings(settings)
        self.spec = spec if isinstance(spec, IndexSpec) else IndexSpec(**(spec or {}))
        self.model = prepare_model(model, self.settings)
        self.adapter = get_adapter(self.model)
        self.where = factors_where or "the EK-FAC factors given"
        factors.check_values(self.where)
        units = index_units(factors, self.adapter) if units == "auto" else units
        self.units, self.unit_blocks, self.blocks = resolve_units(units, self.adapter)
        self.factors, self.names = factors, {"model": model_name_of(model, model_name), "revision": revision}
        check_k(self.spec, {b.name: (b.out_dim, b.in_dim) for b in self.blocks})
        self.bases = {b.name: BlockBasis(b.name, self._factor(b), self.spec, self.settings.backend) for b in self.blocks}

    def _factor(self, block):
        if block.name not in self.factors.blocks:
            raise DataError(f"factors {self.where} hold no block {block.name} (fitted: {', '.join(self.factors.blocks)}); "
                            f"fit factors for these units (`mda fit --units ...`) or index units they hold")
        f = self.factors[block.name]
        if f.shape != (block.out_dim, block.in_dim):
            raise DataError(f"{self.where}: block {block.name} has shape {f.shape}, the model's is "
                            f"{(block.out_dim, block.in_dim)}")
        return f

    def identity(self, source) -> dict:
        return {"weights": weights_fingerprint(self.model), "dtype": model_dtype(self.model),
                "data": window_fingerprint(source), "units": [u.name for u in self.units],
                "blocks": [b.name for b in self.blocks], "factors": self.factors.manifest.get("fingerprint"),
                "index": self.spec.to_dict()}

    def manifest(self, source) -> dict:
        """The index manifest; ConfigError when the factors were not fitted on this model and window."""
        identity = self.identity(source)
        check_factors(self.factors.manifest, identity, {"weights": self.names["model"], "data": source.name}, self.where)
        blocks = {n: {"shape": list(b.shape), "k": list(b.k), "dim": b.dim} for n, b in self.bases.items()}
        width = itemsize(self.spec.dtype)
        per_unit = {u: width * sum(blocks[b]["dim"] for b in bs) for u, bs in self.unit_blocks.items()}
        return dict(self.names, format=FORMAT, units=[u.name for u in self.units], unit_blocks=self.unit_blocks,
                    blocks=blocks, spec=self.spec.to_dict(), window=window_info(source),
                    factors_path=os.path.abspath(self.where) if os.path.isdir(self.where) else None,
                    bytes_per_row=per_unit, identity=identity, fingerprint=fingerprint(identity))

    def batch(self, batch) -> tuple[np.ndarray, dict[str, torch.Tensor], np.ndarray]:
        """(row ids, {block: [B, dim] fp32 index coordinates}, losses) of one batch."""
        ids = batch.row_ids
        tokens = batch.tokens.to(next(self.model.parameters()).device)
        a, g, loss = captured_pass(self.model, self.adapter, self.blocks, tokens, ids, backend=self.settings.backend)
        return ids.numpy(), {n: basis.coords(a[n], g[n]) for n, basis in self.bases.items()}, loss.cpu().numpy()

    def run(self, source, out_dir: str, on_batch=None) -> None:
        """Index this rank's rows of ``source`` into ``out_dir`` (resuming; rank 0 merges).
        ``on_batch(done)``: called after each batch (an exception stops the pass, keeping chunks)."""
        if len(source) == 0:
            raise DataError("the window is empty: there are no rows to index")
        r, w = dist.rank(), dist.world_size()
        with claim(out_dir) if r == 0 else contextlib.nullcontext():
            lo, hi = rank_bounds(len(source), r, w)
            source.slice(lo, hi).check_tokens(int(self.model.get_input_embeddings().num_embeddings))
            store = IndexStore(out_dir, self.manifest(source), r, w, self.settings.chunk_rows)
            if r == 0:
                store.prepare()
            dist.barrier()
            if not store.is_complete():
                store.resume_cursor()
                fill_store(store, rank_batches(source, self.settings, store.cursor, "indexing"), self.batch, on_batch)
                dist.barrier()
                if r == 0:
                    store.merge(source.row_ids())
        dist.barrier()


def build_index(model, window, out_dir: str, units="auto", factors: FactorSet | str | None = None, spec=None,
                settings=None, *, model_name: str | None = None, revision: str | None = None,
                on_batch=None, factors_where: str | None = None) -> "Index":
    """Index every row of ``window`` for ``units`` (default: every head of the factors' layers
    they hold) into ``out_dir``; resumes a killed build, reuses a complete one. Returns the Index.
    ``factors_where``: where FactorSet ``factors`` were loaded from (recorded for queries)."""
    where = factors if isinstance(factors, str) else factors_where
    fs = FactorSet.load(factors) if isinstance(factors, str) else factors
    if fs is None:
        raise ConfigError("no EK-FAC factors: fit them first (`mda fit`) and pass them (factors=...)")
    build = IndexBuild(model, units, fs, spec, settings, where, model_name, revision)
    build.run(window, out_dir, on_batch)
    return Index(out_dir, build.model, fs, build.settings, model_name=model_name, revision=revision,
                 factors_where=where)
