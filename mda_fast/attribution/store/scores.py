"""Scores on disk: a run directory that is written as rows are scored and can be resumed.

    <run>/manifest.json                 model, units, probes, window, settings, columns, identity,
                                        fingerprint, complete
    <run>/chunks/chunk-<rank>-<start>.npz  row_ids int64[n], scores float32[n, C], loss float32[n]
    <run>/scores.npz                     merged, sorted by row id, with the run's fingerprint
                                        (written when complete)

``start`` is the rank-local cursor (rows of that rank's chunk of the window already scored), so a
rank resumes at the end of its last contiguous chunk; rows buffered but not yet flushed when a run
dies are simply scored again. Every file is written to a temporary sibling and renamed
(``io.atomic_path``). A run is complete when the manifest says so and ``scores.npz`` carries the
manifest's fingerprint (written first, the manifest last: the commit marker). An existing
directory is resumed only when its fingerprint (``attribution.run.identity``), columns and world size
match; otherwise it is refused, or with ``replace=True`` emptied and started again.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mda_fast.attribution.run.identity import difference, names_of
from mda_fast.errors import ConfigError, DataError
from mda_fast.io import atomic_path, read_json, remove_tree, write_json
from mda_fast.lock import LOCK_NAME

_CHUNK = re.compile(r"^chunk-(\d+)-(\d+)\.npz$")
# Manifest keys that must agree for a resume to continue an existing run (beside the identity).
LAYOUT_KEYS = ("columns", "world_size")


@dataclass
class ScoreTable:
    row_ids: np.ndarray  # int64[N], sorted
    scores: np.ndarray  # float32[N, C]
    columns: list[str]  # C names "<unit>/<probe>"
    loss: np.ndarray  # float32[N] summed CE per row
    manifest: dict

    def column(self, name: str | None = None) -> np.ndarray:
        """float32[N] scores of one column (the first when ``name`` is None)."""
        if name is None:
            return self.scores[:, 0]
        if name not in self.columns:
            raise ConfigError(f"score column {name!r} is not in this run; columns: {', '.join(self.columns)}")
        return self.scores[:, self.columns.index(name)]


def _save_npz(path: str, **arrays) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def _load_npz(path: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"score file {path} cannot be read: {exc}") from None


class ScoreStore:
    """One rank's writer into a run directory (rank 0 also owns the manifest and the merge).

    The resumable-store logic (prepare, resume, chunk listing) is shared with the per-row gradient
    index (``index_store.IndexStore``), which names its chunks by ``CHUNK`` and its content by ``WHAT`` / ``ITEM``.
    """

    CHUNK = _CHUNK
    WHAT, ITEM = "scores", "score"
    REFUSED_HINT = "score into a new directory (or `mda run`, which replaces them)"

    def __init__(self, out_dir: str, manifest: dict, rank: int = 0, world_size: int = 1, chunk_rows: int = 1024):
        self.dir, self.rank, self.world_size, self.chunk_rows = out_dir, rank, world_size, chunk_rows
        self.manifest = dict(manifest, world_size=world_size, complete=False)
        self.n_cols = len(self.manifest.get("columns", ()))  # the index store has no columns
        self._buf: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._buffered = 0
        self.cursor = 0

    # -- paths ---------------------------------------------------------------------------------
    @property
    def chunk_dir(self) -> str:
        return os.path.join(self.dir, "chunks")

    @property
    def manifest_path(self) -> str:
        return os.path.join(self.dir, "manifest.json")

    # -- opening ---------------------------------------------------------------------------------
    def prepare(self, replace: bool = False) -> None:
        """Rank 0: create the directory and manifest, or check that an existing one is the same run
        (ConfigError naming the difference; with ``replace`` its content is removed instead)."""
        why = self._difference()
        if why is not None and not replace:
            raise ConfigError(f"{self.dir} holds {self.WHAT} of another run ({why}); {self.REFUSED_HINT}")
        if why is not None:
            self._discard()
        elif os.path.isfile(self.manifest_path):
            old = read_json(self.manifest_path)
            self.manifest = dict(old, **{k: v for k, v in self.manifest.items() if k != "complete"},
                                 complete=bool(old.get("complete")))
            self._remove_temporaries()
            return
        os.makedirs(self.chunk_dir, exist_ok=True)
        write_json(self.manifest_path, self.manifest)

    def _difference(self) -> str | None:
        """Why the directory's content is not this run's (None: it is, or there is none)."""
        if not os.path.isfile(self.manifest_path):
            return f"{self.ITEM} chunks without a manifest" if self.chunks() else None
        old = read_json(self.manifest_path)
        if not isinstance(old.get("identity"), dict):
            return "it records no content identity: written by an older mda-fast or by hand"
        why = difference(old.get("identity"), self.manifest.get("identity") or {}, names_of(old),
                         names_of(self.manifest))
        if why is not None:
            return f"{why[0]}: {why[1]} there vs {why[2]} in this run"
        for key in LAYOUT_KEYS:
            if old.get(key) != self.manifest.get(key):
                return f"{key}: {old.get(key)!r} there vs {self.manifest.get(key)!r} in this run"
        return None

    def _remove_temporaries(self) -> None:
        """Remove half-written chunk files of a killed run (no rank writes before rank 0 prepared)."""
        if os.path.isdir(self.chunk_dir):
            for name in os.listdir(self.chunk_dir):
                if name.endswith(".tmp"):
                    remove_tree(Path(self.chunk_dir) / name)

    def _discard(self) -> None:
        """Remove everything in the directory but its writer lock (held by this process)."""
        for name in os.listdir(self.dir):
            if name != LOCK_NAME:
                remove_tree(Path(self.dir) / name)

    def is_complete(self) -> bool:
        return os.path.isfile(self.manifest_path) and bool(read_json(self.manifest_path).get("complete")) \
            and os.path.isfile(os.path.join(self.dir, "scores.npz"))

    def chunks(self, rank: int | None = None) -> list[tuple[int, int, str]]:
        """[(rank, start, path)] of the finished chunks (of one rank when given), sorted."""
        out = []
        if os.path.isdir(self.chunk_dir):
            for name in os.listdir(self.chunk_dir):
                m = self.CHUNK.match(name)
                if m and (rank is None or int(m.group(1)) == rank):
                    out.append((int(m.group(1)), int(m.group(2)), os.path.join(self.chunk_dir, name)))
        return sorted(out)

    def resume_cursor(self) -> int:
        """Rows of this rank's chunk already on disk (contiguous from 0); later chunks are dropped."""
        cursor = 0
        for _, start, path in self.chunks(self.rank):
            if start != cursor:  # a gap can only come from a foreign file; never skip rows
                raise DataError(f"{self.ITEM} chunk {path} starts at row {start} but rank {self.rank} has only "
                                f"{cursor} rows before it; remove the stray file or use a new output directory")
            cursor += self.rows_in(path)
        self.cursor = cursor
        return cursor

    def rows_in(self, path: str) -> int:
        """Rows in one finished chunk."""
        return int(_load_npz(path)["row_ids"].shape[0])

    # -- writing ---------------------------------------------------------------------------------
    def add(self, row_ids: np.ndarray, scores: np.ndarray, loss: np.ndarray) -> None:
        """Buffer one batch (row_ids int64[B], scores float32[B, C], loss float32[B]); flush when full."""
        if scores.shape != (len(row_ids), self.n_cols):
            raise ValueError(f"scores shape {scores.shape} != ({len(row_ids)}, {self.n_cols})")
        self._push(row_ids, np.asarray(scores, np.float32), loss)

    def _push(self, row_ids: np.ndarray, item, loss: np.ndarray) -> None:
        """Buffer one batch's row ids, content (``item``) and losses; flush a chunk when full."""
        self._buf.append((np.asarray(row_ids, np.int64), item, np.asarray(loss, np.float32)))
        self._buffered += len(row_ids)
        if self._buffered >= self.chunk_rows:
            self.flush()

    def flush(self) -> None:
        if not self._buf:
            return
        ids = np.concatenate([b[0] for b in self._buf])
        self._write_chunk(ids, [b[1] for b in self._buf], np.concatenate([b[2] for b in self._buf]))
        self.cursor += len(ids)
        self._buf, self._buffered = [], 0

    def _write_chunk(self, ids: np.ndarray, items: list, loss: np.ndarray) -> None:
        """One finished chunk file, starting at this rank's cursor (atomic)."""
        _save_npz(os.path.join(self.chunk_dir, f"chunk-{self.rank}-{self.cursor}.npz"), row_ids=ids,
                  scores=np.concatenate(items), loss=loss)

    def merge(self, expected_row_ids: np.ndarray) -> ScoreTable:
        """Rank 0, after every rank flushed: check each expected row is there exactly once, write
        ``scores.npz`` and mark the manifest complete."""
        parts = [_load_npz(p) for _, _, p in self.chunks()]
        if parts:
            ids = np.concatenate([p["row_ids"] for p in parts])
            sc = np.concatenate([p["scores"] for p in parts])
            lo = np.concatenate([p["loss"] for p in parts])
        else:
            ids, sc, lo = np.zeros(0, np.int64), np.zeros((0, self.n_cols), np.float32), np.zeros(0, np.float32)
        order = np.argsort(ids, kind="stable")
        ids, sc, lo = ids[order], sc[order], lo[order]
        if len(np.unique(ids)) != len(ids):
            raise DataError(f"{self.dir}: some rows were scored twice; the chunk files are inconsistent")
        expected = np.sort(np.asarray(expected_row_ids, np.int64))
        if len(ids) != len(expected) or not np.array_equal(ids, expected):
            missing = np.setdiff1d(expected, ids)
            raise DataError(f"{self.dir}: {len(missing)} rows of the window have no score (e.g. row "
                            f"{int(missing[0]) if len(missing) else '?'}); resume the run to finish it")
        _save_npz(os.path.join(self.dir, "scores.npz"), row_ids=ids, scores=sc, loss=lo,
                  columns=np.array(self.manifest["columns"]), fingerprint=np.array(str(self.manifest.get("fingerprint"))))
        self.manifest["complete"] = True
        self.manifest["rows"] = int(len(ids))
        write_json(self.manifest_path, self.manifest)
        return ScoreTable(ids, sc, list(self.manifest["columns"]), lo, self.manifest)


