"""The demo run, window and unit issue 20's table and its research variants work on
(``oracle_table.py``, ``oracle_variants.py``): one place for the paths, settings and targets."""

from __future__ import annotations

from pathlib import Path

import torch

from mda_fast.attribution.pipeline import Pipeline
from mda_fast.attribution.run.settings import Settings
from mda_fast.attribution.store.scores import ScoreTable, load_scores
from mda_fast.codec import byte_tokenizer
from mda_fast.data import MMIdxSource, select_steps
from mda_fast.demo.config import DemoConfig
from mda_fast.demo.train_demo import corpus_prefix
from mda_fast.intervene.experiment import prepare_experiment
from mda_fast.intervene.summary import TrackedUnit
from mda_fast.models import load_model
from mda_fast.probes import make_data
from mda_fast.training import list_checkpoints

UNIT, PROBE, LAYER, HEAD = "L1.H1.qk", "copy_target", 1, 1
COLUMN = f"{UNIT}/{PROBE}"


class Setup:
    """The demo run, its window and the shared pieces of every phase."""

    def __init__(self, demo: Path, window, work: Path):
        self.demo, self.window, self.work = demo, (int(window[0]), int(window[1])), work
        self.cfg = DemoConfig()
        self.ckpts = list_checkpoints(demo / "checkpoints")
        self.source = MMIdxSource(corpus_prefix(demo), seq_len=self.cfg.seq_len, vocab_size=self.cfg.vocab_size)
        self.rps = self.cfg.rows_per_step
        self.unit = TrackedUnit.of("induction", LAYER, HEAD, "induction")
        self.probe = PROBE

    def load(self, step: int):
        return load_model(str(self.ckpts[step]), load_tokenizer=False)[0], byte_tokenizer()

    def settings(self, **kw) -> dict:
        c = self.cfg
        return {"fit_fraction": 1.0, "probe_vocab_low": c.probe_low, "probe_vocab_high": c.probe_high,
                "progress": False, **kw}

    def rows(self):
        return select_steps(self.source, *self.window, self.rps)

    def pipeline(self, name: str, units=(UNIT,), **settings) -> Pipeline:
        """A Pipeline of the window's rows on the checkpoint at its end, into ``attr/<name>``."""
        model, tok = self.load(self.window[1])
        return Pipeline(model, self.rows(), str(self.work / "attr" / name), [PROBE], units=list(units), tokenizer=tok,
                        settings=self.settings(**settings), log=None)

    def probe_tokens(self) -> torch.Tensor:
        """The copy-target probe data every score (and the oracle's probe target) uses."""
        s = Settings.from_dict(self.settings())
        return make_data(s.probe_n, s.probe_seq_len, s.probe_vocab_low, s.probe_vocab_high, s.probe_seed)

    def mda_table(self) -> ScoreTable:
        """Single-checkpoint MDA (EK-FAC at the window's end); also the table the experiment checks."""
        path = self.work / "attr" / "mda"
        if not (path / "scores" / "manifest.json").is_file():
            self.pipeline("mda").run(top_k=None)
        return load_scores(str(path / "scores"))

    def experiment(self, plans=("baseline",), seeds=(0,), table=None):
        c = self.cfg
        a, b = self.window
        return prepare_experiment(self.work / "deletions", self.demo / "checkpoints", self.source,
                                  table if table is not None else self.mda_table(), (a, b), plans, seeds,
                                  units=[self.unit], cadence=5, end_step=b + (b - a), threshold=c.formation_high,
                                  probe_n=c.probe_n, probe_len=c.probe_len, probe_range=(c.probe_low, c.probe_high))
