"""Content identity of model weights: of a checkpoint's files, or of a model's tensors.

    checkpoint_weights("runs/demo/checkpoints/step150")   # weight files + config, cached beside them
    weights_fingerprint(model)     # the files it was loaded from (load_model), else its state dict
    checkpoint_state(step_dir)     # weights + optimizer state + trainer state (a retraining's start)

A model loaded by :func:`mda_fast.models.load_model` remembers the directory it was read from
(``model.mda_checkpoint``), so its fingerprint is the checkpoint's, computed once per file and
cached beside it (``digest.files_digest``); the same files anywhere (a copy, a moved folder, the
Hugging Face cache) give the same fingerprint. A model changed in place after loading must drop
that link (:func:`forget_files`; training does) and is then identified by its tensors. The
config enters the fingerprint without the fields that do not change the function (the
transformers version, the storage dtype, the name it was loaded under).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from mda_fast.digest import blob_key, files_digest
from mda_fast.errors import ModelError

WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
STATE_FILES = ("optimizer.pt", "trainer_state.json")
_CONFIG_NOISE = ("transformers_version", "_name_or_path", "name_or_path", "_commit_hash", "dtype", "torch_dtype",
                 "_attn_implementation_autoset", "attn_implementation", "_attn_implementation")


def _config_key(config: dict) -> str:
    return blob_key({k: v for k, v in config.items() if k not in _CONFIG_NOISE})


def weight_files(directory) -> list[str]:
    """Names of the weight files of a checkpoint directory (safetensors, else PyTorch .bin)."""
    d = Path(directory)
    for pattern in WEIGHT_PATTERNS:
        names = sorted(p.name for p in d.glob(pattern))
        if names:
            return names
    raise ModelError(f"checkpoint {d} has no weight files (*.safetensors or pytorch_model*.bin)")


def checkpoint_weights(directory) -> str:
    """Fingerprint of a checkpoint directory's weights and config.json."""
    d = Path(directory)
    try:
        config = json.loads((d / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"checkpoint {d}: config.json cannot be read ({exc})") from None
    digests = files_digest(d, weight_files(d))
    return blob_key(["weights/1", _config_key(config), sorted(digests.values())])


def checkpoint_state(directory) -> str:
    """Fingerprint of everything a retraining starting from checkpoint ``directory`` reads."""
    d = Path(directory)
    extra = files_digest(d, [n for n in STATE_FILES if (d / n).is_file()])
    return blob_key(["state/1", checkpoint_weights(d), sorted(extra.items())])


def state_dict_fingerprint(model) -> str:
    """Fingerprint of a model's tensors (names, dtypes, shapes, bytes) and config."""
    h = hashlib.sha1()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return blob_key(["tensors/1", _config_key(model.config.to_dict()), h.hexdigest()])


def weights_fingerprint(model) -> str:
    """The fingerprint of ``model``'s weights (see the module doc)."""
    source = getattr(model, "mda_checkpoint", None)
    return checkpoint_weights(source) if source else state_dict_fingerprint(model)


def remember_files(model, directory) -> None:
    """Record that ``model``'s weights are those of checkpoint ``directory`` (load_model does)."""
    model.mda_checkpoint = str(directory)


def forget_files(model) -> None:
    """Record that ``model``'s weights no longer are those of the files it was loaded from."""
    model.__dict__.pop("mda_checkpoint", None)
