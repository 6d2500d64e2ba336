"""Model loading: local round trips, Pythia-style step directories, offline hub errors, mismatches."""

import json

import pytest
import torch

from mda_fast.errors import ModelError
from mda_fast.models import (
    PYTHIA_SIZES,
    load_model,
    make_tiny_model,
    pythia_config,
    tiny_llama_config,
    tiny_neox_config,
)


@pytest.mark.parametrize("arch", ["neox", "gpt2", "llama"])
def test_round_trip_same_logits_eager(tmp_path, arch):
    model = make_tiny_model(arch, seed=3)
    model.save_pretrained(tmp_path)
    loaded, tok = load_model(str(tmp_path))
    assert tok is None  # tiny checkpoints carry no tokenizer
    assert loaded.config._attn_implementation == "eager"
    assert not loaded.training
    x = torch.randint(2, 256, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = model(x).logits, loaded(x, output_attentions=True)
    torch.testing.assert_close(a, b.logits)
    assert b.attentions[0].shape == (2, 4, 12, 12)


def test_tiny_configs_have_the_promised_shapes():
    c = tiny_neox_config()
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.vocab_size) == (2, 64, 4, 256)
    assert c.rope_parameters["partial_rotary_factor"] == 0.25 and c.use_parallel_residual
    lc = tiny_llama_config()
    assert lc.num_key_value_heads < lc.num_attention_heads
    assert tiny_neox_config(num_hidden_layers=3).num_hidden_layers == 3


def test_pythia_shapes():
    c = pythia_config("70m")
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size) == (6, 512, 8, 2048)
    assert c.vocab_size == 50304
    # d_head * rotary_pct gives the published rotary dims (mda-reference §2)
    rotary = {"14m": 8, "70m": 16, "1b": 64, "2.8b": 20, "12b": 32}
    for size, dims in rotary.items():
        s = PYTHIA_SIZES[size]
        assert int(s["d_model"] // s["heads"] * 0.25) == dims


def test_step_subdirectory_revision(tmp_path):
    for step, seed in (("step0", 0), ("step10", 1)):
        make_tiny_model("neox", seed=seed).save_pretrained(tmp_path / step)
    m0, _ = load_model(str(tmp_path), revision="step0")
    m1, _ = load_model(str(tmp_path), revision="step10")
    assert not torch.equal(m0.get_output_embeddings().weight, m1.get_output_embeddings().weight)
    with pytest.raises(ModelError, match="step99.*step0, step10"):
        load_model(str(tmp_path), revision="step99")


def test_missing_directory_is_model_error(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_model(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        load_model(str(tmp_path / "empty"))


def test_uncached_hub_id_offline_says_how_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as info:
        load_model("EleutherAI/pythia-70m", revision="step1000", cache_dir=str(tmp_path))
    msg = str(info.value)
    assert "download EleutherAI/pythia-70m --revision step1000" in msg
    assert "HF_HUB_OFFLINE" in msg and "\n" not in msg


@pytest.mark.parametrize("change", [{"num_hidden_layers": 3}, {"intermediate_size": 128}])
def test_config_weights_mismatch(tmp_path, change):
    make_tiny_model("neox").save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg.update(change)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="does not match its config"):
        load_model(str(tmp_path))


def test_harmless_legacy_buffers_load_but_unknown_weights_fail(tmp_path):
    from safetensors.torch import load_file, save_file

    make_tiny_model("neox", seed=1).save_pretrained(tmp_path)
    f = tmp_path / "model.safetensors"
    sd = load_file(f)
    sd["gpt_neox.layers.0.attention.rotary_emb.inv_freq"] = torch.zeros(2)  # old Pythia checkpoints
    sd["gpt_neox.layers.0.attention.masked_bias"] = torch.zeros(1)
    save_file(sd, f, metadata={"format": "pt"})
    load_model(str(tmp_path))
    sd["gpt_neox.layers.0.attention.extra.weight"] = torch.zeros(2)
    save_file(sd, f, metadata={"format": "pt"})
    with pytest.raises(ModelError, match="unknown to the config.*extra.weight"):
        load_model(str(tmp_path))


def test_local_tokenizer_is_returned(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<|endoftext|>", "<|padding|>"] + [f"w{i}" for i in range(30)])}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<|padding|>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>").save_pretrained(tmp_path)
    make_tiny_model("neox").save_pretrained(tmp_path)
    _, tok = load_model(str(tmp_path))
    assert tok is not None and tok("w3 w7")["input_ids"] == [5, 9]


def test_cli_offline_hub_error_is_one_line(tmp_path, monkeypatch, capsys):
    from mda_fast.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # read by load_model at call time
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    rc = main(["heads", "--model", "mda-fast-tests/never-cached", "--revision", "step1000"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "hf download mda-fast-tests/never-cached --revision step1000" in err


def test_neox_init_uses_small_and_wang_stds():
    import math

    from mda_fast.models import make_tiny_model, neox_init
    from mda_fast.errors import ConfigError

    model = make_tiny_model("neox", hidden_size=128, intermediate_size=512, num_hidden_layers=2)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.ndim < 2}
    neox_init(model, seed=0)
    d, L = 128, 2
    small, wang = math.sqrt(2 / (5 * d)), 2 / (L * math.sqrt(d))
    for name, p in model.named_parameters():
        if p.ndim < 2:
            assert torch.equal(p, before[name]), name           # biases and LayerNorms untouched
            continue
        want = wang if name.endswith(("attention.dense.weight", "mlp.dense_4h_to_h.weight")) else small
        assert abs(p.std().item() - want) < 0.1 * want, name
    again = neox_init(make_tiny_model("neox", hidden_size=128, intermediate_size=512, num_hidden_layers=2), seed=0)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters()))
    with pytest.raises(ConfigError):
        neox_init(make_tiny_model("gpt2"))
