"""Checks run before any retraining: does the scores file belong to this model, window and unit,
and does the window lie inside the checkpoints and the data?

The score manifest is the one ``mda_fast.attribution.MDA.score`` writes: ``units`` as unit names
("L1.H3.qk", parsed by :meth:`mda_fast.units.Unit.parse`, the one unit parser), ``window`` as
``window_info`` (``first_row_id`` / ``last_row_id``), ``model`` as a path or hub name, possibly
ending in ``/stepN``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mda_fast.errors import ConfigError
from mda_fast.units import Unit

_STEP_SUFFIX = re.compile(r"[/@:]?(step\d+|main)$")


def manifest_rows(manifest: dict) -> tuple[int, int] | None:
    """[lo, hi) row ids the scores cover (None when the manifest does not say)."""
    w = manifest.get("window")
    if isinstance(w, dict) and w.get("first_row_id") is not None and w.get("last_row_id") is not None:
        return int(w["first_row_id"]), int(w["last_row_id"]) + 1
    return None


def manifest_units(manifest: dict) -> list[Unit]:
    """The units a scores manifest names ([] when none)."""
    return [Unit.parse(str(u)) for u in manifest.get("units") or []]


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
    rows = manifest_rows(manifest)
    if window is not None and rows is not None:
        want = (window[0] * rows_per_step, window[1] * rows_per_step)
        if tuple(rows) != want:
            raise ConfigError(f"{where} covers rows [{rows[0]}, {rows[1]}), not the retraining window "
                              f"{list(window)} (rows [{want[0]}, {want[1]}) at {rows_per_step} rows per step)")
    heads = [(u.layer, u.head) for u in manifest_units(manifest)]
    if unit is not None and heads and tuple(unit[:2]) not in heads:
        raise ConfigError(f"{where} scores units {['L%d.H%d' % u for u in heads]}, not the tracked "
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
