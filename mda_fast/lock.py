"""One writer per output directory, and its writability checked before any compute.

    with claim("runs/x"):            # OutputError when another process holds it, or it cannot be written
        ...                          # fit / score / top into runs/x

:func:`claim` takes an exclusive ``fcntl.flock`` on ``<dir>/.lock`` (the kernel releases it when
the holder dies, however it dies) and records the holder's pid in it, so a second writer is told
who holds the directory and touches nothing else. It then writes and removes a probe file, so a
read-only, full or forbidden location is reported before the work starts instead of after it.
Claims are re-entrant within a process (a pipeline stage claims its run directory, the store
inside it claims its own). The lock file stays behind (removing it would race with the next
writer); it never looks like an output.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from mda_fast.errors import OutputError
from mda_fast.io import writing

LOCK_NAME = ".lock"
PROBE_BYTES = 4096
_HELD: dict[str, list] = {}          # real path -> [fd, depth] of the claims this process holds


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        pid = int(os.pread(fd, 32, 0).decode().split()[0])
        return f"pid {pid}"
    return "another process"


def _acquire(d: Path) -> int:
    if d.exists() and not d.is_dir():
        raise OutputError(f"cannot write to {d}: it exists and is not a directory")
    with writing(d):
        d.mkdir(parents=True, exist_ok=True)
        fd = os.open(d / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        who = _holder(fd)
        os.close(fd)
        raise OutputError(f"{d} is already being written by {who} (another mda run); wait for it to "
                          f"finish or write to another directory") from None
    except OSError as exc:              # e.g. ENOLCK: a file system without file locks
        os.close(fd)
        raise OutputError(f"cannot lock {d} for writing: {exc.strerror}; write to a local directory") from None
    try:
        with writing(d):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            _probe(d)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _probe(d: Path) -> None:
    """Create, fill (``PROBE_BYTES``), flush and remove a file in ``d`` (OSError when the location
    cannot take it)."""
    probe = d / f".write-test.{os.getpid()}.tmp"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        data = memoryview(b"\0" * PROBE_BYTES)
        while data:                     # a short write is followed by the error on the next one
            data = data[os.write(fd, data):]
        os.fsync(fd)
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)


@contextlib.contextmanager
def claim(directory):
    """Hold the writer lock of ``directory`` (created if needed) for the block; see the module doc."""
    d = Path(directory)
    key = os.path.realpath(d)
    held = _HELD.get(key)
    if held is None:
        held = _HELD[key] = [_acquire(d), 0]
    held[1] += 1
    try:
        yield d
    finally:
        held[1] -= 1
        if held[1] == 0:
            del _HELD[key]
            os.close(held[0])           # closing the descriptor releases the flock
