"""Content identity of the fit and score stages: what an output was computed from, never where.

    fit    {"weights", "dtype", "data", "blocks", "settings"}                                 factors/
    score  {"weights", "dtype", "data", "units", "blocks", "probes", "settings", "factors"}   scores/

``weights``: ``models.fingerprint.weights_fingerprint`` (the checkpoint files' content, or the
tensors); ``dtype``: the parameters' dtype; ``data``: ``data.fingerprint.window_fingerprint`` of the
window (its row ids and a sample of its rows); ``probes``: each probe's name and a digest of its
probe set; ``settings``: those that change the numbers (``Settings.fit_dict`` / ``probe_dict``);
``factors``: the fit fingerprint of the factors the scores used. A manifest records ``identity``
and ``fingerprint = blob_key(identity)``. The model's name, the revision and the window's file
name are recorded beside it for people to read but never enter it: a moved or re-spelled folder,
or the same weights under another name, is the same run.

A later stage refuses an input whose identity does not match (:func:`check_factors`), naming both
sides (:func:`difference`); a finished stage is reused only when its fingerprint matches.
"""

from __future__ import annotations

import json

from mda_fast.data.fingerprint import describe_window
from mda_fast.digest import blob_key, short
from mda_fast.errors import ConfigError

LABELS = {"weights": "model weights", "dtype": "model dtype", "data": "window", "blocks": "blocks",
          "units": "units", "probes": "probes", "settings": "settings", "factors": "EK-FAC factors"}


def fingerprint(identity: dict) -> str:
    return blob_key(identity)


def _show(key: str, value, name: str | None) -> str:
    if key == "data":
        return describe_window(value, name)
    if key in ("weights", "factors"):
        return short(value) + (f" ({name})" if name else "")
    text = json.dumps(value, default=str, sort_keys=True)
    return text if len(text) <= 100 else text[:97] + "..."


def difference(old: dict | None, new: dict, old_names: dict | None = None,
               new_names: dict | None = None) -> tuple[str, str, str] | None:
    """(what, old, new) shown for the first key where two identities differ (None when they agree);
    ``*_names`` give the human names shown beside weights / data (model, window file)."""
    old, old_names, new_names = old or {}, old_names or {}, new_names or {}
    for key in dict.fromkeys([*new, *old]):
        if old.get(key) != new.get(key):
            return (LABELS.get(key, key), _show(key, old.get(key), old_names.get(key)),
                    _show(key, new.get(key), new_names.get(key)))
    return None


def names_of(manifest: dict) -> dict:
    """The human names a manifest records for its weights and its window."""
    window = manifest.get("window") if isinstance(manifest.get("window"), dict) else {}
    return {"weights": manifest.get("model"), "data": window.get("name")}


def check_factors(manifest: dict, expected: dict, names: dict, where: str, same_window: bool = True) -> None:
    """ConfigError unless the factors of ``manifest`` were fitted on the model weights and (with
    ``same_window``) the window of ``expected`` (a score identity); ``names``: this run's model / window names."""
    recorded = manifest.get("identity")
    if not isinstance(recorded, dict):
        raise ConfigError(f"factors {where} record no content identity (fitted by an older mda-fast); "
                          f"fit them again with `mda fit`")
    want = {k: expected[k] for k in (("weights", "data") if same_window else ("weights",))}
    why = difference({k: recorded.get(k) for k in want}, want, names_of(manifest), names)
    if why:
        what, theirs, ours = why
        raise ConfigError(f"factors {where} were fitted on {what} {theirs}, not on this run's {ours}; fit "
                          f"factors for this model and window (`mda fit`), pass the matching --factors, score part of "
                          f"the fitted window (--part I/N), or score another window explicitly (--other-window)")


def fitted_on(manifest: dict, weights: str, data: dict) -> bool:
    """Whether a factors manifest was fitted on these weights and this window."""
    recorded = manifest.get("identity") if isinstance(manifest.get("identity"), dict) else {}
    return recorded.get("weights") == weights and recorded.get("data") == data


def window_info(source) -> dict:
    """What the manifests record about a window for people to read (never part of an identity)."""
    ids = source.row_ids()
    return {"name": getattr(source, "name", type(source).__name__), "rows": int(len(ids)),
            "first_row_id": int(ids[0]) if len(ids) else None, "last_row_id": int(ids[-1]) if len(ids) else None}
