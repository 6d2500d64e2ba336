"""A window scored in parts by independent jobs (a Slurm job array, any scheduler), then merged.

    mda score --out RUN --part 3/8 ...   # job 3 of 8 (0-based): its rows into RUN/parts/3-of-8/
    mda score --out RUN --part sub --data ROWS_ELSEWHERE ...   # a sub-window stored elsewhere
    mda merge --out RUN                  # every part in RUN/parts/ -> RUN/scores/, as one run writes it

Every job reads the same window (``--data``, ``--steps``) and the same factors (``RUN/factors``, read
only) and claims only its own part directory, so the jobs run at once without a shared lock. Parts
are cut at multiples of the batch size (:func:`part_bounds`): every batch of a part holds the rows it
holds in a single run, so the merged table is bitwise the single run's. A part's identity is the
single run's identity (same weights, window, factors, probes, settings) plus ``part`` (its index,
the count, its rows' positions in the window and their ids' digest); :func:`merge_parts` refuses a
missing or doubled part, parts of another count, and parts whose identities differ beyond ``part``
(other factors, weights, window or probes), naming the culprit.

A part may also be any contiguous sub-window of the fitted window stored elsewhere (another file, a
shard piece; ``--part sub``), verified by content (:func:`verify_sub_window`): its row ids lie in the
fitted window's, and every row the factors recorded the digest of (``data.fingerprint.sample_digests``,
256 rows spread over the window) that falls in the part is identical. Such a part is cut where the
user cut it, so its batches may differ from a single run's: merged scores then equal that run's to
float rounding, not bitwise.
"""

from __future__ import annotations

import glob
import os
import re

import numpy as np

from mda_fast.attribution.run.identity import difference, fingerprint, names_of
from mda_fast.attribution.store.scores import ScoreTable, load_scores, store_tables
from mda_fast.data import rank_bounds
from mda_fast.digest import array_digest
from mda_fast.errors import ConfigError, DataError

PARTS = "parts"
SUB = "sub"                          # --part sub: the rows given are a sub-window of the factors' window
_NAME = re.compile(r"^(\d+-of-\d+|rows-\d+-\d+)$")


def parse_part(text) -> tuple[int, int]:
    """``"3/8"`` -> (3, 8): part 3 of 8, 0-based (a Slurm array ``--array=0-7`` passes its task id)."""
    if isinstance(text, (tuple, list)) and len(text) == 2:
        i, n = (int(x) for x in text)
    else:
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
        if not m:
            raise ConfigError(f"--part {text!r} is not I/N (part I of N, 0-based: 0/8 ... 7/8)")
        i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 0 <= i < n:
        raise ConfigError(f"--part {i}/{n}: I must be in 0..N-1 (0-based) and N >= 1")
    return i, n


