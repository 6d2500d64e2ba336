"""Load a causal LM checkpoint (local directory or hub id + revision) ready for attribution.

Always eager attention: per-head attention weights (output_attentions) and the capture hooks need
the plain softmax path, which SDPA/flash skip. The model is returned in eval mode.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import torch
import transformers
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, AutoTokenizer

from mda_fast.errors import ModelError
from mda_fast.models.device import torch_device
from mda_fast.models.fingerprint import remember_files
from mda_fast.models.interop import as_hf_model, python_object, tokenizer_of

# Buffers older checkpoints store that current modules recompute; their presence is harmless.
_HARMLESS_UNEXPECTED = re.compile(r"(inv_freq|masked_bias|\.attn\.bias|\.attention\.bias)$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


@contextlib.contextmanager
def _quiet_transformers():
    """Silence load reports and progress bars; we turn their content into ModelError ourselves."""
    log = transformers.utils.logging
    level = log.get_verbosity()
    bars = log.is_progress_bar_enabled()
    log.set_verbosity_error()
    log.disable_progress_bar()
    try:
        yield
    finally:
        log.set_verbosity(level)
        if bars:
            log.enable_progress_bar()


def _looks_local(s: str, p: Path) -> bool:
    """Whether a name that is not an existing directory is meant as a local path: it exists, is
    written as one (``/``, ``.``, ``~``, a trailing separator), is not shaped ``org/name``, starts
    with a directory that exists here, or ends in a checkpoint step (``.../step150``)."""
    if p.exists() or s.startswith(("/", ".", "~")) or s.endswith(os.sep) or not _HUB_ID.match(s):
        return True
    return Path(s.split("/")[0]).exists() or bool(re.fullmatch(r"step\d+", s.split("/")[-1]))


def resolve_checkpoint(name_or_path: str, revision: str | None = None) -> tuple[str, str | None, bool]:
    """Return (path_or_id, hub_revision, is_local).

    A local directory with a `revision` means the Pythia-style layout written by training:
    `<dir>/<revision>/` (e.g. runs/demo/step1000). Anything that looks like a path but does not
    exist (see :func:`_looks_local`) is an error here, before any network lookup.
    """
    p = Path(os.path.expanduser(str(name_or_path)))
    if p.is_dir():
        if revision:
            sub = p / revision
            if not sub.is_dir():
                steps = sorted(d.name for d in p.iterdir() if d.is_dir() and d.name.startswith("step"))
                have = f"; it has {', '.join(steps[:8])}{'...' if len(steps) > 8 else ''}" if steps else ""
                raise ModelError(f"model directory {p} has no checkpoint sub-directory {revision!r}{have}")
            p = sub
        if not (p / "config.json").is_file():
            raise ModelError(f"model directory {p} has no config.json (not a Hugging Face checkpoint)")
        return str(p), None, True
    s = str(name_or_path)
    if _looks_local(s, p):
        what = "is not a directory" if p.exists() else "does not exist"
        raise ModelError(f"model directory {s} {what}")
    return s, revision, False


def _fetch_hint(repo: str, revision: str | None) -> str:
    rev = f" --revision {revision}" if revision else ""
    return (f"fetch it with `hf download {repo}{rev}` (huggingface_hub>=1.0; older: "
            f"`huggingface-cli download {repo}{rev}`) on a machine with network access, "
            f"or unset HF_HUB_OFFLINE to let it download")


def _mismatch(entry) -> str:
    """``key (checkpoint [64, 32], config [48, 32])`` from a transformers mismatched-key entry."""
    if isinstance(entry, (tuple, list)) and len(entry) == 3:
        key, ckpt, model = entry
        return f"{key} (checkpoint {list(ckpt)}, config {list(model)})"
    return str(entry)


def _check_loading_info(info: dict, where: str) -> None:
    missing = sorted(info.get("missing_keys") or ())
    unexpected = sorted(k for k in (info.get("unexpected_keys") or ()) if not _HARMLESS_UNEXPECTED.search(k))
    mismatched = sorted(_mismatch(k) for k in (info.get("mismatched_keys") or ()))
    problems = []
    if missing:
        problems.append(f"{len(missing)} weights missing from the checkpoint (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} checkpoint weights unknown to the config (e.g. {unexpected[0]})")
    if mismatched:
        problems.append(f"{len(mismatched)} weights with the wrong shape (e.g. {mismatched[0]})")
    if problems:
        raise ModelError(f"checkpoint {where} does not match its config.json: " + "; ".join(problems))


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def _from_pretrained(target: str, is_local: bool, local_files_only: bool, where: str, kw: dict):
    """(model, loading info) from ``from_pretrained``, the cache first; every failure a ModelError."""
    def load(offline: bool, **extra):
        with _quiet_transformers():
            return AutoModelForCausalLM.from_pretrained(target, local_files_only=offline or is_local,
                                                        output_loading_info=True, **kw, **extra)
    try:
        try:
            return load(True)  # the cache first: no network round trip when it is there
        except OSError:
            if is_local or local_files_only:
                raise
            return load(False)
    except OSError as exc:
        if is_local:
            raise ModelError(f"model directory {target} cannot be loaded: {_first_line(exc)}") from None
        if local_files_only:
            raise ModelError(f"model {where} is not in the local Hugging Face cache and HF_HUB_OFFLINE "
                             f"forbids downloading; {_fetch_hint(target, kw['revision'])}") from None
        raise ModelError(f"model {where} is neither cached nor downloadable "
                         f"({_first_line(exc)}); {_fetch_hint(target, kw['revision'])}") from None
    except SafetensorError as exc:
        raise ModelError(f"checkpoint {where}: a weight file cannot be read ({_first_line(exc)}); it is "
                         f"truncated or corrupt, copy or download it again") from None
    except RuntimeError as exc:  # size mismatch between config and weights: load again to list them
        if "mismatched" not in str(exc):
            raise ModelError(f"checkpoint {where} does not match its config.json: {_first_line(exc)}") from None
        _check_loading_info(load(True, ignore_mismatched_sizes=True)[1], where)
        raise ModelError(f"checkpoint {where} does not match its config.json: {_first_line(exc)}") from None
    except (ValueError, KeyError) as exc:  # unknown model_type, malformed config
        raise ModelError(f"checkpoint {where} has an unusable config.json: {_first_line(exc)}") from None


def load_model(name_or_path: str, revision: str | None = None, dtype: torch.dtype = torch.float32,
               device: str | torch.device = "cpu", *, local_files_only: bool | None = None,
               cache_dir: str | None = None, load_tokenizer: bool = True):
    """Load a causal LM with eager attention, in eval mode -> (model, tokenizer or None).

    name_or_path: local HF directory, a directory of `step*/` checkpoints (pass revision), a hub
    id ("EleutherAI/pythia-70m") with revision ("step1000"), or a model held in memory (a
    transformers model, a TransformerLens TransformerBridge, an nnsight wrapper: ``models.interop``)
    or named as ``package.module:name`` (a model, or a function returning one), which is moved to
    ``device`` and ``dtype`` in place; its tokenizer is the wrapper's. The weights are converted to
    ``dtype`` whatever they are stored in (a float64 checkpoint loads as float32). local_files_only defaults
    to the HF_HUB_OFFLINE environment variable read at call time. Raises ModelError when the weights
    are not available offline (saying how to fetch them), are truncated or do not match the config,
    ConfigError for a device this machine does not have. The model remembers the directory it was
    read from, for its content fingerprint (``models.fingerprint``).
    """
    device = torch_device(device)
    held = python_object(name_or_path) if isinstance(name_or_path, (str, os.PathLike)) else name_or_path
    if held is not None:
        return _held_model(held, revision, dtype, device, load_tokenizer)
    if local_files_only is None:
        local_files_only = _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("TRANSFORMERS_OFFLINE"))
    target, hub_rev, is_local = resolve_checkpoint(name_or_path, revision)
    where = target if is_local else f"{target}" + (f" (revision {hub_rev})" if hub_rev else "")
    kw = dict(revision=hub_rev, cache_dir=cache_dir, attn_implementation="eager", dtype=dtype)
    model, info = _from_pretrained(target, is_local, local_files_only, where, kw)
    _check_loading_info(info, where)
    files = target if is_local else _cached_snapshot(target, hub_rev, cache_dir)
    if files is not None:
        remember_files(model, files)
    model = model.to(device).eval()
    tokenizer = _load_tokenizer(target, hub_rev, cache_dir, is_local) if load_tokenizer else None
    return model, tokenizer


def _held_model(obj, revision: str | None, dtype: torch.dtype, device: torch.device, load_tokenizer: bool):
    """load_model of a model object: its Hugging Face module (``models.interop``), on ``device`` in
    ``dtype``, in eval mode, with the tokenizer a wrapper carries."""
    if revision:
        raise ModelError(f"revision {revision!r} names a checkpoint of a directory or hub id, not of a model "
                         f"held in memory ({type(obj).__name__})")
    model, _ = as_hf_model(obj)
    return model.to(device=device, dtype=dtype).eval(), tokenizer_of(obj) if load_tokenizer else None


def _cached_snapshot(repo: str, revision: str | None, cache_dir: str | None) -> str | None:
    """The Hugging Face cache directory a hub model's files were read from (None when unknown)."""
    try:
        from huggingface_hub import try_to_load_from_cache  # imported on use: huggingface_hub takes seconds to import and most commands never need it

        hit = try_to_load_from_cache(repo, "config.json", revision=revision, cache_dir=cache_dir)
    except Exception:  # noqa: BLE001 - an unknown cache layout: identify the model by its tensors
        return None
    return str(Path(hit).parent) if isinstance(hit, str) else None


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


def _load_tokenizer(target: str, revision: str | None, cache_dir: str | None, is_local: bool):
    """The checkpoint's tokenizer, or None when it has none (tiny test models, bare checkpoints).

    transformers 5 builds an empty tokenizer from a directory without tokenizer files, so the
    files are checked first (local) and a near-empty vocabulary is rejected (hub).
    """
    if is_local and not any((Path(target) / f).is_file() for f in _TOKENIZER_FILES):
        return None
    try:
        with _quiet_transformers():
            tok = AutoTokenizer.from_pretrained(target, revision=revision, cache_dir=cache_dir,
                                                local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return tok if len(tok) > 16 else None