def store_tables(out_dir: str, manifest: dict, tables: list[ScoreTable], replace: bool = False,
                 chunk_rows: int = 1024) -> ScoreTable:
    """A score directory holding the rows of complete ``tables`` (parts or segments of one run)
    under ``manifest``: reused when complete with the same identity, else written and merged."""
    store = ScoreStore(out_dir, manifest, 0, 1, chunk_rows)
    store.prepare(replace=replace)
    if store.is_complete():
        return load_scores(out_dir)
    for t in tables:
        store.add(t.row_ids, t.scores, t.loss)
    store.flush()
    return store.merge(np.concatenate([t.row_ids for t in tables]))


def load_scores(path: str) -> ScoreTable:
    """The merged scores of a complete run directory."""
    mpath, spath = os.path.join(path, "manifest.json"), os.path.join(path, "scores.npz")
    if not os.path.isfile(mpath):
        raise DataError(f"{path} is not a score run directory (no manifest.json)")
    manifest = read_json(mpath)
    if not manifest.get("complete") or not os.path.isfile(spath):
        raise DataError(f"run {path} is not complete; resume it with `mda score` (same arguments)")
    z = _load_npz(spath)
    if manifest.get("fingerprint") is not None and str(z.get("fingerprint")) != str(manifest["fingerprint"]):
        raise DataError(f"{spath} is not the scores {mpath} describes (their fingerprints differ); resume the "
                        f"run with `mda score` (same arguments) to write it again")
    return ScoreTable(z["row_ids"], z["scores"], [str(c) for c in z["columns"]], z["loss"], manifest)