def part_bounds(n_rows: int, batch_size: int, index: int, count: int) -> tuple[int, int]:
    """[lo, hi) window positions of part ``index`` of ``count``: whole batches of ``batch_size`` rows,
    split as the ranks split rows (``data.rank_bounds``), so a part's batches are a single run's."""
    n_batches = -(-n_rows // batch_size)
    b_lo, b_hi = rank_bounds(n_batches, index, count)
    return min(b_lo * batch_size, n_rows), min(b_hi * batch_size, n_rows)


def part_dir(run_dir: str, part, source=None) -> str:
    """``RUN/parts/<i>-of-<n>`` (``part`` "i/n"), or ``RUN/parts/rows-<first>-<last>`` (row ids) for
    ``part="sub"`` and the sub-window ``source``."""
    if part == SUB:
        ids = source.row_ids()
        if len(ids) == 0:
            raise DataError("the sub-window to score is empty")
        return os.path.join(run_dir, PARTS, f"rows-{int(ids[0])}-{int(ids[-1])}")
    index, count = parse_part(part)
    return os.path.join(run_dir, PARTS, f"{index}-of-{count}")


def verify_sub_window(manifest: dict, source, where: str) -> tuple[int, int]:
    """[lo, hi): where ``source`` lies in the window the factors of ``manifest`` were fitted on,
    checked by row ids and by the content of every recorded sample row inside it (ConfigError)."""
    fitted, samples = manifest["identity"]["data"], manifest.get("window_samples")
    if not samples:
        raise ConfigError(f"factors {where} record no per-row digests of their window (fitted by an older "
                          f"mda-fast); score parts of the whole window with --part I/N, or fit again")
    first, n = fitted["first_row_id"], fitted["rows"]
    if fitted["last_row_id"] - first + 1 != n:
        raise ConfigError(f"the window of factors {where} has non-contiguous row ids; a sub-window of it cannot "
                          f"be placed by its ids: score parts of the whole window with --part I/N")
    ids = np.asarray(source.row_ids(), np.int64)
    lo = int(ids[0]) - first if len(ids) else -1
    if len(ids) == 0 or not np.array_equal(ids, np.arange(ids[0], ids[0] + len(ids))) or lo < 0 or \
            lo + len(ids) > n or source.seq_len != fitted["seq_len"]:
        raise ConfigError(f"{source.name} (rows {ids[:1].tolist()}..{ids[-1:].tolist()}, {source.seq_len} tokens) "
                          f"is not a contiguous run of rows of the factors' window, rows {first}.."
                          f"{fitted['last_row_id']} of {fitted['seq_len']} tokens")
    inside = [(p, d) for p, d in zip(samples["positions"], samples["digests"]) if lo <= p < lo + len(ids)]
    if not inside:
        raise ConfigError(f"{source.name} holds none of the {len(samples['positions'])} rows whose content the factors "
                          f"recorded, so it cannot be verified by content; give a longer sub-window (at least "
                          f"{-(-n // max(len(samples['positions']) - 1, 1))} rows) or use --part I/N")
    rows = source.read(np.array([p - lo for p, _ in inside]), dtype=np.int64)
    for (p, d), row in zip(inside, rows):
        if array_digest(row) != d:
            raise ConfigError(f"row {first + p} of {source.name} is not the row the factors {where} were fitted "
                              f"on (its content differs): this is not a sub-window of that window")
    return lo, lo + len(ids)


def part_identity(index: int, count: int, lo: int, hi: int, row_ids: np.ndarray) -> dict:
    """The ``part`` entry of a part's identity: which rows of the window it holds."""
    return {"index": index, "count": count, "positions": [lo, hi], "row_ids": array_digest(np.asarray(row_ids, np.int64))}


def part_dirs(run_dir: str) -> list[str]:
    """The part directories of a run (``RUN/parts/<i>-of-<n>``), sorted."""
    return sorted(d for d in glob.glob(os.path.join(run_dir, PARTS, "*")) if _NAME.match(os.path.basename(d)))


def _check_cover(tables: list[ScoreTable], dirs: list[str]) -> None:
    """DataError unless the parts tile the window: each row in exactly one part (a split's parts:
    each index of one count once)."""
    parts = [t.manifest["identity"]["part"] for t in tables]
    if all(p["count"] is not None for p in parts):
        _check_split(parts, dirs)
    rows = tables[0].manifest["window"]["rows"]
    spans = sorted((tuple(p["positions"]), d) for p, d in zip(parts, dirs))
    end, end_dir = 0, None
    for (lo, hi), d in spans:
        if lo < end:
            raise DataError(f"parts {end_dir} and {d} both hold window rows {lo}..{min(hi, end) - 1} (a part "
                            f"doubled?); merge each row's part once")
        if lo > end:
            raise DataError(f"window rows {end}..{lo - 1} are in no part; score them before merging")
        end, end_dir = hi, d
    if end != rows:
        raise DataError(f"window rows {end}..{rows - 1} are in no part; score them before merging")


def _check_split(parts: list[dict], dirs: list[str]) -> None:
    """DataError unless ``parts`` are one split's, each index once (named by index)."""
    counts = sorted({p["count"] for p in parts})
    if len(counts) != 1:
        raise DataError(f"the parts are of different splits ({', '.join(f'of {c}' for c in counts)}): "
                        f"{', '.join(dirs)}; merge the parts of one split")
    seen: dict[int, str] = {}
    for p, d in zip(parts, dirs):
        if p["index"] in seen:
            raise DataError(f"part {p['index']} of {counts[0]} appears twice: {seen[p['index']]} and {d}")
        seen[p["index"]] = d
    missing = sorted(set(range(counts[0])) - set(seen))
    if missing:
        raise DataError(f"parts {', '.join(map(str, missing))} of {counts[0]} are missing; score them "
                        f"(`mda score --part I/{counts[0]}`) before merging")


def _whole_identity(tables: list[ScoreTable], dirs: list[str]) -> dict:
    """The identity the parts share once ``part`` is set aside (ConfigError naming a difference)."""
    base = {k: v for k, v in tables[0].manifest["identity"].items() if k != "part"}
    for t, d in zip(tables[1:], dirs[1:]):
        other = {k: v for k, v in t.manifest["identity"].items() if k != "part"}
        why = difference(base, other, names_of(tables[0].manifest), names_of(t.manifest))
        if why:
            raise ConfigError(f"part {d} was scored from {why[0]} {why[2]}, part {dirs[0]} from {why[1]}; "
                              f"every part must come from the same model, window, factors, probes and settings")
    return base


def merge_parts(dirs: list[str], out_dir: str, replace: bool = False, chunk_rows: int = 1024) -> ScoreTable:
    """Merge complete part directories into the score directory ``out_dir``: the table (and the
    identity, hence fingerprint) a single run of the whole window writes. ``out_dir`` holding another
    run's scores is refused, or with ``replace`` emptied first."""
    if not dirs:
        raise DataError(f"no parts to merge (expected {os.path.join('RUN', PARTS, 'I-of-N')} directories)")
    tables = [load_scores(d) for d in dirs]
    for t, d in zip(tables, dirs):
        if "part" not in (t.manifest.get("identity") or {}):
            raise DataError(f"{d} holds the scores of a whole run, not a part (`mda score --part I/N`)")
    _check_cover(tables, dirs)
    identity = _whole_identity(tables, dirs)
    manifest = {k: v for k, v in tables[0].manifest.items() if k not in ("part", "complete", "rows", "world_size")}
    manifest.update(identity=identity, fingerprint=fingerprint(identity),
                    merged_from=[{"dir": os.path.abspath(d), **t.manifest["identity"]["part"]}
                                 for d, t in zip(dirs, tables)])
    return store_tables(out_dir, manifest, tables, replace, chunk_rows)
