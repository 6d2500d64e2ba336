"""Loading checkpoints and building tiny / Pythia-shaped configs (nothing downloaded in tests)."""

from mda_fast.models.configs import (
    PYTHIA_REAL_VOCAB,
    PYTHIA_SIZES,
    PYTHIA_VOCAB,
    make_tiny_model,
    model_from_config,
    pythia_config,
    tiny_gpt2_config,
    tiny_llama_config,
    tiny_neox_config,
)
from mda_fast.models.init import neox_init
from mda_fast.models.load import load_model, resolve_checkpoint

__all__ = [
    "load_model", "resolve_checkpoint", "neox_init", "make_tiny_model", "model_from_config", "pythia_config",
    "tiny_neox_config", "tiny_gpt2_config", "tiny_llama_config", "PYTHIA_SIZES", "PYTHIA_VOCAB",
    "PYTHIA_REAL_VOCAB",
]
