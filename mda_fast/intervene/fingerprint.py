"""Identity of a retraining run: a finished run is reused only when everything it trained on is unchanged.

Built from content, never from file paths, so moving the output folder or naming an input by an
equivalent path (relative, absolute, a copy) reuses finished runs:

- the resolved plan: the row ids it deletes / copies / replaces (the scores enter through the rows
  they select, and the score share recorded in ``plan.info``) and the plan's parameters;
- the synthetic rows themselves (insert-synthetic), hashed in place of their file's path;
- the training and tracking settings.
"""

from __future__ import annotations

import copy
import hashlib
import json

import numpy as np


def array_digest(a) -> str:
    """sha1 of an array's dtype, shape and bytes."""
    a = np.ascontiguousarray(a)
    h = hashlib.sha1(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def _key(blob) -> str:
    return hashlib.sha1(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_fingerprint(plan, synthetic, *settings) -> str:
    """Key of one run: ``plan`` (a resolved Plan), its synthetic rows (array or None), ``settings``."""
    d = copy.deepcopy(plan.to_json())
    rows = None if synthetic is None else "sha1:" + array_digest(synthetic)
    d["synthetic"] = rows if d.get("synthetic") else None
    spec = d.get("info", {}).get("spec")
    if isinstance(spec, dict) and spec.get("synthetic"):
        spec["synthetic"] = rows
    return _key(["v2", d, list(settings)])
