"""The Python front door: ``MDA(model, units, probes).fit(window).score(window, out_dir).top(k)``.

    from mda_fast.attribution import MDA
    mda = MDA(model, ["L1.H3.qk"], ["copy_target"], tokenizer=tok)
    mda.fit(window)                        # EK-FAC on a 10% subsample (Settings.fit_fraction)
    table = mda.score(window, "runs/x")    # resumable; every rank scores its share under torchrun
    print(format_report(mda.top(10)))
"""

from __future__ import annotations

import os

import torch

from mda_fast.attribution import dist
from mda_fast.attribution.ekfac import fit_ekfac
from mda_fast.attribution.factors import FactorSet
from mda_fast.attribution.queries import build_queries
from mda_fast.attribution.scoring import run_score_pass
from mda_fast.attribution.settings import Settings
from mda_fast.attribution.store import ScoreStore, ScoreTable, load_scores
from mda_fast.attribution.top import plot_cumulative, plot_histogram, top_rows
from mda_fast.errors import ConfigError, DataError
from mda_fast.probes import Probe, default_vocab_high, parse_probe
from mda_fast.units import Unit, get_adapter


def _as_list(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def window_info(source) -> dict:
    ids = source.row_ids()
    return {"name": getattr(source, "name", type(source).__name__), "rows": int(len(ids)),
            "first_row_id": int(ids[0]) if len(ids) else None, "last_row_id": int(ids[-1]) if len(ids) else None}


class MDA:
    """Attribute units (heads) of ``model`` to training rows through probe functions.

    units: Unit, "L1.H3.qk" strings or lists of them; probes: Probe objects or strings
    ("copy_target", "prev_attn:L1.H3", "module:function"); probe_data: optional
    {probe name: LongTensor[n, L]} overriding the generated probe sets. The model is put in eval
    mode (dropout would make scores random).
    """

    def __init__(self, model, units, probes, tokenizer=None, settings: Settings | dict | None = None, *,
                 probe_data: dict | None = None, model_name: str | None = None, revision: str | None = None):
        self.model = model.eval()
        self.settings = settings if isinstance(settings, Settings) else Settings.from_dict(settings)
        if self.settings.device is not None:
            self.model.to(self.settings.device)
        self.tokenizer = tokenizer
        self.adapter = get_adapter(model)
        self.units = list(dict.fromkeys(u if isinstance(u, Unit) else Unit.parse(str(u)) for u in _as_list(units)))
        if not self.units:
            raise ConfigError("no units given; name at least one head, e.g. L1.H3.qk")
        self.unit_blocks, seen = {}, {}
        for u in self.units:
            bs = u.blocks(self.adapter)  # raises ConfigError for a layer/head out of range
            self.unit_blocks[u.name] = [b.name for b in bs]
            for b in bs:
                seen.setdefault(b.name, b)
        self.blocks = list(seen.values())
        self.probes: list[Probe] = [parse_probe(p) for p in _as_list(probes)]
        if not self.probes:
            raise ConfigError("no probes given; use e.g. copy_target")
        names = [p.name for p in self.probes]
        if len(set(names)) != len(names):
            raise ConfigError(f"probe names must be unique, got {names}")
        for p in self.probes:
            p.check(model)
        self.probe_data = self._probe_data(probe_data or {})
        self.model_name = model_name or getattr(model.config, "name_or_path", "") or type(model).__name__
        self.revision = revision
        self.factors: FactorSet | None = None
        self.table: ScoreTable | None = None
        self.source = None

    # -- helpers -----------------------------------------------------------------------------------
    @property
    def columns(self) -> list[str]:
        return [f"{u.name}/{p.name}" for u in self.units for p in self.probes]

    def _probe_data(self, given: dict) -> dict[str, torch.Tensor]:
        s = self.settings
        high = s.probe_vocab_high or default_vocab_high(self.model, self.tokenizer)
        out = {}
        for p in self.probes:
            if p.name in given:
                out[p.name] = torch.as_tensor(given[p.name], dtype=torch.long)
            else:
                out[p.name] = p.make_data(s.probe_n, s.probe_seq_len, s.probe_vocab_low, high, s.probe_seed)
        return out

    def _identity(self) -> dict:
        return {"model": self.model_name, "revision": self.revision, "units": [u.name for u in self.units],
                "blocks": [b.name for b in self.blocks]}

    # -- stages ------------------------------------------------------------------------------------
    def fit(self, source, out_dir: str | None = None) -> "MDA":
        """Fit EK-FAC on a random subsample of ``source``; save to ``out_dir`` (rank 0) if given."""
        if len(source) == 0:
            raise DataError("the window is empty: there are no rows to fit EK-FAC on")
        info = dict(self._identity(), window=window_info(source))
        self.factors = fit_ekfac(self.model, self.adapter, self.blocks, source, self.settings, info)
        if out_dir is not None and dist.rank() == 0:
            self.factors.save(out_dir)
        dist.barrier()
        return self

    def load_factors(self, path: str) -> "MDA":
        """Use factors fitted earlier (``mda fit``); every block of the units must be in them."""
        factors = FactorSet.load(path)
        for b in self.blocks:
            f = factors[b.name]
            if f.shape != (b.out_dim, b.in_dim):
                raise DataError(f"{path}: block {b.name} has shape {f.shape}, the model's is {(b.out_dim, b.in_dim)}")
        self.factors = factors
        return self

    def queries(self) -> dict[str, torch.Tensor]:
        """{block: [n_probes, O, I]} preconditioned probe gradients H^-1 grad f (the raw gradients
        with ``preconditioner="identity"``)."""
        if self.factors is None:
            raise ConfigError("no EK-FAC factors: call fit(source) or load_factors(path) before scoring")
        return build_queries(self.model, self.adapter, self.blocks, self.probes, self.probe_data, self.factors,
                             self.settings.probe_batch, self.settings.backend,
                             precondition=self.settings.preconditioner == "ekfac")

    def score(self, source, out_dir: str, on_batch=None) -> ScoreTable:
        """Score every row of ``source`` into ``out_dir``; resumes a killed run of the same settings.

        ``on_batch(done)``: called after each scored batch (progress reporting; an exception raised
        there stops the pass, keeping every finished chunk for the resume)."""
        if len(source) == 0:
            raise DataError("the window is empty: there are no rows to score")
        if self.factors is None:
            raise ConfigError("no EK-FAC factors: call fit(source) or load_factors(path) before scoring")
        r, w = dist.rank(), dist.world_size()
        fit = {k: self.factors.manifest.get(k) for k in ("settings", "rows_used", "window")} if self.factors else None
        manifest = dict(self._identity(), probes=[p.name for p in self.probes], columns=self.columns,
                        window=window_info(source), fit=fit, settings_score=self.settings.probe_dict(),
                        unit_blocks=self.unit_blocks, sign="positive = the row strengthens the probed behaviour")
        store = ScoreStore(out_dir, manifest, r, w, self.settings.chunk_rows)
        if r == 0:
            store.prepare()
        dist.barrier()
        if store.is_complete():
            self.table, self.source = load_scores(out_dir), source
            return self.table
        queries = self.queries()
        store.resume_cursor()
        run_score_pass(self.model, self.adapter, self.units, self.blocks, queries, source, store, self.settings,
                       self.unit_blocks, len(self.probes), on_batch=on_batch)
        dist.barrier()
        if r == 0:
            store.merge(source.row_ids())
        dist.barrier()
        self.table, self.source = load_scores(out_dir), source
        return self.table

    def top(self, k: int = 10, column: str | None = None, out_dir: str | None = None) -> dict:
        """Top-k positive/negative rows (decoded when the window is known); PNGs into ``out_dir``."""
        if self.table is None:
            raise ConfigError("no scores yet: call score(source, out_dir) first")
        return report_top(self.table, k, column, self.source, self.tokenizer, out_dir)


def report_top(table: ScoreTable, k: int, column: str | None, source, tokenizer, out_dir: str | None) -> dict:
    """Top rows of one column plus histogram / cumulative-influence PNGs (when ``out_dir``)."""
    rep = top_rows(table, k, column, source, tokenizer)
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        s = table.column(rep["column"])
        safe = rep["column"].replace("/", "_")
        rep["histogram"] = plot_histogram(s, os.path.join(out_dir, f"hist_{safe}.png"), rep["column"])
        rep["cumulative"] = plot_cumulative(s, os.path.join(out_dir, f"cumulative_{safe}.png"), rep["column"])
    return rep
