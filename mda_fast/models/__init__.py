"""Loading checkpoints and building tiny / Pythia-shaped configs (nothing downloaded in tests);
models held in memory (transformers, TransformerLens bridge, nnsight) via ``as_hf_model``.

The names below are imported on first use (``mda_fast.lazy``): ``models.device`` and
``models.fingerprint`` do not load transformers.
"""

from mda_fast.lazy import lazy_attributes

_HOME = {name: "configs" for name in ("PYTHIA_REAL_VOCAB", "PYTHIA_SIZES", "PYTHIA_VOCAB", "make_tiny_model",
                                      "model_from_config", "pythia_config", "tiny_gpt2_config", "tiny_llama_config",
                                      "tiny_neox_config")}
_HOME.update(neox_init="init", load_model="load", resolve_checkpoint="load", as_hf_model="interop")
__all__ = list(_HOME)
__getattr__ = lazy_attributes(__name__, _HOME)
