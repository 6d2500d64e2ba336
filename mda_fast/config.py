"""The YAML config of an attribution run (`mda run --config CONFIG`, also read by `mda fit/score/top`).

    model: runs/demo/ckpt            # checkpoint directory or hub id
    revision: step1000               # optional
    device: cpu
    data:
      source: runs/demo/data/corpus  # anything mda_fast.data.open_source accepts
      steps: [900, 1300]             # optional window [start, end) in optimizer steps
      rows_per_step: 32
      options: {}                    # extra open_source keywords (seq_len, vocab_size, ...)
    units: auto                      # or [L1.H3.qk, "1:2:qkvo"]; auto = best heads by `heads.metric`
    heads: {metric: induction, top: 1, mode: qk, n: 32, seq_len: 64, seed: 12345}
    probes: [copy_target]
    settings: {fit_fraction: 0.1, batch_size: 8}   # mda_fast.attribution.Settings
    top_k: 20                        # top rows per side: a count or a % of the scored rows
    out: runs/demo/mda               # factors/, scores/, top/, heads/ go here

Overrides are ``dotted.key=value`` strings with YAML values (``settings.batch_size=4``).
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field

import yaml

from mda_fast import vocab
from mda_fast.attribution.run.settings import HEAD_DEFAULTS, Settings
from mda_fast.data import parse_steps
from mda_fast.errors import ConfigError
from mda_fast.models.device import torch_device

DEFAULTS: dict = {
    "model": None,
    "revision": None,
    "device": "cpu",
    "data": {"source": None, "steps": None, "rows_per_step": 1024, "options": {}},
    "units": "auto",
    "heads": HEAD_DEFAULTS,
    "probes": ["copy_target"],
    "settings": {},
    "top_k": 20,
    "out": None,
}


def _merge(base: dict, extra: dict, where: str) -> dict:
    out = copy.deepcopy(base)
    for k, v in (extra or {}).items():
        if k not in base:
            raise ConfigError(f"{where}: unknown key {k!r}; known keys: {', '.join(sorted(base))}")
        if isinstance(base[k], dict) and base[k] and isinstance(v, dict) and k not in ("settings", "options"):
            out[k] = _merge(base[k], v, f"{where}.{k}")
        elif isinstance(base[k], dict) and v is not None and not isinstance(v, dict):
            raise ConfigError(f"{where}: {k!r} must be a mapping, got {type(v).__name__}")
        else:
            out[k] = v
    return out


def apply_override(d: dict, text: str) -> None:
    """In place: ``"a.b=value"`` sets d["a"]["b"] to the YAML-parsed value."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. settings.batch_size=4)")
    key, raw = text.split("=", 1)
    try:  # "1000:2000" stays a string (YAML 1.1 would read it as a base-60 integer)
        value = raw.strip() if re.fullmatch(r"\s*\d+:\d+\s*", raw) else (yaml.safe_load(raw) if raw.strip() else None)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({exc})") from None
    parts = key.strip().split(".")
    node = d
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            if p not in node:
                raise ConfigError(f"override {text!r}: unknown key {p!r}")
            node[p] = {}
        node = node[p]
    if len(parts) == 1 and parts[0] not in DEFAULTS:
        raise ConfigError(f"override {text!r}: unknown key {parts[0]!r}; known keys: {', '.join(sorted(DEFAULTS))}")
    node[parts[-1]] = value


@dataclass
class RunConfig:
    model: str | None
    revision: str | None
    device: str
    data: dict
    units: list[str] | str
    heads: dict
    probes: list[str]
    settings: dict
    top_k: int | str                 # a count or "10%" of the scored rows (mda_fast.vocab)
    out: str | None
    path: str | None = field(default=None, repr=False)

    @classmethod
    def from_dict(cls, d: dict | None, where: str = "config", overrides=()) -> "RunConfig":
        if d is not None and not isinstance(d, dict):
            raise ConfigError(f"{where}: the top level must be a mapping of keys, got {type(d).__name__}")
        merged = _merge(DEFAULTS, d or {}, where)
        for o in overrides or ():
            apply_override(merged, o)
        merged = _merge(DEFAULTS, merged, where)  # re-check keys set by overrides
        cfg = cls(**merged)
        cfg.validate(where)
        return cfg

    @classmethod
    def load(cls, path: str | None, overrides=(), base: dict | None = None) -> "RunConfig":
        """Config from a YAML file (optional), then ``base`` keys (CLI flags), then overrides."""
        d: dict = {}
        if path is not None:
            if not os.path.isfile(path):
                raise ConfigError(f"config file {path} does not exist")
            try:
                with open(path) as fh:
                    d = yaml.safe_load(fh) or {}
            except yaml.YAMLError as exc:
                raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
            if not isinstance(d, dict):
                raise ConfigError(f"config file {path}: the top level must be a mapping of keys")
        d = _merge(DEFAULTS, d, path or "config")
        for k, v in (base or {}).items():
            if v is not None:
                _set(d, k, v)
        cfg = cls.from_dict(d, path or "config", overrides)
        cfg.path = path
        return cfg

    def validate(self, where: str = "config") -> None:
        if self.units != "auto":
            if isinstance(self.units, str):
                self.units = [self.units]
            if not isinstance(self.units, list) or not self.units:
                raise ConfigError(f"{where}: units must be 'auto' or a non-empty list like [L1.H3.qk]")
            self.units = [str(u) for u in self.units]
        if isinstance(self.probes, str):
            self.probes = [self.probes]
        if not isinstance(self.probes, list) or not self.probes:
            raise ConfigError(f"{where}: probes must be a non-empty list like [copy_target]")
        steps = self.data.get("steps")
        if steps is not None:
            if isinstance(steps, str):
                steps = list(parse_steps(steps))
            if not (isinstance(steps, (list, tuple)) and len(steps) == 2 and all(isinstance(s, int) for s in steps)):
                raise ConfigError(f"{where}: data.steps must be [start, end] integers, got {steps!r}")
            if not 0 <= steps[0] < steps[1]:
                raise ConfigError(f"{where}: data.steps [{steps[0]}, {steps[1]}) is an empty or negative window")
            self.data["steps"] = list(steps)
        rps = self.data.get("rows_per_step")
        if isinstance(rps, bool) or not isinstance(rps, int) or rps < 1:
            raise ConfigError(f"{where}: data.rows_per_step (--rows-per-step) must be an integer >= 1, got {rps!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, (int, str)) or self.top_k in (0, "0"):
            raise ConfigError(f"{where}: top_k (-k) must be a count >= 1 or a percentage like 10%, got {self.top_k!r}")
        self.top_k = vocab.count_or_share(self.top_k)
        if self.heads.get("metric") not in vocab.HEAD_METRICS:
            raise ConfigError(f"{where}: heads.metric {self.heads.get('metric')!r} is not a head score")
        Settings.from_dict(self.settings)  # raises on unknown / invalid settings
        torch_device(self.device)           # raises for a device this machine does not have

    def require(self, *keys: str) -> None:
        for k in keys:
            node = self
            for p in k.split("."):
                node = node.get(p) if isinstance(node, dict) else getattr(node, p)
            if node in (None, ""):
                raise ConfigError(f"{k} is required (set it in the config file or with --{k.split('.')[-1]})")

    def to_dict(self) -> dict:
        return {k: copy.deepcopy(getattr(self, k)) for k in DEFAULTS}


def _set(d: dict, dotted: str, value) -> None:
    parts = dotted.split(".")
    node = d
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
