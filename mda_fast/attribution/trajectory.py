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

Segments are not propagated into each other (SOURCE's (1 - exp(-eta K sigma)) / sigma between
segments is not applied): each segment is one EK-FAC influence at its own checkpoint.
"""

from __future__ import annotations

import os


from mda_fast.attribution.pipeline import Pipeline
from mda_fast.attribution.run.identity import fingerprint
from mda_fast.attribution.store.scores import ScoreTable, store_tables
from mda_fast.data import select_steps
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
    rows (all steps; ``select_steps`` cuts each segment); units: explicit (the same in every segment).
    """

    def __init__(self, load, source, window: tuple[int, int], rows_per_step: int, out: str, probes, units,
                 segments: int, saved: list[int], settings=None, log=print):
        if units == "auto" or not units:
            raise ConfigError("a trajectory run needs explicit units (the same heads in every segment)")
        self.load, self.source, self.rps, self.out = load, source, int(rows_per_step), str(out)
        self.probes, self.units, self.settings, self._log = probes, units, settings, log
        self.spans = segment_spans(int(window[0]), int(window[1]), int(segments), list(saved))

    def segment(self, a: int, b: int) -> ScoreTable:
        """Fit and score the rows of steps [a, b) at checkpoint ``b`` (reused when complete)."""
        model, tok = self.load(b)
        p = Pipeline(model, select_steps(self.source, a, b, self.rps), os.path.join(self.out, "segments", f"{a}-{b}"),
                     self.probes, units=self.units, tokenizer=tok, settings=self.settings, log=self._log,
                     model_name=f"step{b}")
        return p.run(top_k=None)

    def run(self) -> ScoreTable:
        """Every segment, then the joined table in ``out/scores`` (replacing an earlier join)."""
        tables = [self.segment(a, b) for a, b in self.spans]
        return join_segments(tables, self.spans, os.path.join(self.out, "scores"))


def join_segments(tables: list[ScoreTable], spans: list[tuple[int, int]], out_dir: str) -> ScoreTable:
    """One score directory holding every segment's rows; its identity lists the segments'."""
    columns = tables[0].columns
    if any(t.columns != columns for t in tables):
        raise ConfigError("the segments' score columns differ; score every segment with the same units and probes")
    parts = [{"steps": list(span), "weights": t.manifest["identity"]["weights"], "scores": t.manifest["fingerprint"]}
             for span, t in zip(spans, tables)]
    identity = {"segments": parts}
    manifest = dict({k: v for k, v in tables[-1].manifest.items() if k not in ("identity", "fingerprint", "complete",
                                                                                 "rows", "world_size", "window")},
                    trajectory=f"{len(spans)} segments, each scored at its end checkpoint",
                    identity=identity, fingerprint=fingerprint(identity))
    return store_tables(out_dir, manifest, tables, replace=True)
