"""Ask any probe, any time: a per-row gradient index of heads, then queries in seconds.

    from mda_fast.attribution.index import Index, IndexSpec, build_index
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

from mda_fast.attribution import dist
from mda_fast.attribution.context import RunContext, build_context, model_name_of
from mda_fast.attribution.factors import FactorSet
from mda_fast.attribution.forward import captured_pass
from mda_fast.attribution.identity import check_factors, difference, fingerprint, names_of, window_info
from mda_fast.attribution.index_basis import BlockBasis, IndexSpec, check_k
from mda_fast.attribution.index_store import FORMAT, IndexFiles, IndexStore, itemsize
from mda_fast.attribution.inputs import as_list, model_dtype, prepare_model, resolve_units
from mda_fast.attribution.queries import build_queries
from mda_fast.attribution.scorer import Columns, Scorer, fill_store, index_rows, rank_batches
from mda_fast.attribution.settings import Settings
from mda_fast.attribution.store import ScoreStore, ScoreTable, load_scores
from mda_fast.data import rank_bounds
from mda_fast.data.fingerprint import window_fingerprint
from mda_fast.errors import ConfigError, DataError
from mda_fast.io import read_json
from mda_fast.lock import claim
from mda_fast.models.fingerprint import weights_fingerprint
from mda_fast.probes import CallableProbe, Probe
from mda_fast.units import Unit, get_adapter


def _settings(settings) -> Settings:
    s = settings if isinstance(settings, Settings) else Settings.from_dict(settings)
    if s.preconditioner != "ekfac":
        raise ConfigError(f"settings.preconditioner {s.preconditioner!r}: the index is built in the EK-FAC "
                          f"eigenbasis; score gradient dot products with `mda score` instead")
    return s


def index_units(factors: FactorSet, adapter) -> list[str]:
    """The default units of an index: every head of the factors' units' layers, in their modes,
    whose blocks the factors hold."""
    fitted = [Unit.parse(u) for u in factors.manifest.get("units") or []]
    out = []
    for layer, mode in dict.fromkeys((u.layer, u.mode) for u in fitted):
        for head in range(adapter.n_heads):
            unit = Unit(layer, head, mode)
            if all(b.name in factors.blocks for b in unit.blocks(adapter)):
                out.append(unit.name)
    return out or [u.name for u in fitted]


class IndexBuild:
    """The checked inputs of one index build: model, units, their blocks' bases, settings."""

    def __init__(self, model, units, factors: FactorSet, spec=None, settings=None, factors_where: str | None = None,
                 model_name: str | None = None, revision: str | None = None):
        self.settings = _settings(settings)
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


def _as_probe(p):
    return p if isinstance(p, (Probe, str)) or not callable(p) else CallableProbe(p)


