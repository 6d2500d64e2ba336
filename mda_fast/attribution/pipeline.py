"""The one front door of a whole attribution run: heads -> units -> fit -> score -> top.

    from mda_fast.attribution.pipeline import Pipeline
    p = Pipeline(model, window, "runs/l4h5", probes=["copy_target"], units="auto", tokenizer=tok)
    table = p.run(top_k=20)          # or p.fit(); p.score(); p.top(20)

``mda run | fit | score | top``, the demo and the demo's experiment all run their stages through
this class and do no stage work of their own. The run directory::

    heads/    heads.csv, heads.json, heads.png       (units="auto": units chosen by head score)
    factors/  manifest.json, factors.safetensors     (fit)
    scores/   manifest.json, scores.npz, chunks/     (score: resumable, every rank its share; or query)
    parts/    <i>-of-<n>/ score directories          (score --part i/n: independent jobs; merge -> scores/)
    index/    manifest.json, rows.npz, chunks/       (index: per-row gradients of the heads, resumable)
    top/      top.json, hist_<col>.png, cumulative_<col>.png   (top)
    .lock     the writer lock (``mda_fast.lock``)

Every stage first claims the run directory (``mda_fast.lock``: one writer at a time, writability
checked before any compute). ``heads/``, ``factors/`` and ``top/`` are each written into a temporary
sibling and renamed (``io.atomic_dir``): visible complete or not at all; ``scores/`` is a resumable
store whose manifest is its commit marker (``store``). A stage's output is reused by :meth:`run`
only when its content fingerprint matches this run (``attribution.run.identity``): factors fitted on
other weights, another window or other fit settings are fitted again, scores of other inputs are
replaced; :meth:`fit` always refits. Ranks: under ``torchrun`` every rank calls the same methods;
files are written by rank 0.
"""

from __future__ import annotations

import contextlib
import os

from mda_fast.attribution.api import MDA, report_top
from mda_fast.attribution.index.build import build_index
from mda_fast.attribution.index.query import Index
from mda_fast.attribution.run import dist
from mda_fast.attribution.run.identity import fitted_on
from mda_fast.attribution.run.settings import HEAD_DEFAULTS, Settings
from mda_fast.attribution.store.parts import merge_parts, part_dir, part_dirs
from mda_fast.attribution.store.scores import load_scores
from mda_fast.data.fingerprint import window_fingerprint
from mda_fast.heads import head_scores
from mda_fast.io import atomic_dir, read_json, write_json
from mda_fast.lock import claim
from mda_fast.models.fingerprint import weights_fingerprint
from mda_fast.models.interop import as_hf_model


