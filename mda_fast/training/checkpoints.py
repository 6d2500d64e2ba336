"""Pythia-style checkpoints: ``out_dir/step{N}/`` holds the state after N updates.

A checkpoint directory is a Hugging Face model directory (``save_pretrained``, safetensors, loadable
by ``from_pretrained``/``mda_fast.models.load_model``) plus

- ``optimizer.pt``       the optimizer's ``state_dict`` (Adam moments), for exact resumption;
- ``trainer_state.json`` ``{"step", "rows_per_step", "lr", "optim", "rng", ...}``;
- the tokenizer files when a tokenizer was given (so decoding works through the standard API).

It is written to a temporary sibling and renamed (``io.atomic_dir``), so a directory named ``step{N}``
is always complete.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import json
import re
from pathlib import Path

import torch

from mda_fast.errors import ConfigError, DataError
from mda_fast.io import atomic_dir

STATE_FILE = "trainer_state.json"
OPTIM_FILE = "optimizer.pt"
_STEP_DIR = re.compile(r"^step(\d+)$")


def pythia_save_steps(total: int, every: int = 1000, log_max: int = 512,
                      extra: tuple[int, ...] | list[int] = ()) -> list[int]:
    """Pythia's checkpoint schedule cut to a run of ``total`` steps.

    ``step0``, the powers of two ``1, 2, 4, ..., log_max``, every ``every`` steps, ``extra`` steps,
    and the final step ``total``. All clipped to ``[0, total]``; sorted and unique.
    """
    if every <= 0:
        raise ConfigError(f"checkpoint interval 'every' must be positive, got {every}.")
    steps = {0, total}
    p = 1
    while p <= min(log_max, total):
        steps.add(p)
        p *= 2
    steps.update(range(every, total + 1, every))
    steps.update(int(s) for s in extra if 0 <= int(s) <= total)
    return sorted(steps)


def step_dir(out_dir: str | Path, step: int) -> Path:
    return Path(out_dir) / f"step{int(step)}"


def list_checkpoints(out_dir: str | Path) -> dict[int, Path]:
    """Complete checkpoints under ``out_dir`` (those with a trainer state), by step."""
    out = {}
    root = Path(out_dir)
    if not root.is_dir():
        return out
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir() and (p / STATE_FILE).is_file():
            out[int(m.group(1))] = p
    return dict(sorted(out.items()))


@contextlib.contextmanager
def _quiet_hf():
    """No transformers progress bars ("Writing model shards", "Loading weights") per checkpoint."""
    from transformers.utils import logging as hf_logging  # imported on use: transformers takes seconds to import and most commands never need it

    on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if on:
            hf_logging.enable_progress_bar()


def _rng_to_json() -> dict:
    rng = {"torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode("ascii")}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = [base64.b64encode(s.numpy().tobytes()).decode("ascii")
                       for s in torch.cuda.get_rng_state_all()]
    return rng


def _rng_from_json(rng: dict) -> None:
    if "torch" in rng:
        b = base64.b64decode(rng["torch"])
        torch.set_rng_state(torch.frombuffer(bytearray(b), dtype=torch.uint8))
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(
            [torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8) for s in rng["cuda"]])


def save_checkpoint(out_dir: str | Path, step: int, model, optimizer=None, state: dict | None = None,
                    tokenizer=None) -> Path:
    """Write ``out_dir/step{step}`` atomically (``io.atomic_dir``); returns the final path."""
    final = step_dir(out_dir, step)
    with atomic_dir(final) as tmp:
        with _quiet_hf():
            model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if optimizer is not None:
            torch.save(optimizer.state_dict(), tmp / OPTIM_FILE)
        st = dict(state or {})
        st["step"] = int(step)
        st["rng"] = _rng_to_json()
        with open(tmp / STATE_FILE, "w") as f:
            json.dump(st, f, indent=1)
    return final


def read_state(path: str | Path) -> dict:
    p = Path(path) / STATE_FILE
    try:
        with open(p) as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(f"checkpoint {path} has no {STATE_FILE}; it was not written by mda_fast.training.")
    except json.JSONDecodeError as e:
        raise DataError(f"{p} is not valid JSON ({e}).")


def load_weights(path: str | Path, model) -> None:
    """Load the weights of checkpoint ``path`` into ``model`` in place.

    Goes through ``from_pretrained`` because transformers renames keys on save (e.g. GPT-NeoX
    ``lm_head`` <-> ``embed_out``); the raw safetensors keys are not the module's keys.
    """
    if not glob.glob(str(Path(path) / "*.safetensors")):
        raise DataError(f"checkpoint {path} has no .safetensors weights.")
    p0 = next(model.parameters())
    try:
        with _quiet_hf():
            loaded = type(model).from_pretrained(path, dtype=p0.dtype)
    except Exception as e:  # noqa: BLE001 - any load failure is a bad checkpoint for the user
        raise DataError(f"checkpoint {path} cannot be loaded as {type(model).__name__} ({e}).") from e
    try:
        model.load_state_dict(loaded.state_dict(), strict=True)
    except RuntimeError as e:
        raise DataError(f"checkpoint {path} does not match the model ({str(e).splitlines()[0]}).") from e


def restore(path: str | Path, model, optimizer=None, restore_rng: bool = True) -> dict:
    """Load weights (+ optimizer state, RNG) of checkpoint ``path``; returns its trainer state."""
    state = read_state(path)
    load_weights(path, model)
    if optimizer is not None:
        opt_file = Path(path) / OPTIM_FILE
        if opt_file.is_file():
            optimizer.load_state_dict(torch.load(opt_file, map_location="cpu", weights_only=True))
        else:
            state["optimizer_missing"] = True
    if restore_rng and "rng" in state:
        _rng_from_json(state["rng"])
    return state
