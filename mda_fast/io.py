"""Writing outputs so that nothing half-written ever carries its final name, and JSON in one format.

Every file the package writes goes through :func:`atomic_path`: the content is written to a
sibling ``<name>.<pid>.tmp`` (same directory, so the rename is atomic on POSIX; never a name a
reader's glob such as ``*.bin`` or ``*.npz`` would pick up; one per process, so two writers never
share one) and renamed over the final name only when complete; on an exception the temporary file
is removed. A stage's output directory is written the same way by :func:`atomic_dir`: into a
sibling ``<name>.<pid>.tmp/`` that replaces ``<name>/`` when the block succeeds, so a directory
is visible complete or not at all.

    with atomic_path("out/scores.npz") as tmp:   # tmp: Path("out/scores.npz.<pid>.tmp")
        np.savez(tmp, ...)
    with atomic_dir("out/factors") as tmp:       # tmp: Path("out/factors.<pid>.tmp")
        write_json(tmp / "manifest.json", {...})
    write_json("out/manifest.json", {...});  read_json("out/manifest.json")

A write that fails because the disk is full, read-only or not writable raises OutputError naming
the file (:func:`writing`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np

from mda_fast.errors import DataError, OutputError

# errno values of a write that fails because of the output location, not of the program
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR}


@contextlib.contextmanager
def writing(target):
    """Turn an OSError of a full, read-only or forbidden output location into OutputError naming ``target``."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:
            raise
        raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from None


def _tmp_name(path: Path, tag: str = "") -> Path:
    return path.with_name(f"{path.name}.{os.getpid()}{tag}.tmp")


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary sibling path; rename it to ``path`` when the block succeeds.

    Writers that pick a format from the file name must be told the format (``save_figure`` does).
    Parent directories are created.
    """
    path = Path(path)
    with writing(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        with writing(path):
            yield tmp
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_tree(path: Path) -> None:
    """Remove a file or a directory tree (nothing when it does not exist)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _remove_stale(path: Path) -> None:
    """Remove temporary siblings of ``path`` (``<name>.<pid>[.old].tmp``) left by dead processes."""
    pattern = re.compile(re.escape(path.name) + r"\.(\d+)(\.old)?\.tmp$")
    for p in path.parent.iterdir():
        m = pattern.match(p.name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            remove_tree(p)


def replace_dir(src: Path, dst: Path) -> None:
    """Move directory ``src`` to ``dst``, replacing an existing ``dst`` (moved aside, then removed)."""
    if dst.exists():
        old = _tmp_name(dst, ".old")
        os.replace(dst, old)
        os.replace(src, dst)
        remove_tree(old)
    else:
        os.replace(src, dst)


@contextlib.contextmanager
def atomic_dir(path):
    """Yield a fresh temporary sibling directory; it replaces ``path`` when the block succeeds.

    Until then ``path`` keeps its old content (or does not exist); on an exception the temporary
    directory is removed. Temporary siblings of dead processes are removed first.
    """
    path = Path(path)
    tmp = _tmp_name(path)
    with writing(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(path)
        remove_tree(tmp)
        tmp.mkdir()
    try:
        with writing(path):
            yield tmp
            replace_dir(tmp, path)
    except BaseException:
        remove_tree(tmp)
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
    import matplotlib  # imported on use: matplotlib takes seconds to import and most commands never need it

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
