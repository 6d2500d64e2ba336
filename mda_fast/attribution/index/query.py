"""Querying a complete index: any probe, any time, every indexed row scored in seconds.

An :class:`Index` holds the index files with the model and factors it was built from; ``query``
maps the probe gradients into index coordinates (op 1) and streams one product over the rows
(op 2) through the one scorer (``score.scorer``). Building: ``index.build``.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import torch

from mda_fast.attribution.fit.factors import FactorSet
from mda_fast.attribution.index.basis import BlockBasis
from mda_fast.attribution.index.spec import IndexSpec
from mda_fast.attribution.index.store import IndexFiles
from mda_fast.attribution.run.context import RunContext, build_context, model_name_of
from mda_fast.attribution.run.identity import difference, fingerprint, names_of
from mda_fast.attribution.run.inputs import as_list, model_dtype, prepare_model
from mda_fast.attribution.run.settings import Settings
from mda_fast.attribution.score.queries import build_queries
from mda_fast.attribution.score.scorer import Columns, Scorer, fill_store, index_rows
from mda_fast.attribution.store.scores import ScoreStore, ScoreTable, load_scores
from mda_fast.data.fingerprint import window_fingerprint
from mda_fast.errors import ConfigError
from mda_fast.io import read_json
from mda_fast.lock import claim
from mda_fast.models.fingerprint import weights_fingerprint
from mda_fast.probes import CallableProbe, Probe
from mda_fast.units import Unit


def index_settings(settings) -> Settings:
    """The settings of an index build or query (the index lives in the EK-FAC eigenbasis)."""
    s = settings if isinstance(settings, Settings) else Settings.from_dict(settings)
    if s.preconditioner != "ekfac":
        raise ConfigError(f"settings.preconditioner {s.preconditioner!r}: the index is built in the EK-FAC "
                          f"eigenbasis; score gradient dot products with `mda score` instead")
    return s

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
        self.settings, self.tokenizer = index_settings(settings), tokenizer
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