class Pipeline:
    """One attribution run of ``model`` over ``window`` (a RowSource) into directory ``out``.

    units: list of unit names / Units, or "auto" (the factors' units when fitted already, else the
    best heads by ``heads["metric"]``); probes: probe specs; settings: :class:`Settings` or dict;
    heads: overrides of :data:`HEAD_DEFAULTS`; log: one-line progress messages (rank 0 only).
    """

    def __init__(self, model, window, out: str, probes, units="auto", tokenizer=None, settings=None,
                 heads: dict | None = None, model_name: str | None = None, revision: str | None = None,
                 probe_data: dict | None = None, log=print):
        self.model = None if model is None else as_hf_model(model)[0]  # a bridge/nnsight wrapper: its HF module
        self.window, self.out = window, str(out)
        self.units, self.probes, self.tokenizer = units, probes, tokenizer
        self.settings = settings if isinstance(settings, Settings) else Settings.from_dict(settings)
        self.heads_cfg = {**HEAD_DEFAULTS, **(heads or {})}
        self.model_name, self.revision, self.probe_data = model_name, revision, probe_data
        self._log = log
        self._mda: MDA | None = None
        self.table = None
        self.reports: list[dict] = []     # of the last top() (rank 0)

    # -- paths -----------------------------------------------------------------------------------
    def path(self, stage: str) -> str:
        return os.path.join(self.out, stage)

    def say(self, msg: str) -> None:
        if self._log and dist.rank() == 0:
            self._log(msg)

    def claim(self, directory: str | None = None):
        """The writer lock of the run directory (or of ``directory``: a part job claims only its part)
        on rank 0; re-entrant: held by every stage."""
        return claim(directory or self.out) if dist.rank() == 0 else contextlib.nullcontext()

    def _factors_manifest(self, factors: str | None = None) -> dict | None:
        """The manifest of the factors in ``factors`` (default ``factors/``); None when there are none."""
        path = os.path.join(factors or self.path("factors"), "manifest.json")
        return read_json(path) if os.path.isfile(path) else None

    # -- heads -> units --------------------------------------------------------------------------
    def head_scores(self):
        """Every head's scores (``mda_fast.heads.head_scores``), written to ``heads/`` by rank 0."""
        h = self.heads_cfg
        with self.claim():
            res = head_scores(self.model, n=int(h["n"]), seq_len=int(h["seq_len"]), seed=int(h["seed"]),
                              vocab_low=int(h["vocab_low"]), vocab_high=h["vocab_high"], tokenizer=self.tokenizer,
                              name=str(self.model_name), revision=self.revision)
            if dist.rank() == 0:
                with atomic_dir(self.path("heads")) as tmp:
                    res.to_csv(tmp / "heads.csv"), res.to_json(tmp / "heads.json"), res.heatmap(tmp / "heads.png")
        return res

    def chosen_units(self) -> list:
        """The units of this run: the given ones; for "auto" those of factors already fitted on this
        model and window, else the best heads by ``heads["metric"]``."""
        if self.units != "auto":
            return list(self.units) if isinstance(self.units, (list, tuple)) else [self.units]
        manifest = self._factors_manifest()
        if manifest and fitted_on(manifest, weights_fingerprint(self.model), window_fingerprint(self.window)):
            return manifest["units"]
        h = self.heads_cfg
        res = self.head_scores()
        self.say(res.table(sort=h["metric"], k=5))
        units = [f"L{layer}.H{head}.{h['mode']}" for layer, head, _ in res.top(h["metric"], int(h["top"]))]
        self.say(f"units (best {h['metric']} heads): {', '.join(units)}")
        return units

    @property
    def mda(self) -> MDA:
        if self._mda is None:
            self._mda = MDA(self.model, self.chosen_units(), self.probes, tokenizer=self.tokenizer,
                            settings=self.settings, probe_data=self.probe_data, model_name=self.model_name,
                            revision=self.revision)
        return self._mda

    # -- stages ----------------------------------------------------------------------------------
    def fit(self):
        """Fit EK-FAC on the window into ``factors/``; returns the FactorSet."""
        with self.claim():
            self.mda.fit(self.window, out_dir=self.path("factors"))
        fs = self.mda.factors
        self.say(f"fitted EK-FAC on {fs.manifest['rows_used']} of {fs.manifest['window_rows']} rows for "
                 f"{', '.join(fs.blocks)} -> {self.path('factors')}")
        return fs

    def factors_current(self) -> bool:
        """Whether ``factors/`` holds factors of exactly this run (weights, window, blocks, settings)."""
        manifest = self._factors_manifest()
        return bool(manifest) and manifest.get("fingerprint") == self.mda.fit_fingerprint(self.window)

    def load_factors(self, path: str | None = None):
        """Use the factors in ``path`` (default this run's ``factors/``)."""
        self.mda.load_factors(path or self.path("factors"))
        return self.mda.factors

    def score(self, factors: str | None = None, on_batch=None, replace: bool = False, part=None,
              other_window: bool = False):
        """Score every row of the window into ``scores/`` (resumes a killed run); returns the table.
        Uses factors already fitted in this session, else loads ``factors`` (default ``factors/``).
        ``scores/`` holding another run's scores is refused, or with ``replace`` scored again. With
        ``units="auto"`` and no MDA built yet, the units are those the factors were fitted for (the
        identity check then refuses factors of another model or window). ``part`` ("i/n"): only
        part i of n, into ``parts/<i>-of-<n>/``, claiming only that directory (``store.parts``);
        ``part="sub"``: the window is a sub-window of the factors' one, verified by content;
        ``other_window``: factors fitted on another window, as asked (recorded in the manifest)."""
        out = self.path("scores") if part is None else part_dir(self.out, part, self.window)
        with self.claim(None if part is None else out):
            if self._mda is None and self.units == "auto":
                manifest = self._factors_manifest(factors)
                self.units = manifest["units"] if manifest else self.units
            if self.mda.factors is None or factors is not None:
                self.load_factors(factors)
            self.table = self.mda.score(self.window, out, on_batch=on_batch, replace=replace, part=part,
                                        other_window=other_window)
        self.say(f"scored {len(self.table.row_ids)} rows x {len(self.table.columns)} columns -> {out}/scores.npz")
        return self.table

    def merge(self, parts: list[str] | None = None, replace: bool = False):
        """Merge the parts scored by independent jobs (default every ``parts/<i>-of-<n>/``) into
        ``scores/``: the table a single run writes (``store.parts.merge_parts``); returns it."""
        with self.claim():
            dirs = sorted(parts) if parts else part_dirs(self.out)
            self.table = merge_parts(dirs, self.path("scores"), replace, self.settings.chunk_rows)
        self.say(f"merged {len(dirs)} parts: {len(self.table.row_ids)} rows -> {self.path('scores')}/scores.npz")
        return self.table

    def fit_and_score(self):
        """Whole-window fit (``fit_fraction 1``) into ``factors/`` and scores into ``scores/`` in two
        passes (``MDA.fit_and_score``: fit pass 2 and the score pass share one); returns the table."""
        with self.claim():
            self.table = self.mda.fit_and_score(self.window, self.path("scores"), factors_dir=self.path("factors"),
                                                replace=True)
        self.say(f"fitted EK-FAC on all {len(self.window)} rows and scored them (shared pass) -> "
                 f"{self.path('factors')}, {self.path('scores')}/scores.npz")
        return self.table

    def top(self, k: int | str = 20, column: str | list[str] | None = None, source=None) -> list[dict]:
        """Top rows of a column or list of columns (default every column) with their figures, into ``top/``."""
        if dist.rank() != 0:
            return []
        with self.claim():
            table = self.table if self.table is not None else load_scores(self.path("scores"))
            src = source if source is not None else self.window
            out = self.path("top")
            cols = table.columns if column is None else ([column] if isinstance(column, str) else list(column))
            with atomic_dir(out) as tmp:
                reports = [report_top(table, k, c, src, self.tokenizer, str(tmp), shown_dir=out) for c in cols]
                write_json(tmp / "top.json", {"reports": reports})
        self.reports = reports
        return reports

    def index(self, spec=None, factors: str | None = None, on_batch=None):
        """One pass over the window writing the per-row gradient index of the units (default: every
        head of the factors' layers they hold) into ``index/`` (``attribution.index.build``; resumable)."""
        with self.claim():
            idx = build_index(self.model, self.window, self.path("index"), self.units, factors or self.path("factors"),
                              spec, self.settings, model_name=self.model_name, revision=self.revision, on_batch=on_batch)
        self.say(f"indexed {idx.rows} rows for {', '.join(idx.units)} -> {self.path('index')}")
        return idx

    def query(self, index: str | None = None, factors: str | None = None, top_k: int | str = 20, columns=None):
        """Score the probes against an index (default ``index/``) into ``scores/`` and ``top/``."""
        with self.claim():
            idx = Index(index or self.path("index"), self.model, factors, self.settings, self.tokenizer,
                        model_name=self.model_name, revision=self.revision)
            self.table = idx.query(self.probes, self.units, self.path("scores"), self.window, self.probe_data)
            self.top(top_k, columns)
        return self.table

    def run(self, top_k: int | str | None = 20, refit: bool = False, columns: list[str] | None = None):
        """fit (unless ``factors/`` holds this run's factors, or with ``refit``) -> score (replacing
        scores of other inputs) -> top (of ``columns``, default all; none with ``top_k=None``); returns
        the score table. A fit on the whole window (``fit_fraction 1``) shares its pass 2 with the
        score pass."""
        with self.claim():
            if (refit or not self.factors_current()) and self.mda.whole_window(self.window):
                self.fit_and_score()
            else:
                if refit or not self.factors_current():
                    self.fit()
                self.score(replace=True)
            if top_k is not None:         # None: scores only (a trajectory segment)
                self.top(top_k, columns)
        return self.table
