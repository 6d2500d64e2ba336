"""The Python front door: ``MDA(model, units, probes).fit(window).score(window, out_dir).top(k)``.

    from mda_fast.attribution import MDA
    mda = MDA(model, ["L1.H3.qk"], ["copy_target"], tokenizer=tok)
    mda.fit(window)                        # EK-FAC on a 10% subsample (Settings.fit_fraction)
    table = mda.score(window, "runs/x")    # resumable; every rank scores its share under torchrun
    print(format_report(mda.top(10)))
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import torch

from mda_fast.attribution.fit.ekfac import covariance_pass, finish_factors, fit_ekfac, fit_info, fit_positions
from mda_fast.attribution.fit.factors import FactorSet
from mda_fast.attribution.fit.shared_pass import shared_pass
from mda_fast.attribution.index.build import build_index
from mda_fast.attribution.run import dist
from mda_fast.attribution.run.context import RunContext, build_context
from mda_fast.attribution.run.identity import check_factors, fingerprint, window_info
from mda_fast.attribution.run.inputs import model_dtype
from mda_fast.attribution.run.settings import Settings
from mda_fast.attribution.score.queries import build_queries
from mda_fast.attribution.score.scorer import (
    Columns,
    Scorer,
    captured_rows,
    fill_store,
    kept_rows,
    rank_batches,
    rotate,
)
from mda_fast.attribution.store.parts import SUB, parse_part, part_bounds, part_identity, verify_sub_window
from mda_fast.attribution.store.scores import ScoreStore, ScoreTable, load_scores
from mda_fast.attribution.store.top import plot_cumulative, plot_histogram, top_rows
from mda_fast.data import rank_bounds
from mda_fast.data.fingerprint import describe_window, sample_digests, window_fingerprint
from mda_fast.errors import ConfigError, DataError
from mda_fast.lock import claim
from mda_fast.models.fingerprint import weights_fingerprint


class MDA:
    """Attribute units (heads, or whole linear modules) of ``model`` to training rows through probe functions.

    units: Unit, ModuleUnit, "L1.H3.qk" / "L3.attention.dense" strings or lists of them; probes: Probe objects or strings
    ("copy_target", "prev_attn:L1.H3", "module:function"); probe_data: optional
    {probe name: LongTensor[n, L]} overriding the generated probe sets. The model is put in eval
    mode (dropout would make scores random). Every input is checked here or before any pass: the
    model's dtype, the device and backend, the units, that every probe reaches one of their
    blocks, the window's token ids against the model's vocabulary, and that the factors belong to
    the model and window (``attribution.run.identity``).
    """

    def __init__(self, model, units, probes, tokenizer=None, settings: Settings | dict | None = None, *,
                 probe_data: dict | None = None, model_name: str | None = None, revision: str | None = None):
        self.ctx: RunContext = build_context(model, units, probes, tokenizer, settings, probe_data=probe_data,
                                             model_name=model_name, revision=revision)
        self.factors: FactorSet | None = None
        self.factors_where = "the EK-FAC factors fitted in this session"
        self.table: ScoreTable | None = None
        self.source = None
        self._given: tuple[dict, str] | None = None   # use_queries: (queries, their key)

    # the run context's parts, read as attributes of the MDA (a thin view on its RunContext)
    _CONTEXT = frozenset(("model", "adapter", "units", "unit_blocks", "blocks", "probes", "probe_data", "settings",
                          "tokenizer", "model_name", "revision", "columns"))

    def __getattr__(self, name: str):
        if name in MDA._CONTEXT and "ctx" in self.__dict__:
            return getattr(self.__dict__["ctx"], name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def vocab_size(self) -> int:
        """Token ids the model can embed: the rows of its input embedding."""
        emb = self.model.get_input_embeddings()
        return int(getattr(emb, "num_embeddings", None) or self.model.config.vocab_size)

    # -- identity ----------------------------------------------------------------------------------
    def fit_identity(self, source) -> dict:
        """What factors fitted on ``source`` are computed from (``attribution.run.identity``)."""
        return {"weights": weights_fingerprint(self.model), "dtype": model_dtype(self.model),
                "data": window_fingerprint(source), "blocks": sorted(b.name for b in self.blocks),
                "settings": self.settings.fit_dict()}

    def fit_fingerprint(self, source) -> str:
        """The fingerprint factors fitted on ``source`` by this MDA would carry."""
        return fingerprint(self.fit_identity(source))

    def score_identity(self, source) -> dict:
        """What the scores of ``source`` are computed from, the factors in use included."""
        fit = self.fit_identity(source)
        return {"weights": fit["weights"], "dtype": fit["dtype"], "data": fit["data"],
                "units": [u.name for u in self.units], "blocks": [b.name for b in self.blocks],
                "probes": self.ctx.probe_digests(),
                "settings": self.settings.probe_dict(), "factors": self.factors.manifest.get("fingerprint"),
                **({"queries": self._given[1]} if self._given else {})}

    def _check_tokens(self, source) -> None:
        """DataError before any pass for a token id the model cannot embed, in this rank's share of
        ``source`` (its contiguous chunk, as the score pass splits it)."""
        lo, hi = rank_bounds(len(source), dist.rank(), dist.world_size())
        source.slice(lo, hi).check_tokens(self.vocab_size)

    def _writer(self, directory):
        """The writer lock of ``directory`` on rank 0 (``mda_fast.lock``); nothing elsewhere."""
        return claim(directory) if directory is not None and dist.rank() == 0 else contextlib.nullcontext()

    # -- stages ------------------------------------------------------------------------------------
    def fit(self, source, out_dir: str | None = None) -> "MDA":
        """Fit EK-FAC on a random subsample of ``source``; save to ``out_dir`` (rank 0) if given."""
        if len(source) == 0:
            raise DataError("the window is empty: there are no rows to fit EK-FAC on")
        with self._writer(None if out_dir is None else os.path.dirname(os.path.abspath(out_dir))):
            self._check_tokens(source)
            self._keep(fit_ekfac(self.model, self.adapter, self.blocks, source, self.settings, self._fit_info(source)),
                       out_dir)
        dist.barrier()
        return self

    def _fit_info(self, source) -> dict:
        """The manifest entries of factors fitted on ``source``: description, window, identity."""
        identity = self.fit_identity(source)
        return dict(self.ctx.describe(), window=window_info(source), window_samples=sample_digests(source),
                    identity=identity, fingerprint=fingerprint(identity))

    def _keep(self, factors: FactorSet, out_dir: str | None) -> None:
        """Use freshly fitted ``factors``, saved into ``out_dir`` by rank 0 when given."""
        self.factors, self.factors_where = factors, "the EK-FAC factors fitted in this session"
        if out_dir is not None and dist.rank() == 0:
            factors.save(out_dir)
            self.factors_where = str(out_dir)

    def whole_window(self, source) -> bool:
        """Whether the settings fit on every row of ``source`` (``fit_fraction 1``)."""
        return len(source) > 0 and len(fit_positions(len(source), self.settings)) == len(source)

    def fit_and_score(self, source, out_dir: str, factors_dir: str | None = None, replace: bool = False) -> ScoreTable:
        """Whole-window fit and scores in two passes (``attribution.fit.shared_pass``): pass 1, then pass 2
        and the score pass sharing one forward + truncated backward. The factors (saved to
        ``factors_dir`` if given) and scores equal fit(source); score(source, out_dir) to float
        tolerance. Needs ``whole_window(source)``; not resumable mid-pass (a killed run starts over)."""
        if not self.whole_window(source):
            raise ConfigError(f"fit_and_score needs a fit on the whole window (settings.fit_fraction 1 and no "
                              f"smaller fit_rows); these settings fit on "
                              f"{len(fit_positions(len(source), self.settings)) if len(source) else 0} of "
                              f"{len(source)} rows")
        with self._writer(out_dir):
            self._check_tokens(source)
            eig, n_tok = covariance_pass(self.model, self.adapter, self.blocks, source, self.settings)
            lam_sum, n_rows, ids, losses, kept = shared_pass(self.model, self.adapter, self.blocks, source,
                                                             self.settings, eig)
            blocks = finish_factors(self.blocks, eig, lam_sum, n_rows, n_tok, self.settings)
            self._keep(FactorSet(blocks, fit_info(self._fit_info(source), self.settings, source,
                                                  np.arange(len(source)))), factors_dir)
            self._store_scores(source, out_dir, replace, ids, losses, kept)
        dist.barrier()
        self.table, self.source = load_scores(out_dir), source
        return self.table

    def _store_scores(self, source, out_dir: str, replace: bool, ids, losses, kept) -> None:
        """Score this rank's rows from their kept rotated gradients into the store of ``out_dir``."""
        store = self._open_store(source, out_dir, replace)
        if not store.is_complete():
            s = self.settings
            # given queries are already preconditioned (only rotated); else grad f, divided below
            raw = self._queries() if self._given else build_queries(
                self.model, self.adapter, self.blocks, self.probes, self.probe_data, self.factors, s.probe_batch,
                s.backend, precondition=False)
            ekfac = s.preconditioner == "ekfac" and not self._given
            queries = {}
            for name, V in raw.items():  # Q_S^T grad f Q_A (/ (Lambda + damping)): the kept rows' basis
                f = self.factors[name]
                Vt = rotate(V, *f.ops_args(torch.float32, V.device)[:2], backend=s.backend)
                queries[name] = (Vt.double() / (f.lam + f.damping)).float() if ekfac else Vt
            shapes = {b.name: (b.out_dim, b.in_dim) for b in self.blocks}
            scorer = Scorer(kept_rows(ids, losses, kept, shapes), queries, self._columns(), s.backend)
            start, bs = store.resume_cursor(), s.batch_size  # rows of a killed run already stored are kept
            fill_store(store, (slice(i, i + bs) for i in range(start, len(ids), bs)), scorer)
            dist.barrier()
            if dist.rank() == 0:
                store.merge(source.row_ids())

    def _columns(self) -> Columns:
        return Columns(self.units, self.unit_blocks, len(self.probes))

    def load_factors(self, path: str) -> "MDA":
        """Use factors fitted earlier (``mda fit``); every block of the units must be in them (that
        they belong to the model and the window is checked when scoring)."""
        factors = FactorSet.load(path)
        for b in self.blocks:
            f = factors[b.name]
            if f.shape != (b.out_dim, b.in_dim):
                raise DataError(f"{path}: block {b.name} has shape {f.shape}, the model's is {(b.out_dim, b.in_dim)}")
        self.factors, self.factors_where = factors, path
        return self

    def queries(self) -> dict[str, torch.Tensor]:
        """{block: [n_probes, O, I]} preconditioned probe gradients H^-1 grad f (the raw gradients
        with ``preconditioner="identity"``)."""
        if self.factors is None:
            raise ConfigError("no EK-FAC factors: call fit(source) or load_factors(path) before scoring")
        self.factors.check_values(self.factors_where)
        return self._queries()

    def use_queries(self, queries: dict[str, torch.Tensor] | None, key: str | None = None) -> "MDA":
        """Score with these queries {block: [n_probes, O, I]}, already preconditioned (e.g. propagated
        between the segments of a trajectory: ``attribution.unrolled``), instead of this model's
        H^-1 grad f; ``key`` names what they were computed from and enters the scores' identity.
        ``None``: back to the model's own queries."""
        if queries is None:
            self._given = None
            return self
        want = {b.name: (len(self.probes), b.out_dim, b.in_dim) for b in self.blocks}
        have = {n: tuple(q.shape) for n, q in queries.items()}
        if have != want:
            raise ConfigError(f"given queries have shapes {have}; this run's blocks need {want}")
        if not key:
            raise ConfigError("given queries need a key (what they were computed from) for the scores' identity")
        self._given = ({n: q.detach().float() for n, q in queries.items()}, str(key))
        return self

    def _queries(self) -> dict[str, torch.Tensor]:
        """:meth:`queries` of factors already checked (the score pass checks them in ``_open_store``)."""
        if self._given:
            device = next(self.model.parameters()).device
            return {n: q.to(device) for n, q in self._given[0].items()}
        return build_queries(self.model, self.adapter, self.blocks, self.probes, self.probe_data, self.factors,
                             self.settings.probe_batch, self.settings.backend,
                             precondition=self.settings.preconditioner == "ekfac")

    def score(self, source, out_dir: str, on_batch=None, replace: bool = False, part=None,
              other_window: bool = False) -> ScoreTable:
        """Score every row of ``source`` into ``out_dir``; resumes a killed run of the same inputs,
        reuses a complete one. ``out_dir`` holding another run's scores is refused (ConfigError),
        or with ``replace`` emptied first.

        ``part``: (i, n) or "i/n": score only part i of n of the window ``source`` (whole batches;
        ``store.parts``), recorded as such in the identity; ``store.parts.merge_parts`` joins them.
        ``other_window``: score ``source`` with factors fitted on another window (refused otherwise);
        the factors' window is then recorded in the identity and the manifest.
        ``on_batch(done)``: called after each scored batch (progress reporting; an exception raised
        there stops the pass, keeping every finished chunk for the resume)."""
        if len(source) == 0:
            raise DataError("the window is empty: there are no rows to score")
        if self.factors is None:
            raise ConfigError("no EK-FAC factors: call fit(source) or load_factors(path) before scoring")
        rows, part_id = self._part(source, part)
        with self._writer(out_dir):
            self._check_tokens(rows)
            store = self._open_store(source, out_dir, replace, part_id, other_window)
            if not store.is_complete():
                scorer = Scorer(captured_rows(self.ctx), self._queries(), self._columns(), self.settings.backend)
                batches = rank_batches(rows, self.settings, store.resume_cursor(), "scoring")
                fill_store(store, batches, scorer, on_batch)
                dist.barrier()
                if dist.rank() == 0:
                    store.merge(rows.row_ids())
        dist.barrier()
        self.table, self.source = load_scores(out_dir), source
        return self.table

    def index(self, source, out_dir: str, spec=None, units="auto", on_batch=None):
        """One pass over ``source`` writing the per-row gradient index of ``units`` (default: every
        head of the fitted layers whose blocks the factors hold) into ``out_dir``, compressed as
        ``spec`` says (``IndexSpec``; default: the README's k); returns the ``attribution.index.Index``,
        whose ``query(probes)`` scores every row in seconds. Resumes a killed build."""
        if self.factors is None:
            raise ConfigError("no EK-FAC factors: call fit(source) or load_factors(path) before indexing")
        return build_index(self.model, source, out_dir, units, self.factors, spec, self.settings,
                           model_name=self.model_name, revision=self.revision, on_batch=on_batch,
                           factors_where=self.factors_where)

    def _part(self, source, part) -> tuple:
        """(rows to score, the identity's ``part`` entry or None) of ``part`` of window ``source``;
        ``part="sub"``: ``source`` itself is a sub-window of the factors' window, verified by content."""
        if part is None:
            return source, None
        if part == SUB:
            lo, hi = verify_sub_window(self.factors.manifest, source, self.factors_where)
            return source, part_identity(None, None, lo, hi, source.row_ids())
        i, n = parse_part(part)
        lo, hi = part_bounds(len(source), self.settings.batch_size, i, n)
        rows = source.slice(lo, hi)
        if len(rows) == 0:
            raise ConfigError(f"part {i}/{n} of a window of {len(source)} rows in batches of "
                              f"{self.settings.batch_size} holds no rows; split it into fewer parts")
        return rows, part_identity(i, n, lo, hi, rows.row_ids())

    def _open_store(self, source, out_dir: str, replace: bool, part: dict | None = None,
                    other_window: bool = False) -> ScoreStore:
        """The checked store of this run (or of one ``part`` of it) in ``out_dir`` (prepared by rank 0)."""
        identity, window, fitted = self.score_identity(source), window_info(source), self.factors.manifest
        if part is not None and part["index"] is None:    # a verified sub-window: a part of the factors' window
            identity["data"], window = fitted["identity"]["data"], fitted["window"]
        check_factors(fitted, identity, {"weights": self.model_name, "data": source.name}, self.factors_where,
                      same_window=not other_window)
        self.factors.check_values(self.factors_where)
        extra = {}
        if part is not None:
            identity["part"] = part
        if other_window:
            identity["factors_window"] = fitted["identity"].get("data")
            extra["factors_window"] = describe_window(identity["factors_window"], "the factors' window") + \
                " (scored with factors of another window, as asked: other_window=True)"
        fit = {k: fitted.get(k) for k in ("settings", "rows_used", "window")}
        manifest = dict(self.ctx.describe(), probes=[p.name for p in self.probes], columns=self.columns,
                        window=window, fit=fit, settings_score=self.settings.probe_dict(),
                        unit_blocks=self.unit_blocks, sign="positive = the row strengthens the probed behaviour",
                        identity=identity, fingerprint=fingerprint(identity), **extra)
        store = ScoreStore(out_dir, manifest, dist.rank(), dist.world_size(), self.settings.chunk_rows)
        if dist.rank() == 0:
            store.prepare(replace=replace)
        dist.barrier()
        return store

    def top(self, k: int = 10, column: str | None = None, out_dir: str | None = None) -> dict:
        """Top-k positive/negative rows (decoded when the window is known); PNGs into ``out_dir``."""
        if self.table is None:
            raise ConfigError("no scores yet: call score(source, out_dir) first")
        return report_top(self.table, k, column, self.source, self.tokenizer, out_dir)


def report_top(table: ScoreTable, k: int, column: str | None, source, tokenizer, out_dir: str | None,
               shown_dir: str | None = None) -> dict:
    """Top rows of one column plus histogram / cumulative-influence PNGs (when ``out_dir``); the
    report names the PNGs under ``shown_dir`` (default ``out_dir``: where they will be read)."""
    rep = top_rows(table, k, column, source, tokenizer)
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        s = table.column(rep["column"])
        safe = rep["column"].replace("/", "_")
        for key, plot, name in (("histogram", plot_histogram, f"hist_{safe}.png"),
                                ("cumulative", plot_cumulative, f"cumulative_{safe}.png")):
            plot(s, os.path.join(out_dir, name), rep["column"])
            rep[key] = os.path.join(shown_dir or out_dir, name)
    return rep
