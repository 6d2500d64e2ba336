"""Models as users hold them -> the Hugging Face module mda-fast attributes.

    hf, what = as_hf_model(obj)   # obj: a transformers PreTrainedModel, a TransformerLens 4
                                  # TransformerBridge, or an nnsight wrapper (NNsight, LanguageModel)

- **transformers**: the model itself, as it is (head scores switch it to eager attention for
  their pass and back; ``load_model`` and TransformerLens load eager, which checkpoint-equal
  attribution scores need too).
- **TransformerBridge** (TransformerLens 4 removed HookedTransformer): the bridge replaces the
  modules of the Hugging Face model it wraps by its own components (the original kept as each
  component's ``_original_component``) and adds tensors of its own (the split q/k/v of a joint
  QKV), so its module tree and state dict no longer have Hugging Face names. The model returned
  is a fresh module tree of the wrapped model's class, built on the meta device, whose every
  parameter and buffer *is* the wrapped model's (the same tensor objects, found by their Hugging
  Face name through the components: nothing is copied). A bridge whose weights were processed
  (``enable_compatibility_mode()`` without ``no_processing=True``, or ``process_weights()``:
  folded LayerNorms, centred writing weights, folded value biases) is refused: its forward runs
  on tensors that are not the model's parameters, and gradients with respect to a folded,
  centred parametrisation are not those of the model's own (they cannot be mapped back exactly).
- **nnsight**: the wrapped module (``envoy._module``; it may itself be a bridge). A wrapper with
  edits (``model.edit()``) is refused: edits act only inside a trace, so the scores would be those
  of the unedited model; an undispatched wrapper (weights still on the meta device) is refused.

A plain torch module that carries its own ``config`` (the Hugging Face calling convention) is
taken as it is; anything else raises ModelError. The CLI and run configs name such a model
``package.module:name`` (a model, or a function returning one: ``python_object``). A model loaded
by ``load_model`` keeps its checkpoint identity (``models.fingerprint``) through a bridge or
wrapper; any other in-memory model is identified by its tensors' content.

TransformerLens and nnsight are optional (extra ``interop``) and are never imported here: an
object of theirs exists only once its package is loaded, so its classes are looked up in
``sys.modules``. (``import transformer_lens`` adds 1.6 s to torch + transformers here and loads
pandas and datasets; nnsight 0.14 s.)
"""

from __future__ import annotations

import copy
import importlib
import re
import sys
from pathlib import Path

import torch

from mda_fast.errors import ModelError

_WRAPPED = "_original_component"  # where a TransformerLens component keeps the module it replaced


def _loaded(module: str, name: str):
    """Class ``module.name`` when that package is already imported, else None (never imports)."""
    return getattr(sys.modules.get(module), name, None)


def _is(obj, module: str, name: str) -> bool:
    cls = _loaded(module, name)
    return cls is not None and isinstance(obj, cls)


def as_hf_model(obj) -> tuple[torch.nn.Module, str]:
    """(Hugging Face model to attribute, a description of what ``obj`` was); see the module doc."""
    if _is(obj, "nnsight", "Envoy"):
        inner, outer = _from_nnsight(obj)
        model, what = as_hf_model(inner)
        return model, f"{outer} around {what}"
    if _is(obj, "transformer_lens.model_bridge", "BridgeCore"):
        return _from_bridge(obj)
    if _is(obj, "transformers", "PreTrainedModel"):
        return _from_transformers(obj)
    if isinstance(obj, torch.nn.Module) and "config" in vars(obj):  # a module shaped like one (tests)
        return obj, f"torch {type(obj).__name__}"
    raise ModelError(f"cannot attribute a {type(obj).__module__}.{type(obj).__qualname__}: pass a checkpoint "
                     f"directory or hub id, a transformers PreTrainedModel, a TransformerLens TransformerBridge "
                     f"or an nnsight wrapper (NNsight, LanguageModel) of one")


_PYTHON_SPEC = re.compile(r"^([A-Za-z_][\w.]*):([A-Za-z_]\w*)$")


def python_object(spec: str):
    """The model a ``package.module:name`` spec names (``name`` called when it is a function: a
    factory that loads or boots the model), or None when ``spec`` is not written so or is a path
    that exists. How the CLI and run configs take a bridge or wrapper; ModelError when the module
    or name cannot be found."""
    m = _PYTHON_SPEC.match(str(spec))
    if m is None or Path(spec).exists():
        return None
    try:
        obj = getattr(importlib.import_module(m.group(1)), m.group(2))
    except (ImportError, AttributeError) as exc:
        raise ModelError(f"model {spec}: cannot import {m.group(2)} from module {m.group(1)} ({exc}); "
                         f"a model is a checkpoint directory, a hub id or package.module:name") from None
    return obj() if callable(obj) and not isinstance(obj, torch.nn.Module) and not _is_wrapper(obj) else obj


def _is_wrapper(obj) -> bool:
    return _is(obj, "nnsight", "Envoy") or _is(obj, "transformer_lens.model_bridge", "BridgeCore")


def tokenizer_of(obj):
    """The tokenizer a bridge or an nnsight wrapper carries (None for a bare model or none set)."""
    return getattr(obj, "tokenizer", None) if _is_wrapper(obj) else None


