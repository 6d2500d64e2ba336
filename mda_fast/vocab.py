"""One spelling per concept across every ``mda`` command, and the old spellings accepted for one release.

    head metrics   previous_token, duplicate_token, induction, prefix_matching (``mda heads``,
                   ``mda intervene --metric``, the demo's ``heads.metric``); ``prev_token`` is the
                   old ``mda intervene`` spelling. A *probe* (``prev_attn:L1.H3``) is not a metric:
                   it is a query-side loss the scores are taken against, and keeps its name.
    units          ``L1.H3`` names a head everywhere; ``L1.H3.qk`` adds the block mode where a
                   command attributes to blocks (default ``qk``); ``mda intervene`` tracks heads and
                   ignores a mode. ``L3.attention.dense`` names a whole linear module of layer 3 (its
                   path inside the layer; weight and bias, ``.nobias``: the weight only, ``.bias``: the bias
                   required) where a
                   command attributes to blocks; the full module path ``gpt_neox.layers.3.attention.dense``
                   is read as the same unit (``units.Unit.parse``, the one parser).
    -k / --top-k   a count (``20``) or a percentage of the rows (or heads) on offer (``10%``);
                   ``mda heads -k 0`` (all heads) is the old spelling of ``100%``.

An old spelling prints one line on stderr and is read as the new one.
"""

from __future__ import annotations

import sys

from mda_fast.errors import ConfigError

HEAD_METRICS = ("previous_token", "duplicate_token", "induction", "prefix_matching")
OLD_SPELLINGS = {"prev_token": "previous_token"}


def deprecated(old: str, new: str, what: str) -> None:
    """The one-line note an old spelling prints (stderr; the value is then read as ``new``)."""
    print(f"mda: {what} {old!r} is deprecated, write {new!r} (the old spelling goes in the next release)",
          file=sys.stderr)


def metric(name: str, what: str = "metric") -> str:
    """The current spelling of a head metric name (an old one accepted with a note)."""
    new = OLD_SPELLINGS.get(name)
    if new is not None:
        deprecated(name, new, what)
        return new
    return name


def count_or_share(text) -> int | str:
    """Parse ``-k``: a positive count (int) or a percentage in (0, 100] (kept as ``"10%"``);
    the old ``0`` (= all, ``mda heads``) is read as ``"100%"`` with a note."""
    s = str(text).strip()
    try:
        if s.endswith("%"):
            if not 0 < float(s[:-1]) <= 100:
                raise ValueError
            return s
        count = int(s)
    except ValueError:
        raise ConfigError(f"-k {text!r} must be a positive count or a percentage in (0, 100], e.g. 20 or 10%") from None
    if count == 0:
        deprecated("0", "100%", "-k")
        return "100%"
    if count < 0:
        raise ConfigError(f"-k {text!r} must be a positive count or a percentage in (0, 100], e.g. 20 or 10%")
    return count


def resolve_count(top, n: int, what: str = "plan", cap: bool = False) -> int:
    """``"10%"`` -> 10% of ``n`` (rounded, >= 1); ``"1000"`` / 1000 -> 1000 (more than ``n`` is an
    error, or with ``cap`` just ``n``)."""
    s = str(top).strip()
    try:
        if s.endswith("%"):
            frac = float(s[:-1]) / 100.0
            if not 0 < frac <= 1:
                raise ValueError
            count = max(1, int(round(frac * n)))
        else:
            count = int(s)
            if count < 1:
                raise ValueError
    except ValueError:
        raise ConfigError(f"{what}: --top must be a percentage in (0, 100] or a positive count, got {top!r}") from None
    if count > n and not cap:
        raise ConfigError(f"{what}: --top {top} selects {count} rows but the window has only {n} rows")
    return min(count, n)
