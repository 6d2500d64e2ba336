"""Content digests: of arrays, of JSON-able blobs, and of files (computed once, cached beside them).

The identities of stage outputs (``attribution.run.identity``), of checkpoints (``models.fingerprint``),
of data windows (``data.fingerprint``) and of retraining runs (``intervene.fingerprint``) are
built from these, never from file paths.

    array_digest(np.arange(3))                 # sha1 of dtype, shape and bytes
    blob_key({"a": 1})                         # 16 hex digits of sha1 of the canonical JSON
    files_digest("ckpt/step150", ["model.safetensors"])   # {"model.safetensors": sha256}

:func:`files_digest` keeps ``<dir>/.mda-digests.json`` = {name: [size, mtime_ns, ctime_ns, inode,
sha256]}: a file whose size, times and inode are unchanged is not read again (a rewrite updates
``ctime`` even when it restores the mtime; a file replaced by another has another inode). A file that is a link into a Hugging Face cache's ``blobs/`` is
named by its sha256 there and is not read at all. The cache is best effort: a directory that
cannot be written is hashed every time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from pathlib import Path

import numpy as np

from mda_fast.errors import MDAError
from mda_fast.io import write_json

CACHE_NAME = ".mda-digests.json"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 8 << 20


def array_digest(a) -> str:
    """sha1 of an array's dtype, shape and bytes."""
    a = np.ascontiguousarray(a)
    h = hashlib.sha1(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def blob_key(blob) -> str:
    """16 hex digits of the sha1 of ``blob`` as canonical JSON (sorted keys)."""
    return hashlib.sha1(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _hub_blob(path: Path) -> str | None:
    """The sha256 a Hugging Face cache names a linked file's blob by, if it is one."""
    if not path.is_symlink():
        return None
    target = path.resolve()
    return target.name if target.parent.name == "blobs" and _SHA256.match(target.name) else None


def _read_cache(directory: Path) -> dict:
    with contextlib.suppress(OSError, ValueError):
        cache = json.loads((directory / CACHE_NAME).read_text())
        if isinstance(cache, dict):
            return cache
    return {}


def files_digest(directory, names) -> dict[str, str]:
    """{name: sha256 of ``directory/name``} for each of ``names`` (see the module doc for the cache)."""
    d = Path(directory)
    cache = _read_cache(d)
    out, changed = {}, False
    for name in names:
        p = d / name
        blob = _hub_blob(p)
        if blob is not None:
            out[name] = blob
            continue
        st = p.stat()
        stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        hit = cache.get(name)
        if isinstance(hit, list) and len(hit) == 5 and hit[:4] == stamp:
            out[name] = hit[4]
            continue
        out[name] = file_sha256(p)
        cache[name], changed = stamp + [out[name]], True
    if changed:
        with contextlib.suppress(OSError, MDAError):
            write_json(d / CACHE_NAME, cache)
    return out


def short(digest) -> str:
    """The first 12 characters of a digest, for messages."""
    return str(digest)[:12]


__all__ = ["array_digest", "blob_key", "file_sha256", "files_digest", "short", "CACHE_NAME"]