def _from_transformers(model) -> tuple[torch.nn.Module, str]:
    _check_materialized(model, type(model).__name__)
    return model, f"transformers {type(model).__name__}"


def _from_nnsight(envoy) -> tuple[torch.nn.Module, str]:
    kind = f"nnsight {type(envoy).__name__}"
    if getattr(envoy, "_edits", None):
        raise ModelError(f"the {kind} carries edits (model.edit()): they act only inside an nnsight trace, and "
                         f"mda-fast runs the module itself, so the scores would be those of the unedited model; "
                         f"pass the unedited wrapper (or call model.clear_edits() first)")
    if getattr(envoy, "dispatched", True) is False:
        raise ModelError(f"the {kind} is not dispatched (its weights are still on the meta device): "
                         f"call model.dispatch() first, or build it with dispatch=True")
    return envoy._module, kind


def _from_bridge(bridge) -> tuple[torch.nn.Module, str]:
    kind = f"TransformerLens {type(bridge).__name__}"
    try:
        tree = bridge.original_model
    except AttributeError:
        raise ModelError(f"the {kind} has no local torch model (a vLLM/Inspect driver): there are no "
                         f"weights here to attribute") from None
    if not hasattr(bridge, "_weights_processed"):
        raise ModelError(f"the {kind} does not say whether its weights were processed (an unknown "
                         f"TransformerLens version); pass bridge.original_model's checkpoint instead")
    if bridge._weights_processed:
        raise ModelError(f"the {kind}'s weights were processed by enable_compatibility_mode() or "
                         f"process_weights() (folded LayerNorm, centred writing weights, folded value biases): "
                         f"its forward no longer runs on the model's own parameters, and attribution to a "
                         f"folded parametrisation is not attribution to the model; attribute the model "
                         f"before processing (a fresh TransformerBridge.boot_transformers(...), or "
                         f"enable_compatibility_mode(no_processing=True)), or its checkpoint")
    tree = _unwrap(tree)
    if not _is(tree, "transformers", "PreTrainedModel"):
        raise ModelError(f"the {kind} wraps a {type(tree).__name__}, not a Hugging Face transformers model "
                         f"(a TransformerLens-native model has no Hugging Face weights to attribute)")
    model = hf_view(tree, _unwrap)
    return model, f"{kind} around transformers {type(model).__name__}"


def _unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The Hugging Face module a TransformerLens component stands in for (itself when none)."""
    while _WRAPPED in module._modules:
        module = module._modules[_WRAPPED]
    return module


def _check_materialized(model, what: str) -> None:
    meta = next((n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta), None)
    if meta is not None:
        raise ModelError(f"{what}: weight {meta} is on the meta device (not loaded, or offloaded by a "
                         f"device_map); load the model's weights onto one device first")


def hf_view(tree: torch.nn.Module, unwrap=_unwrap) -> torch.nn.Module:
    """A fresh Hugging Face module tree of ``tree``'s class and config whose parameters and buffers
    are ``tree``'s own tensors, reached through ``unwrap`` at every step of their Hugging Face
    name. ModelError when one is missing or has another shape or module class."""
    config = copy.deepcopy(tree.config)
    with torch.device("meta"):
        model = type(tree)._from_config(config, attn_implementation="eager")
    for path, module in model.named_modules(remove_duplicate=False):
        _graft(module, _find(tree, path, unwrap), path)
    _check_materialized(model, f"the model wrapped in {type(tree).__name__}")
    if "mda_checkpoint" in tree.__dict__:  # the same tensors: the checkpoint load_model read them from
        model.mda_checkpoint = tree.mda_checkpoint
    return model.train(tree.training)


def _find(tree, path: str, unwrap) -> torch.nn.Module:
    module = unwrap(tree)
    for part in path.split(".") if path else ():
        child = module._modules.get(part)
        if child is None:
            raise ModelError(f"the wrapped model has no module {path!r} (its components do not keep the "
                             f"Hugging Face module tree)")
        module = unwrap(child)
    return module


def _graft(module: torch.nn.Module, source: torch.nn.Module, path: str) -> None:
    """Point ``module``'s parameters, buffers and tensor attributes at ``source``'s (same objects)."""
    if type(module) is not type(source):
        raise ModelError(f"the wrapped model's module {path or '(root)'} is a {type(source).__name__}, "
                         f"not the {type(module).__name__} its config builds")
    for slots, have in ((module._parameters, source._parameters), (module._buffers, source._buffers)):
        for name, t in slots.items():
            got = have.get(name)
            if t is None:  # an absent bias, say
                continue
            if got is None or got.shape != t.shape:
                raise ModelError(f"the wrapped model's {path}.{name} is {_shape(got)}, its config builds {_shape(t)}")
            slots[name] = got
    for name, value in list(vars(module).items()):  # tensors kept as plain attributes (rotary caches)
        if isinstance(value, torch.Tensor) and value.is_meta and isinstance(vars(source).get(name), torch.Tensor):
            setattr(module, name, vars(source)[name])


def _shape(t) -> str:
    return "absent" if t is None else f"of shape {list(t.shape)}"


__all__ = ["as_hf_model", "hf_view", "python_object", "tokenizer_of"]
