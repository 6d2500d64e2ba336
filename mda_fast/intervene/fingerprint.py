"""Identity of a retraining run: a finished run is reused only when everything it trained on is unchanged.

Built from content, never from file paths, so moving the output folder or naming an input by an
equivalent path (relative, absolute, a copy) reuses finished runs:

- the resolved plan: the row ids it deletes / copies / replaces (the scores enter through the rows
  they select, and the score share recorded in ``plan.info``) and the plan's parameters;
- the synthetic rows themselves (insert-synthetic), hashed in place of their file's path;
- the training and tracking settings, among them :func:`inputs_fingerprint`: the starting
  checkpoint's weights, optimizer and trainer state (``models.fingerprint.checkpoint_state``) and
  the training rows the run reads (``data.fingerprint.window_fingerprint``), so replacing a
  checkpoint or the data under the same path retrains.
"""

from __future__ import annotations

import copy

from mda_fast.data.fingerprint import window_fingerprint
from mda_fast.digest import array_digest, blob_key
from mda_fast.models.fingerprint import checkpoint_state


def inputs_fingerprint(checkpoint, source, start_step: int, end_step: int, rows_per_step: int) -> str:
    """Key of what a run from ``checkpoint`` reads: its files and the rows of steps [start, end)."""
    rows = source.slice(rows_per_step * start_step, rows_per_step * end_step)
    return blob_key([checkpoint_state(checkpoint), window_fingerprint(rows)])


def run_fingerprint(plan, synthetic, *settings) -> str:
    """Key of one run: ``plan`` (a resolved Plan), its synthetic rows (array or None), ``settings``."""
    d = copy.deepcopy(plan.to_json())
    rows = None if synthetic is None else "sha1:" + array_digest(synthetic)
    d["synthetic"] = rows if d.get("synthetic") else None
    spec = d.get("info", {}).get("spec")
    if isinstance(spec, dict) and spec.get("synthetic"):
        spec["synthetic"] = rows
    return blob_key(["v2", d, list(settings)])
