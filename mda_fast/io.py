"""Writing outputs so that nothing half-written ever carries its final name, and JSON in one format.

Every file the package writes goes through :func:`atomic_path`: the content is written to a
sibling ``<name>.tmp`` (same directory, so the rename is atomic on POSIX; never a name a reader's
glob such as ``*.bin`` or ``*.npz`` would pick up) and renamed over the final name only when
complete; on an exception the temporary file is removed.

    with atomic_path("out/scores.npz") as tmp:   # tmp: Path("out/scores.npz.tmp")
        np.savez(tmp, ...)
    write_json("out/manifest.json", {...});  read_json("out/manifest.json")
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import numpy as np

from mda_fast.errors import DataError


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary sibling path; rename it to ``path`` when the block succeeds.

    Writers that pick a format from the file name must be told the format (``save_figure`` does).
    Parent directories are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_bytes(path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def _default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (Path, os.PathLike)):
        return os.fspath(o)
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)


def write_json(path, obj) -> Path:
    """Atomic JSON write: indented, keys in insertion order, numpy scalars/arrays and paths converted."""
    return write_text(path, json.dumps(obj, indent=1, default=_default, allow_nan=True) + "\n")


def read_json(path) -> dict:
    """The JSON at ``path``; DataError naming the file when it is missing or not valid JSON."""
    try:
        with open(path) as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise DataError(f"{path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON ({exc})") from None


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path, dpi: int = 110) -> Path:
    """Save a matplotlib figure atomically as PNG and close it."""
    plt = pyplot()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    plt.close(fig)
    return Path(path)
