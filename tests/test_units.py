"""Units, adapters and capture hooks against autograd and against the models' own head layout."""

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, GPT2Config, GPTNeoXConfig, LlamaConfig

from mda_fast.errors import ConfigError
from mda_fast.capture import Capture
from mda_fast.units import Unit, get_adapter
from oracles import blocks_of, per_sample_grads

CONFIGS = {
    "gpt_neox": lambda: GPTNeoXConfig(vocab_size=61, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                                      intermediate_size=48, max_position_embeddings=64, rotary_pct=0.25),
    "gpt2": lambda: GPT2Config(vocab_size=61, n_embd=32, n_layer=3, n_head=4, n_positions=64),
    "llama": lambda: LlamaConfig(vocab_size=61, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                                 num_key_value_heads=2, intermediate_size=48, max_position_embeddings=64),
}


def make_model(arch: str):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(CONFIGS[arch](), attn_implementation="eager")
    return model.double().eval()


def summed_ce(model, tokens):  # tokens [B, L] -> scalar, summed over rows and positions
    logits = model(tokens).logits
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1), reduction="sum")


@pytest.mark.parametrize("arch", list(CONFIGS))
def test_capture_per_sample_grads_equal_autograd_slices(arch):
    model = make_model(arch)
    adapter = get_adapter(model)
    units = [Unit(1, 2, "qkvo"), Unit(2, 1, "qk"), Unit(1, 3, "o")]
    blocks = blocks_of(units, adapter)
    tokens = torch.randint(0, 61, (3, 17), generator=torch.Generator().manual_seed(1))

    with Capture(model, blocks, grad_only_from_layer=True) as cap:
        summed_ce(model, tokens).backward()
    per_sample = per_sample_grads(cap)
    assert all(p.grad is None for p in model.parameters()), "no weight gradient may be computed"
    assert all(p.requires_grad for p in model.parameters()), "requires_grad flags are restored"

    for b in range(tokens.shape[0]):  # brute force: batch size 1, full autograd, slice the weight grads
        model.zero_grad(set_to_none=True)
        summed_ce(model, tokens[b : b + 1]).backward()
        for block in blocks:
            expected = adapter.slice_weight(model, block, grad=True)
            assert expected.shape == (block.out_dim, block.in_dim)
            torch.testing.assert_close(per_sample[block.name][b], expected, rtol=1e-9, atol=1e-11)


def _qkv_heads(model, arch, layer, x):
    """The model's own per-head q, k, v for input x [B, T, d], following each HF implementation."""
    cfg, B, T = model.config, x.shape[0], x.shape[1]
    H = cfg.num_attention_heads
    hs = cfg.hidden_size // H
    if arch == "gpt_neox":
        qkv = model.gpt_neox.layers[layer].attention.query_key_value(x).view(B, T, H, 3 * hs)
        return qkv[..., :hs], qkv[..., hs : 2 * hs], qkv[..., 2 * hs :]
    if arch == "gpt2":
        q, k, v = model.transformer.h[layer].attn.c_attn(x).split(cfg.hidden_size, dim=2)
        return (t.view(B, T, H, hs) for t in (q, k, v))
    attn = model.model.layers[layer].self_attn
    rep = H // cfg.num_key_value_heads
    q = attn.q_proj(x).view(B, T, H, hs)
    k = attn.k_proj(x).view(B, T, -1, hs).repeat_interleave(rep, dim=2)
    v = attn.v_proj(x).view(B, T, -1, hs).repeat_interleave(rep, dim=2)
    return q, k, v


