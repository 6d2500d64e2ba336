"""Checks run before any retraining: does the scores file belong to this model, window and unit,
and does the window lie inside the checkpoints and the data?

The score manifest is written by ``mda_fast.attribution.store``; these readers accept the few
shapes its fields may take (window ``[a, b]`` or ``{"start", "end"}``; units as ``"L1.H3.qk"``
strings or ``{"layer", "head"}`` dicts; model as a path or hub name, possibly ending in
``/stepN``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mda_fast.errors import ConfigError

_UNIT = re.compile(r"L(\d+)\.H(\d+)")
_STEP_SUFFIX = re.compile(r"[/@:]?(step\d+|main)$")


def manifest_rows(manifest: dict, rows_per_step: int) -> tuple[int, int] | None:
    """[lo, hi) row ids the scores cover: from the attribution front door's window_info
    (``first_row_id``/``last_row_id``) or a step window times ``rows_per_step``."""
    w = manifest.get("window")
    if isinstance(w, dict) and w.get("first_row_id") is not None and w.get("last_row_id") is not None:
        return int(w["first_row_id"]), int(w["last_row_id"]) + 1
    steps = manifest_window(manifest)
    return None if steps is None else (steps[0] * rows_per_step, steps[1] * rows_per_step)


def manifest_window(manifest: dict) -> tuple[int, int] | None:
    """A step window ``(a, b)`` when the manifest states one."""
    w = manifest.get("window")
    if w is None:
        return None
    if isinstance(w, dict):
        for ka, kb in (("start", "end"), ("start_step", "end_step"), ("a", "b")):
            if ka in w and kb in w:
                return int(w[ka]), int(w[kb])
        if "steps" in w:
            w = w["steps"]
        else:
            return None
    if isinstance(w, str):
        nums = re.findall(r"\d+", w)
        w = nums[:2]
    if isinstance(w, (list, tuple)) and len(w) >= 2:
        return int(w[0]), int(w[1])
    return None


def manifest_units(manifest: dict) -> list[tuple[int, int]] | None:
    units = manifest.get("units")
    if units is None:
        units = manifest.get("unit")
    if units is None:
        return None
    if not isinstance(units, (list, tuple)) or (len(units) == 2 and all(isinstance(u, int) for u in units)):
        units = [units]
    out = []
    for u in units:
        if isinstance(u, dict) and "layer" in u and "head" in u:
            out.append((int(u["layer"]), int(u["head"])))
        elif isinstance(u, (list, tuple)) and len(u) >= 2 and all(isinstance(x, int) for x in u[:2]):
            out.append((int(u[0]), int(u[1])))
        else:
            out.extend((int(m[0]), int(m[1])) for m in _UNIT.findall(str(u)))
    return out


def model_key(name) -> str:
    """Comparable identity of a model: path/name without a trailing ``stepN`` or revision."""
    s = str(name).rstrip("/")
    s = _STEP_SUFFIX.sub("", s).rstrip("/")
    if os.path.exists(s):
        s = os.path.realpath(s)
    return s


def _is_hub_id(key: str) -> bool:
    return not os.path.isabs(key) and not os.path.exists(key) and key.count("/") == 1


def same_model(a, b) -> bool:
    """Same path (after dropping ``stepN``), or a hub id ``org/name`` vs a local dir named ``name``."""
    ka, kb = model_key(a), model_key(b)
    if ka == kb:
        return True
    if _is_hub_id(ka) or _is_hub_id(kb):
        return Path(ka).name.lower() == Path(kb).name.lower() and not (_is_hub_id(ka) and _is_hub_id(kb))
    return False


def check_scores_match(manifest: dict, *, model=None, window=None, unit=None, rows_per_step: int = 1,
                       where="scores file") -> None:
    """ConfigError when the scores were computed for another model, window or unit."""
    if model is not None and manifest.get("model") is not None and not same_model(manifest["model"], model):
        raise ConfigError(f"{where} was computed for model {manifest['model']!r}, not the retrained {str(model)!r}")
    rows = manifest_rows(manifest, rows_per_step)
    if window is not None and rows is not None:
        want = (window[0] * rows_per_step, window[1] * rows_per_step)
        if tuple(rows) != want:
            mw = manifest_window(manifest)
            have = f"window {list(mw)}" if mw else f"rows [{rows[0]}, {rows[1]})"
            raise ConfigError(f"{where} covers {have}, not the retraining window {list(window)} "
                              f"(rows [{want[0]}, {want[1]}) at {rows_per_step} rows per step)")
    units = manifest_units(manifest)
    if unit is not None and units is not None and tuple(unit[:2]) not in units:
        raise ConfigError(f"{where} scores units {['L%d.H%d' % u for u in units]}, not the tracked "
                          f"unit L{unit[0]}.H{unit[1]}")


def check_window(window: tuple[int, int], checkpoints: dict, n_rows: int, rows_per_step: int,
                 end: int | None = None, where: str = "checkpoints") -> None:
    """The window must start at an available checkpoint and its rows (to ``end``) must exist."""
    a, b = window
    end = b if end is None else end
    if not (0 <= a < b <= end):
        raise ConfigError(f"window [{a}, {b}) (trained until {end}) is empty or reversed")
    if a not in checkpoints:
        have = sorted(checkpoints)
        shown = ", ".join(str(s) for s in have[:12]) + (" ..." if len(have) > 12 else "")
        raise ConfigError(f"window start step {a} has no checkpoint in {where} (available steps: {shown or 'none'})")
    if rows_per_step * end > n_rows:
        raise ConfigError(f"training to step {end} needs {rows_per_step * end} rows but the data source has "
                          f"{n_rows} ({n_rows // rows_per_step} steps of {rows_per_step})")
