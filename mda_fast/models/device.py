"""Torch devices named by the user (``--device``, ``settings.device``), checked before anything is loaded."""

from __future__ import annotations

import torch

from mda_fast.errors import ConfigError


def torch_device(device) -> torch.device:
    """``device`` as a torch.device; ConfigError when it is not one or this machine has none."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device {device!r} is not a valid torch device ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        why = ("this torch build has no CUDA support" if torch.version.cuda is None else
               "no CUDA device is visible")
        raise ConfigError(f"device {str(device)!r} is not available: {why} (torch {torch.__version__}); "
                          f"use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"device {str(device)!r} is not available: {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {str(device)!r} is not available on this machine; use --device cpu")
    return dev