@pytest.mark.parametrize("arch", list(CONFIGS))
def test_perturbing_a_block_moves_only_its_head(arch):
    model = make_model(arch)
    adapter = get_adapter(model)
    layer, head = 1, 2
    x = torch.randn(2, 5, model.config.hidden_size, dtype=torch.float64)
    before = [t.detach().clone() for t in _qkv_heads(model, arch, layer, x)]
    state = {k: v.clone() for k, v in model.state_dict().items()}

    block = adapter.block(layer, head, "qk")
    adapter.add_to_weight(model, block, torch.ones(block.out_dim, block.in_dim, dtype=torch.float64))
    after = [t.detach() for t in _qkv_heads(model, arch, layer, x)]
    kv_group = head // (4 // 2) if arch == "llama" else None
    for which, (b, a) in enumerate(zip(before, after)):
        changed = (b - a).abs().amax(dim=(0, 1, 3)) > 0  # [H]: which heads' q/k/v moved
        if which == 2:
            assert not changed.any(), "values must not move for a qk block"
        elif which == 0:
            assert changed.tolist() == [h == head for h in range(4)]
        else:  # k: GQA shares one key head across a group of query heads
            expected = [(h // 2 == kv_group) if arch == "llama" else (h == head) for h in range(4)]
            assert changed.tolist() == expected
    moved = [k for k, v in model.state_dict().items() if not torch.equal(v, state[k])]
    assert len(moved) == len({p.module for p in block.pieces}) and all(k.endswith("weight") for k in moved)


@pytest.mark.parametrize("arch", list(CONFIGS))
def test_o_block_selects_the_heads_columns(arch):
    model = make_model(arch)
    adapter = get_adapter(model)
    block = adapter.block(0, 3, "o")
    w = adapter.slice_weight(model, block)
    full = model.get_submodule(block.pieces[0].module).weight
    full = full.t() if block.pieces[0].transposed else full  # [d_out, d_in]
    hs = model.config.hidden_size // 4
    torch.testing.assert_close(w, full[:, 3 * hs : 4 * hs])


def test_out_of_range_and_bad_mode_are_clear_errors():
    adapter = get_adapter(make_model("gpt_neox"))
    with pytest.raises(ConfigError, match="layer 3 is out of range"):
        Unit(3, 0).blocks(adapter)
    with pytest.raises(ConfigError, match="head 4 is out of range"):
        Unit(0, 4).blocks(adapter)
    with pytest.raises(ConfigError, match="unknown block mode"):
        Unit(0, 0, "qv").blocks(adapter)
    with pytest.raises(ConfigError, match="cannot parse unit"):
        Unit.parse("layer one")
    assert Unit.parse("L1.H3.qkvo") == Unit(1, 3, "qkvo") and Unit.parse("2:1") == Unit(2, 1, "qk")


def test_block_not_reached_by_the_loss_has_zero_gradient():
    model = make_model("gpt_neox")
    adapter = get_adapter(model)
    blocks = adapter.block(1, 0, "qk"), adapter.block(1, 0, "o")
    tokens = torch.randint(0, 61, (2, 9), generator=torch.Generator().manual_seed(3))
    with Capture(model, blocks) as cap:
        out = model(tokens, output_attentions=True)
        out.attentions[1][:, 0].diagonal(offset=-1, dim1=-2, dim2=-1).sum().backward()  # reads the pattern only
    g = cap.g
    assert g["L1.H0.o"].shape == (2, 9, 32) and not g["L1.H0.o"].any()
    assert g["L1.H0.qk"].abs().sum() > 0


LOWEST_LAYER = {  # arch -> (input LayerNorm, MLP) of layer 1, the lowest layer of the units below
    "gpt_neox": lambda m: (m.gpt_neox.layers[1].input_layernorm, m.gpt_neox.layers[1].mlp),
    "gpt2": lambda m: (m.transformer.h[1].ln_1, m.transformer.h[1].mlp),
    "llama": lambda m: (m.model.layers[1].input_layernorm, m.model.layers[1].mlp),
}


@pytest.mark.parametrize("arch", list(CONFIGS))
def test_backward_stops_at_the_captured_outputs(arch):
    """No gradient below the captured modules: the lowest layer's input LayerNorm gets no backward,
    nor (parallel residual: Pythia) its MLP branch; the captured gradients stay those of autograd."""
    model = make_model(arch)
    blocks = blocks_of([Unit(1, 2, "qkvo"), Unit(2, 1, "qk")], get_adapter(model))
    tokens = torch.randint(0, 61, (2, 9), generator=torch.Generator().manual_seed(2))
    ln, mlp = LOWEST_LAYER[arch](model)
    seen = []
    hooks = [m.register_full_backward_hook(lambda mod, gi, go, n=n: seen.append(n)) for n, m in (("ln", ln), ("mlp", mlp))]
    with Capture(model, blocks, grad_only_from_layer=True) as cap:
        summed_ce(model, tokens).backward()
        g = cap.g
    for h in hooks:
        h.remove()
    assert "ln" not in seen
    if arch == "gpt_neox" and model.config.use_parallel_residual:
        assert "mlp" not in seen
    with Capture(model, blocks, grad_only_from_layer=False) as cap:  # the full backward, as autograd
        summed_ce(model, tokens).backward()
        for name, x in cap.g.items():
            torch.testing.assert_close(g[name], x, rtol=1e-12, atol=1e-14)
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("arch", list(CONFIGS))
def test_backward_passes_of_one_forward_keep_their_gradients_apart(arch):
    """Two losses of one forward (data and sampled labels in the shared pass): each backward's
    captured gradients equal a capture of that loss alone (nothing accumulates between them)."""
    model = make_model(arch)
    blocks = blocks_of([Unit(1, 2, "qkvo"), Unit(2, 1, "o")], get_adapter(model))
    tokens = torch.randint(0, 61, (2, 9), generator=torch.Generator().manual_seed(3))
    losses = (lambda m: summed_ce(m, tokens), lambda m: m(tokens).logits[..., 5].sum())
    with Capture(model, blocks, grad_only_from_layer=True) as cap:
        out = model(tokens).logits
        both = [F.cross_entropy(out[:, :-1].reshape(-1, 61), tokens[:, 1:].reshape(-1), reduction="sum"),
                out[..., 5].sum()]
        together = []
        for i, loss in enumerate(both):
            loss.backward(retain_graph=i == 0)
            together.append(cap.g)
    for loss_fn, got in zip(losses, together):
        with Capture(model, blocks, grad_only_from_layer=True) as cap:
            loss_fn(model).backward()
            for name, x in cap.g.items():
                torch.testing.assert_close(got[name], x, rtol=1e-12, atol=1e-14)