class Index:
    """A complete index (``index_store.IndexFiles``) with the model and factors it was built from:
    ``query(probes)`` scores every indexed row. ``factors`` default to the directory recorded at
    build time. ConfigError when the model or the factors are not the index's."""

    def __init__(self, path: str, model, factors: FactorSet | str | None = None, settings=None, tokenizer=None,
                 model_name: str | None = None, revision: str | None = None, factors_where: str | None = None):
        self.files = IndexFiles(path)
        self.path, self.manifest = str(path), self.files.manifest
        self.settings, self.tokenizer = _settings(settings), tokenizer
        self.model = prepare_model(model, self.settings)
        self.model_name, self.revision = model_name_of(model, model_name), revision
        self.factors, where = self._factors(factors, factors_where)
        self.check({"weights": weights_fingerprint(self.model), "dtype": model_dtype(self.model),
                    "factors": self.factors.manifest.get("fingerprint")},
                   {"weights": self.model_name, "factors": where})
        self.spec = IndexSpec.from_dict(self.manifest["spec"])
        self._bases: dict[str, BlockBasis] = {}

    @property
    def rows(self) -> int:
        return self.files.rows

    @property
    def units(self) -> list[str]:
        return list(self.manifest["units"])

    def _factors(self, factors, where: str | None) -> tuple[FactorSet, str]:
        if isinstance(factors, FactorSet):
            return factors, where or "the EK-FAC factors given"
        path = factors or self.manifest.get("factors_path")
        if not path:
            raise ConfigError(f"index {self.path} records no factor directory; pass the factors it was built with")
        return FactorSet.load(path), str(path)

    def check(self, here: dict, names: dict) -> None:
        """ConfigError unless the index was built from ``here`` (identity entries of this query)."""
        recorded = self.manifest["identity"]
        why = difference({k: recorded.get(k) for k in here}, here,
                         dict(names_of(self.manifest), factors=self.manifest.get("factors_path")), names)
        if why:
            what, theirs, ours = why
            raise ConfigError(f"index {self.path} was built from {what} {theirs}, not from this query's {ours}; "
                              f"build an index for them (`mda index`) or query with the ones it was built from")

    def basis(self, block: str) -> BlockBasis:
        if block not in self._bases:
            self._bases[block] = BlockBasis(block, self.factors[block], self.spec, self.settings.backend)
        return self._bases[block]

    def _units(self, units) -> list[str]:
        wanted = self.units if units is None or units == "auto" else [getattr(u, "name", None) or Unit.parse(str(u)).name
                                                                     for u in as_list(units)]
        absent = [u for u in wanted if u not in self.manifest["unit_blocks"]]
        if absent:
            raise ConfigError(f"index {self.path} holds no unit {', '.join(absent)}; it holds {', '.join(self.units)}")
        return wanted

    def queries(self, ctx: RunContext) -> dict[str, torch.Tensor]:
        """{block: [n_probes, 1, dim]} the probes' gradients in index coordinates C(grad f) (op 1)."""
        s = self.settings
        grads = build_queries(ctx.model, ctx.adapter, ctx.blocks, ctx.probes, ctx.probe_data, self.factors,
                              s.probe_batch, s.backend, precondition=False)
        # [dim, n] contiguous in memory (W^T): op 2's factored route multiplies the stored rows by it in one GEMM
        return {b.name: self.basis(b.name).of_gradients(grads[b.name].cpu()).T.contiguous().T.unsqueeze(1)
                for b in ctx.blocks}

    def query(self, probes, units=None, out_dir: str | None = None, window=None, probe_data: dict | None = None,
              ) -> ScoreTable:
        """Scores of every indexed row under ``probes`` (names, Probe objects or callables
        ``fn(outputs, tokens) -> scalar``) for ``units`` (default all of the index's): the table of
        ``mda score``. ``window``, when given, must be the index's; ``out_dir``: also written there
        as a score directory (``mda top`` reads it; scores of an earlier query there are replaced)."""
        if window is not None:
            self.check({"data": window_fingerprint(window)}, {"data": getattr(window, "name", None)})
        ctx = build_context(self.model, self._units(units), [_as_probe(p) for p in as_list(probes)], self.tokenizer,
                            self.settings, probe_data=probe_data, model_name=self.model_name, revision=self.revision)
        manifest = self._manifest(ctx)
        with claim(out_dir) if out_dir is not None else contextlib.nullcontext():
            store = MemoryStore(manifest) if out_dir is None else \
                QueryStore(out_dir, manifest, 0, 1, chunk_rows=max(self.rows, 1))
            store.prepare(replace=_from_query(store.manifest_path))
            if store.is_complete():
                return load_scores(out_dir)
            scorer = Scorer(index_rows, self.queries(ctx), Columns(ctx.units, ctx.unit_blocks, len(ctx.probes)),
                            self.settings.backend)
            fill_store(store, self.files.batches([b.name for b in ctx.blocks]), scorer)
            return store.merge(self.files.row_ids)

    def _manifest(self, ctx: RunContext) -> dict:
        """The score manifest of a query: the score stage's, with the index's fingerprint in the identity."""
        rec = self.manifest["identity"]
        identity = {"weights": rec["weights"], "dtype": rec["dtype"], "data": rec["data"],
                    "units": [u.name for u in ctx.units], "blocks": [b.name for b in ctx.blocks],
                    "probes": ctx.probe_digests(), "settings": self.settings.probe_dict(), "factors": rec["factors"],
                    "index": self.manifest["fingerprint"]}
        return dict(ctx.describe(), probes=[p.name for p in ctx.probes], columns=ctx.columns,
                    window=self.manifest["window"], index=os.path.abspath(self.path), settings_score=identity["settings"],
                    unit_blocks=ctx.unit_blocks, sign="positive = the row strengthens the probed behaviour",
                    identity=identity, fingerprint=fingerprint(identity))


class QueryStore(ScoreStore):
    """The score directory of a query: an earlier query's scores there are replaced, a score pass's refused."""

    REFUSED_HINT = "query into another output directory (`mda query --out NEW --index THIS_INDEX`)"


class MemoryStore:
    """The store path of a query kept in memory (no ``out_dir``): the rows added, merged in row-id order."""

    manifest_path = ""

    def __init__(self, manifest: dict):
        self.manifest, self._rows = manifest, []

    def prepare(self, replace: bool = False) -> None:
        pass

    def is_complete(self) -> bool:
        return False

    def add(self, row_ids, scores, loss) -> None:
        self._rows.append((row_ids, scores, loss))

    def flush(self) -> None:
        pass

    def merge(self, expected_row_ids) -> ScoreTable:
        ids, sc, lo = (np.concatenate([r[i] for r in self._rows]) for i in range(3))
        order = np.argsort(ids, kind="stable")
        return ScoreTable(ids[order], sc[order], list(self.manifest["columns"]), lo[order], self.manifest)


def _from_query(manifest_path: str) -> bool:
    """Whether a score directory holds the scores of an index query (replaced by a new query;
    those of a score pass are refused)."""
    if not os.path.isfile(manifest_path):
        return False
    identity = read_json(manifest_path).get("identity")
    return isinstance(identity, dict) and "index" in identity
