"""Trajectory-aware MDA: each row scored with the EK-FAC of the checkpoint of its own segment.

    from mda_fast.attribution.trajectory import TrajectoryRun
    run = TrajectoryRun(load, source, (3200, 3475), rows_per_step=32, out="runs/traj", probes=["copy_target"],
                        units=["L1.H1.qk"], segments=4)
    table = run.run()                  # runs/traj/segments/<a>-<b>/ (a Pipeline each), runs/traj/scores/

A head forms *during* its window, so the curvature and the probe gradient at the window's end
describe the last state only. Here the window's steps [a, b) are cut into S segments whose ends
are saved checkpoints (:func:`segment_spans`: the saved steps nearest to an even split), and the rows of
segment [a_s, b_s) are fitted and scored by a whole :class:`~mda_fast.attribution.pipeline.Pipeline`
on the model at step ``b_s`` (its factors, its probe gradient): the fit/score/top path and the ops,
unchanged, once per segment. ``segments=1`` is single-checkpoint MDA (bitwise). The joined table
(``scores/``) records each segment's steps, weights and score fingerprint in its identity; a
segment reuses its complete scores (resumable per segment).

``propagation="independent"`` (default): each segment is one EK-FAC influence at its own
checkpoint, its own probe gradient. ``propagation="source"``: SOURCE (``attribution.unrolled``):
the probe gradient at the window's end, carried back through the later segments' exp(-eta K H)
and answered by each segment's (1 - exp(-eta K H)) / (K H), eta from the Adam state of each
segment's end checkpoint (``checkpoints`` {step: dir}); the factors are fitted first (every
segment), then every segment is scored with its propagated query (``MDA.use_queries``).
"""

from __future__ import annotations

import os

import numpy as np

from mda_fast.attribution.pipeline import Pipeline
from mda_fast.attribution.run.identity import fingerprint
from mda_fast.attribution.score.queries import build_queries
from mda_fast.attribution.store.scores import ScoreTable, store_tables
from mda_fast.attribution.unrolled import adam_step_size, source_queries
from mda_fast.data import select_steps
from mda_fast.digest import array_digest
from mda_fast.errors import ConfigError


def segment_spans(a: int, b: int, count: int, saved: list[int]) -> list[tuple[int, int]]:
    """[(a_s, b_s)]: ``count`` segments of steps [a, b) ending at saved checkpoints (``b`` must be
    one); the interior ends are the saved steps nearest to an even split, without repeats."""
    if count < 1:
        raise ConfigError(f"segments must be >= 1, got {count}")
    if b not in saved:
        raise ConfigError(f"no checkpoint at the window's end, step {b}; saved: {sorted(saved)[-8:]}")
    inside = sorted(s for s in saved if a < s < b)
    ends = []
    for k in range(1, count):
        target = a + (b - a) * k / count
        free = [s for s in inside if not ends or s > ends[-1]]
        if not free:
            raise ConfigError(f"only {len(inside)} checkpoints inside steps {a}..{b}: at most "
                              f"{len(inside) + 1} segments, not {count}")
        ends.append(min(free, key=lambda s: (abs(s - target), s)))
    ends.append(b)
    return list(zip([a] + ends[:-1], ends))


