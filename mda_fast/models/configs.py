"""Tiny and Pythia-shaped model configs, built locally (nothing is downloaded).

Tiny configs are for tests: small enough to run a forward/backward in milliseconds on a CPU,
but with the structure that matters (GPT-NeoX partial rotary + parallel residual, GPT-2 Conv1D,
Llama grouped-query attention). Dropout is zero everywhere so train/eval agree.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPTNeoXConfig, LlamaConfig, PretrainedConfig

from mda_fast.errors import ConfigError

# Pythia sizes (mda-reference §2): layers, d_model, heads. d_head = d_model / heads,
# intermediate 4 * d_model, rotary_pct 0.25, vocab 50304, context 2048.
PYTHIA_SIZES: dict[str, dict[str, int]] = {
    "14m": dict(layers=6, d_model=128, heads=4),
    "31m": dict(layers=6, d_model=256, heads=8),
    "70m": dict(layers=6, d_model=512, heads=8),
    "160m": dict(layers=12, d_model=768, heads=12),
    "410m": dict(layers=24, d_model=1024, heads=16),
    "1b": dict(layers=16, d_model=2048, heads=8),
    "1.4b": dict(layers=24, d_model=2048, heads=16),
    "2.8b": dict(layers=32, d_model=2560, heads=32),
    "6.9b": dict(layers=32, d_model=4096, heads=32),
    "12b": dict(layers=36, d_model=5120, heads=40),
}
PYTHIA_VOCAB = 50304       # HF vocab_size (embedding rows)
PYTHIA_REAL_VOCAB = 50277  # tokenizer's real tokens; sample probe tokens below this


def tiny_neox_config(**overrides) -> GPTNeoXConfig:
    """GPT-NeoX: 2 layers, d_model 64, 4 heads (d_head 16, 4 rotary dims), vocab 256."""
    kw = dict(
        vocab_size=256, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=256, rotary_pct=0.25, rotary_emb_base=10000, max_position_embeddings=256,
        use_parallel_residual=True, hidden_act="gelu", attention_dropout=0.0, hidden_dropout=0.0,
        tie_word_embeddings=False, bos_token_id=0, eos_token_id=0, use_cache=False,
    )
    kw.update(overrides)
    return GPTNeoXConfig(**kw)


def tiny_gpt2_config(**overrides) -> GPT2Config:
    """GPT-2: 2 layers, d_model 64, 4 heads, vocab 256, context 256, no dropout."""
    kw = dict(
        vocab_size=256, n_embd=64, n_layer=2, n_head=4, n_positions=256,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
        use_cache=False,
    )
    kw.update(overrides)
    return GPT2Config(**kw)


def tiny_llama_config(**overrides) -> LlamaConfig:
    """Llama: 2 layers, d_model 64, 4 query heads sharing 2 key/value heads (GQA), vocab 256."""
    kw = dict(
        vocab_size=256, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=128, max_position_embeddings=256,
        attention_dropout=0.0, bos_token_id=0, eos_token_id=0, tie_word_embeddings=False,
        use_cache=False,
    )
    kw.update(overrides)
    return LlamaConfig(**kw)


def pythia_config(size: str, **overrides) -> GPTNeoXConfig:
    """Config with the exact shape of Pythia-`size` (e.g. "70m"); weights are not implied."""
    if size not in PYTHIA_SIZES:
        raise ConfigError(f"unknown Pythia size {size!r}; choose one of {', '.join(PYTHIA_SIZES)}")
    s = PYTHIA_SIZES[size]
    kw = dict(
        vocab_size=PYTHIA_VOCAB, hidden_size=s["d_model"], num_hidden_layers=s["layers"],
        num_attention_heads=s["heads"], intermediate_size=4 * s["d_model"],
        max_position_embeddings=2048,
    )
    kw.update(overrides)
    return tiny_neox_config(**kw)


_TINY = {"neox": tiny_neox_config, "gpt_neox": tiny_neox_config, "gpt2": tiny_gpt2_config,
         "llama": tiny_llama_config}


def model_from_config(config: PretrainedConfig, seed: int = 0,
                      dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """Randomly initialised causal LM for `config` (eager attention, eval mode), seeded."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=dtype)
    return model.eval()


def make_tiny_model(arch: str = "neox", seed: int = 0, **overrides) -> torch.nn.Module:
    """Tiny random model; `arch` is "neox", "gpt2", "llama" or a Pythia size like "pythia-70m"."""
    if arch.startswith("pythia-"):
        return model_from_config(pythia_config(arch[len("pythia-"):], **overrides), seed)
    if arch not in _TINY:
        raise ConfigError(f"unknown tiny architecture {arch!r}; choose neox, gpt2, llama or pythia-<size>")
    return model_from_config(_TINY[arch](**overrides), seed)
