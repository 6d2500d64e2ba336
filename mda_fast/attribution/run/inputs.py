"""The inputs of an attribution run, checked before any pass: the model (dtype, device, backend),
the units and the probes (each must reach one of the units' blocks).

    model = prepare_model(model, settings)                 # eval mode, on settings.device
    units, unit_blocks, blocks = resolve_units(["L1.H3.qk"], adapter)
    probes = resolve_probes(["prev_attn:L1.H3"], model, adapter, blocks)
"""

from __future__ import annotations

import torch

from mda_fast.errors import ConfigError
from mda_fast.models.device import torch_device
from mda_fast.models.interop import as_hf_model
from mda_fast.ops.backends import unusable
from mda_fast.probes import Probe, parse_probe
from mda_fast.units import Unit

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def as_list(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def model_dtype(model) -> str:
    return str(next(model.parameters()).dtype).replace("torch.", "")


def prepare_model(model, settings):
    """``model`` in eval mode on ``settings.device``; ConfigError for parameters in a dtype the ops
    do not take (float64), a device this machine lacks, or a backend that cannot run here. A model
    held as a TransformerBridge or an nnsight wrapper is first unwrapped (``models.interop``)."""
    model = as_hf_model(model)[0]
    bad = sorted({str(p.dtype).replace("torch.", "") for p in model.parameters() if p.dtype not in SUPPORTED_DTYPES})
    if bad:
        raise ConfigError(f"the model's parameters are {', '.join(bad)}; attribution runs in float32, bfloat16 or "
                          f"float16: convert the model first (model.float()) or load it with "
                          f"load_model(..., dtype=torch.float32)")
    model = model.eval()
    if settings.device is not None:
        model.to(torch_device(settings.device))
    why = unusable(settings.backend, next(model.parameters()).device.type)
    if why:
        raise ConfigError(f"settings.backend {settings.backend!r} {why}")
    return model


def resolve_units(units, adapter):
    """(units, {unit: [block names]}, blocks each named once); ConfigError for a bad unit."""
    units = list(dict.fromkeys(u if isinstance(u, Unit) else Unit.parse(str(u)) for u in as_list(units)))
    if not units:
        raise ConfigError("no units given; name at least one head, e.g. L1.H3.qk")
    unit_blocks, seen = {}, {}
    for u in units:
        bs = u.blocks(adapter)  # raises ConfigError for a layer/head out of range
        unit_blocks[u.name] = [b.name for b in bs]
        for b in bs:
            seen.setdefault(b.name, b)
    return units, unit_blocks, list(seen.values())


def resolve_probes(probes, model, adapter, blocks) -> list[Probe]:
    """Parsed probes, each applicable to the model and reaching one of ``blocks`` (a probe that
    reaches none would give every row a score of exactly 0)."""
    parsed = [parse_probe(p) for p in as_list(probes)]
    if not parsed:
        raise ConfigError("no probes given; use e.g. copy_target")
    names = [p.name for p in parsed]
    if len(set(names)) != len(names):
        raise ConfigError(f"probe names must be unique, got {names}")
    for p in parsed:
        p.check(model)
        if not any(p.reaches(b, adapter) for b in blocks):
            raise ConfigError(f"probe {p.name} depends on none of the units' blocks "
                              f"({', '.join(b.name for b in blocks)}), only on {p.dependencies()}, so every "
                              f"score would be 0")
    return parsed