class TrajectoryRun:
    """One window, S segments, each a Pipeline at its end checkpoint; joined into ``out/scores``.

    load(step) -> (model, tokenizer): the checkpoint after ``step`` updates; source: the training
    rows (all steps; ``select_steps`` cuts each segment); units: explicit (the same in every segment);
    propagation: "independent" or "source" (then ``checkpoints`` {step: dir} holds every segment
    end's Adam state, or ``step_size`` gives eta for every segment, e.g. for checkpoints saved
    without their optimizer, as Pythia's are; the score settings must precondition with EK-FAC).
    """

    def __init__(self, load, source, window: tuple[int, int], rows_per_step: int, out: str, probes, units,
                 segments: int, saved: list[int], settings=None, log=print, propagation: str = "independent",
                 checkpoints: dict | None = None, step_size: float | None = None):
        if units == "auto" or not units:
            raise ConfigError("a trajectory run needs explicit units (the same heads in every segment)")
        if propagation not in ("independent", "source"):
            raise ConfigError(f"propagation must be 'independent' or 'source', got {propagation!r}")
        if propagation == "source" and not checkpoints and step_size is None:
            raise ConfigError("SOURCE propagation needs the checkpoint directories (their Adam state) or a step size")
        if step_size is not None and not (float(step_size) > 0 and np.isfinite(float(step_size))):
            raise ConfigError(f"step_size must be a positive number, got {step_size}")
        self.load, self.source, self.rps, self.out = load, source, int(rows_per_step), str(out)
        self.probes, self.units, self.settings, self._log = probes, units, settings, log
        self.propagation, self.checkpoints, self.step_size = propagation, checkpoints, step_size
        self.spans = segment_spans(int(window[0]), int(window[1]), int(segments), list(saved))

    def pipeline(self, a: int, b: int) -> Pipeline:
        """The Pipeline of the rows of steps [a, b) on checkpoint ``b`` (``segments/<a>-<b>/``)."""
        model, tok = self.load(b)
        return Pipeline(model, select_steps(self.source, a, b, self.rps), os.path.join(self.out, "segments", f"{a}-{b}"),
                        self.probes, units=self.units, tokenizer=tok, settings=self.settings, log=self._log,
                        model_name=f"step{b}")

    def segment(self, a: int, b: int) -> ScoreTable:
        """Fit and score the rows of steps [a, b) at checkpoint ``b`` (reused when complete)."""
        return self.pipeline(a, b).run(top_k=None)

    def run(self) -> ScoreTable:
        """Every segment, then the joined table in ``out/scores`` (replacing an earlier join)."""
        if self.propagation == "source":
            tables = self._source_segments()
        else:
            tables = [self.segment(a, b) for a, b in self.spans]
        return join_segments(tables, self.spans, os.path.join(self.out, "scores"), self.propagation)

    def _fitted(self, a: int, b: int, tokens: int) -> tuple[Pipeline, float, int]:
        """(the segment's Pipeline holding its factors, c = eta K / T, K); factors reused when current;
        ``tokens``: T, the predictions per row the training loss is a mean over."""
        p = self.pipeline(a, b)
        if p.factors_current():
            p.load_factors()
        else:
            p.fit()
        m = p.mda
        eta = (float(self.step_size) if self.step_size is not None
               else adam_step_size(self.checkpoints[b], m.model, m.adapter, m.blocks, (a, b)))
        return p, eta * (b - a) / tokens, b - a

    def _source_segments(self) -> list[ScoreTable]:
        """Fit every segment, propagate the final probe gradient back (``unrolled``), score each.
        One segment's model is held at a time (the factors stay, the models are loaded again)."""
        tokens = int(np.asarray(self.source.read(np.arange(1))).shape[1]) - 1
        segs = []
        for a, b in self.spans:
            p, c, k = self._fitted(a, b, tokens)
            segs.append((p.mda.factors, c, k))
        m, s = p.mda, p.mda.settings                     # the last segment: the window's end
        if s.preconditioner != "ekfac":
            raise ConfigError("SOURCE propagation preconditions with each segment's EK-FAC; "
                              "preconditioner 'identity' has no curvature to propagate")
        final = build_queries(m.model, m.adapter, m.blocks, m.probes, m.probe_data, m.factors,
                              s.probe_batch, s.backend, precondition=False)
        del p, m
        tables = []
        for (a, b), (_, c, k), q in zip(self.spans, segs, source_queries(final, segs, s.backend)):
            key = fingerprint({"propagation": "source", "c": c, "K": k,
                               "queries": {n: array_digest(v.numpy()) for n, v in sorted(q.items())}})
            p = self.pipeline(a, b)
            p.load_factors()
            p.mda.use_queries(q, key)
            tables.append(p.score(replace=True))
        return tables


def join_segments(tables: list[ScoreTable], spans: list[tuple[int, int]], out_dir: str,
                  propagation: str = "independent") -> ScoreTable:
    """One score directory holding every segment's rows; its identity lists the segments'."""
    columns = tables[0].columns
    if any(t.columns != columns for t in tables):
        raise ConfigError("the segments' score columns differ; score every segment with the same units and probes")
    parts = [{"steps": list(span), "weights": t.manifest["identity"]["weights"], "scores": t.manifest["fingerprint"]}
             for span, t in zip(spans, tables)]
    identity = {"segments": parts, **({"propagation": propagation} if propagation != "independent" else {})}
    manifest = dict({k: v for k, v in tables[-1].manifest.items() if k not in ("identity", "fingerprint", "complete",
                                                                                 "rows", "world_size", "window")},
                    trajectory=f"{len(spans)} segments, each scored at its end checkpoint"
                    + (" (SOURCE propagation)" if propagation == "source" else ""),
                    identity=identity, fingerprint=fingerprint(identity))
    return store_tables(out_dir, manifest, tables, replace=True)
