"""Checks run before any retraining: does the scores file belong to this model, window and unit,
and does the window lie inside the checkpoints and the data?

The score manifest is the one ``mda_fast.attribution.MDA.score`` writes: ``units`` as unit names
("L1.H3.qk", parsed by :meth:`mda_fast.units.Unit.parse`, the one unit parser), ``window`` as
``window_info`` (``first_row_id`` / ``last_row_id``), and ``identity`` (``attribution.run.identity``):
the content fingerprint of the model weights and of the window's rows the scores were computed
from. Scores match a run of checkpoints when their weights are those of one of its checkpoints
(``models.fingerprint``, cached beside each checkpoint; the step the manifest names is tried first)
and their rows are the retraining window's; paths and names never decide it.
"""

from __future__ import annotations

import re

from mda_fast.digest import short
from mda_fast.errors import ConfigError
from mda_fast.models.fingerprint import checkpoint_weights
from mda_fast.units import Unit

_STEP = re.compile(r"step(\d+)/*$")


def manifest_rows(manifest: dict) -> tuple[int, int] | None:
    """[lo, hi) row ids the scores cover (None when the manifest does not say)."""
    w = manifest.get("window")
    if isinstance(w, dict) and w.get("first_row_id") is not None and w.get("last_row_id") is not None:
        return int(w["first_row_id"]), int(w["last_row_id"]) + 1
    return None


def manifest_units(manifest: dict) -> list[Unit]:
    """The units a scores manifest names ([] when none)."""
    return [Unit.parse(str(u)) for u in manifest.get("units") or []]


def _candidates(manifest: dict, checkpoints: dict, window) -> list[int]:
    """Steps to compare the scores' weights with: the one the manifest names, the window's end and
    start, then the others from the latest."""
    m = _STEP.search(str(manifest.get("model") or ""))
    first = [int(m.group(1))] if m else []
    order = first + ([window[1], window[0]] if window else []) + sorted(checkpoints, reverse=True)
    return [s for s in dict.fromkeys(order) if s in checkpoints]


def scores_checkpoint(manifest: dict, checkpoints: dict, window=None, where="scores file") -> int:
    """The step of the checkpoint whose weights the scores were computed from; ConfigError when
    the manifest records no weights fingerprint or none of ``checkpoints`` ({step: dir}) has them."""
    identity = manifest.get("identity") if isinstance(manifest.get("identity"), dict) else {}
    weights = identity.get("weights")
    if not weights:
        raise ConfigError(f"{where} records no model-weights fingerprint (written by an older mda-fast or by "
                          f"hand); score the window again with `mda score` or `mda run`")
    for step in _candidates(manifest, checkpoints, window):
        if checkpoint_weights(checkpoints[step]) == weights:
            return step
    steps = ", ".join(str(s) for s in sorted(checkpoints)[:12]) + (" ..." if len(checkpoints) > 12 else "")
    raise ConfigError(f"{where} was computed from model weights {short(weights)} ({manifest.get('model')}), "
                      f"which are not those of any of the checkpoints (steps {steps}); score a checkpoint of "
                      f"the retrained run")


def check_scores_match(manifest: dict, *, checkpoints: dict | None = None, data: dict | None = None, window=None,
                       unit=None, rows_per_step: int = 1, where="scores file") -> None:
    """ConfigError when the scores were computed for another window, unit, model or data:
    ``checkpoints`` {step: dir} of the retrained run, ``data`` the window's ``window_fingerprint``."""
    rows = manifest_rows(manifest)
    if window is not None and rows is not None:
        want = (window[0] * rows_per_step, window[1] * rows_per_step)
        if tuple(rows) != want:
            raise ConfigError(f"{where} covers rows [{rows[0]}, {rows[1]}), not the retraining window "
                              f"{list(window)} (rows [{want[0]}, {want[1]}) at {rows_per_step} rows per step)")
    heads = [(u.layer, u.head) for u in manifest_units(manifest) if u.head is not None]  # not module units
    if unit is not None and heads and tuple(unit[:2]) not in heads:
        raise ConfigError(f"{where} scores units {['L%d.H%d' % u for u in heads]}, not the tracked "
                          f"unit L{unit[0]}.H{unit[1]}")
    if checkpoints is not None:
        scores_checkpoint(manifest, checkpoints, window, where)
    recorded = (manifest.get("identity") or {}).get("data")
    if data is not None and recorded != data:
        raise ConfigError(f"{where} was computed on other rows than the retraining window's (row ids or "
                          f"content differ: sample {short((recorded or {}).get('sample'))} there vs "
                          f"{short(data.get('sample'))} in the data source)")


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
