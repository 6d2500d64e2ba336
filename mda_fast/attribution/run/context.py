"""The run context: what every stage of one attribution run works on, checked and resolved once.

    ctx = build_context(model, ["L1.H3.qk"], ["copy_target"], tokenizer=tok, settings={"batch_size": 8})
    ctx.model, ctx.adapter, ctx.units, ctx.unit_blocks, ctx.blocks, ctx.probes, ctx.probe_data, ctx.settings

``build_context`` is the one front door that assembles these parts (``MDA``, the pipeline and the
index query all build theirs here): the model is put in eval mode on the settings' device and
checked (``inputs.prepare_model``), the units are parsed into their blocks, every probe must reach
one of them, and each probe's data set is generated (or taken from ``probe_data``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mda_fast.attribution.run.inputs import prepare_model, resolve_probes, resolve_units
from mda_fast.attribution.run.settings import Settings
from mda_fast.digest import array_digest
from mda_fast.probes import default_vocab_high
from mda_fast.units import get_adapter


@dataclass(frozen=True)
class RunContext:
    """The checked parts of one run: model and its adapter, units with their blocks, probes with
    their data, settings, and the names recorded for people (never part of an identity)."""

    model: object
    adapter: object
    units: list
    unit_blocks: dict
    blocks: list
    probes: list
    probe_data: dict
    settings: Settings
    tokenizer: object = None
    model_name: str = ""
    revision: str | None = None

    @property
    def columns(self) -> list[str]:
        """Score columns: unit u's probes are columns [u * n_probes, (u + 1) * n_probes)."""
        return [f"{u.name}/{p.name}" for u in self.units for p in self.probes]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def describe(self) -> dict:
        """What the manifests record for people to read (never part of the identity)."""
        return {"model": self.model_name, "revision": self.revision, "units": [u.name for u in self.units],
                "blocks": [b.name for b in self.blocks]}

    def probe_digests(self) -> list[dict]:
        """Each probe's name and the digest of its probe set (the identity's ``probes``)."""
        return [{"name": p.name, "data": array_digest(self.probe_data[p.name].numpy())} for p in self.probes]


def model_name_of(model, given: str | None = None) -> str:
    return given or getattr(model.config, "name_or_path", "") or type(model).__name__


def probe_sets(probes, settings: Settings, model, tokenizer, given: dict) -> dict[str, torch.Tensor]:
    """{probe name: LongTensor[n, L]}: ``given`` sets, else generated from the settings."""
    high = settings.probe_vocab_high or default_vocab_high(model, tokenizer)
    out = {}
    for p in probes:
        if p.name in given:
            out[p.name] = torch.as_tensor(given[p.name], dtype=torch.long)
        else:
            out[p.name] = p.make_data(settings.probe_n, settings.probe_seq_len, settings.probe_vocab_low, high,
                                      settings.probe_seed)
    return out


def build_context(model, units, probes, tokenizer=None, settings: Settings | dict | None = None, *,
                  probe_data: dict | None = None, model_name: str | None = None,
                  revision: str | None = None) -> RunContext:
    """The one front door of a run's parts (see the module docstring); ConfigError for a bad input."""
    settings = settings if isinstance(settings, Settings) else Settings.from_dict(settings)
    model = prepare_model(model, settings)
    adapter = get_adapter(model)
    units, unit_blocks, blocks = resolve_units(units, adapter)
    probes = resolve_probes(probes, model, adapter, blocks)
    data = probe_sets(probes, settings, model, tokenizer, probe_data or {})
    return RunContext(model, adapter, units, unit_blocks, blocks, probes, data, settings, tokenizer,
                      model_name_of(model, model_name), revision)
