"""Whole-module units (a linear module's [W | b]): the parser, the adapters' blocks and weight views,
and the scores against a from-scratch float64 EK-FAC (tests/oracles.module_ekfac_scores: what
kronfluence 1.0.1 computes with the empirical Fisher; benchmarks/bench_peers.py checks kronfluence
itself against mda-fast where it is installed).
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mda_fast.attribution import MDA, Settings
from mda_fast.attribution.index.spec import IndexSpec
from mda_fast.data import ArraySource
from mda_fast.errors import ConfigError
from mda_fast.models import make_tiny_model
from mda_fast.probes import CopyTargetProbe
from mda_fast.capture import Capture
from mda_fast.units import ModuleUnit, Unit, get_adapter
from oracles import module_ekfac_scores
from test_attr_bruteforce import one_thread  # noqa: F401  (autouse fixture: one thread)

# unit -> (module path in the layer, bias in the block); layer 1 of the tiny models
UNITS = {"neox": ["L1.attention.query_key_value", "gpt_neox.layers.1.attention.dense", "L1.mlp.dense_4h_to_h.nobias"],
         "gpt2": ["L1.attn.c_attn", "L1.attn.c_proj", "transformer.h.1.mlp.c_fc"],
         "llama": ["L1.self_attn.k_proj", "model.layers.1.mlp.gate_proj", "L1.self_attn.o_proj"]}  # GQA k; no MLP bias



def tiny(arch):
    kw = {"neox": dict(hidden_size=32, intermediate_size=64), "gpt2": dict(n_embd=32, n_inner=64),
          "llama": dict(hidden_size=32, intermediate_size=64, attention_bias=True)}[arch]
    return make_tiny_model(arch, seed=1, **kw).eval()


def window(n=12, L=33, vocab=256):
    rows = np.random.default_rng(0).integers(0, vocab, size=(n, L))
    rows[::3, L // 2 :] = rows[::3, : L - L // 2]  # some repeated structure
    return ArraySource(rows, name="toy", row_id_offset=1000, vocab_size=vocab)


def test_parse_module_units():
    u = Unit.parse("L3.attention.dense")
    assert u == ModuleUnit(3, "attention.dense", True) and u.name == "L3.attention.dense" and u.head is None
    assert Unit.parse("gpt_neox.layers.3.attention.dense") == u  # the module path: the same unit
    assert Unit.parse("gpt_neox.layers.3.attention.dense").name == "L3.attention.dense"
    nb = Unit.parse("L3.mlp.dense_4h_to_h.nobias")
    assert nb == ModuleUnit(3, "mlp.dense_4h_to_h", False) and nb.name == "L3.mlp.dense_4h_to_h.nobias"
    assert Unit.parse("model.layers.0.self_attn.q_proj") == ModuleUnit(0, "self_attn.q_proj")
    assert Unit.parse("L1.H3.qkvo") == Unit(1, 3, "qkvo") and Unit.parse("2:1") == Unit(2, 1, "qk")
    assert Unit.parse("L1.H3") == Unit(1, 3, "qk")
    for bad in ("layer one", "L1", "3.attention.dense", "L1.attention.dense!"):
        with pytest.raises(ConfigError, match="cannot parse unit"):
            Unit.parse(bad)


def test_asking_for_the_bias_of_a_biasless_module_is_refused(tmp_path):
    """``.bias``: the bias asked for explicitly; a module without one is one clear error, nothing written."""
    assert Unit.parse("L1.attention.dense.bias") == Unit.parse("L1.attention.dense")
    llama = tiny("llama")
    adapter = get_adapter(llama)
    assert Unit.parse("L1.self_attn.k_proj.bias").blocks(adapter)[0].bias     # has one: the default block
    with pytest.raises(ConfigError, match=r"unit L1.mlp.gate_proj.bias: .*mlp.gate_proj has no bias"):
        Unit.parse("L1.mlp.gate_proj.bias").blocks(adapter)
    llama.save_pretrained(tmp_path / "ckpt")
    np.save(tmp_path / "rows.npy", np.random.default_rng(0).integers(2, 100, size=(16, 9)))
    from mda_fast.cli import main

    out = tmp_path / "out"
    assert main(["fit", "--model", str(tmp_path / "ckpt"), "--data", str(tmp_path / "rows.npy"), "--rows-per-step", "4",
                 "--units", "L1.mlp.gate_proj.bias", "--probes", "copy_target", "--out", str(out)]) == 2
    assert not (out / "factors").exists()


@pytest.mark.parametrize("arch", ["neox", "gpt2", "llama"])
def test_module_blocks_shapes_and_errors(arch):
    model = tiny(arch)
    adapter = get_adapter(model)
    blocks = [b for u in UNITS[arch] for b in Unit.parse(u).blocks(adapter)]
    d, f = 32, 64
    want = {"neox": [(3 * d, d + 1), (d, d + 1), (d, f)], "gpt2": [(3 * d, d + 1), (d, d + 1), (f, d + 1)],
            "llama": [(d // 2, d + 1), (f, d), (d, d + 1)]}[arch]  # k_proj: 2 of 4 heads (GQA)
    assert [(b.out_dim, b.in_dim) for b in blocks] == want
    assert [b.bias for b in blocks] == {"neox": [True, True, False], "gpt2": [True] * 3, "llama": [True, False, True]}[arch]
    with pytest.raises(ConfigError, match="has no linear module .*layers.1.attention.nope|has no linear module .*h.1"):
        Unit.parse("L1.attention.nope").blocks(adapter)
    with pytest.raises(ConfigError, match="layer 9 is out of range"):
        Unit.parse("L9.attention.dense").blocks(adapter)
    other = "transformer.h.1.attn.c_proj" if arch == "neox" else "gpt_neox.layers.1.attention.dense"
    with pytest.raises(ConfigError, match="this model's layers are"):
        Unit.parse(other).blocks(adapter)


@pytest.mark.parametrize("arch", ["neox", "gpt2", "llama"])
def test_captured_gradient_and_weight_views_include_the_bias(arch):
    """G = sum_t g_t [a_t; 1]^T equals the autograd [W.grad | b.grad]; add_to_weight writes [W | b]."""
    model = tiny(arch)
    adapter = get_adapter(model)
    blocks = [b for u in UNITS[arch] for b in Unit.parse(u).blocks(adapter)]
    tok = torch.as_tensor(window().read(np.arange(3)))
    with Capture(model, blocks, grad_only_from_layer=False, adapter=adapter) as cap:
        logits = model(input_ids=tok[:, :-1]).logits
        F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tok[:, 1:].reshape(-1), reduction="sum").backward()
    for b in blocks:
        G = torch.einsum("bto,bti->oi", cap.g[b.name].double(), cap.a[b.name].double())
        W = adapter.slice_weight(model, b, grad=True).double()
        assert W.shape == (b.out_dim, b.in_dim)
        assert (G - W).abs().max() <= 1e-5 * W.abs().max()
        before = adapter.slice_weight(model, b).detach().clone()
        delta = torch.randn(b.out_dim, b.in_dim)
        adapter.add_to_weight(model, b, delta)
        assert torch.allclose(adapter.slice_weight(model, b).detach(), before + delta, atol=1e-6)
        if b.bias:  # the last column is the module's bias
            assert torch.equal(adapter.slice_weight(model, b)[:, -1], model.get_submodule(b.pieces[0].module).bias)


def reference(model, arch, src, probe, probe_data) -> np.ndarray:
    """module_ekfac_scores of UNITS[arch] [N, 3]."""
    adapter = get_adapter(model)
    blocks = [Unit.parse(u).blocks(adapter)[0] for u in UNITS[arch]]
    mods = [(model.get_submodule(b.pieces[0].module), b.bias) for b in blocks]
    f = lambda m: probe(m(input_ids=probe_data, output_attentions=False), probe_data) / len(probe_data)  # noqa: E731
    return module_ekfac_scores(model, mods, torch.as_tensor(src.read(np.arange(len(src)))), f).numpy()


@pytest.mark.parametrize("arch", ["neox", "gpt2", "llama"])
def test_module_scores_equal_float64_reference_ekfac(arch, tmp_path):
    """Empirical Fisher on the whole window, damping 0.1 x mean Lambda with no floor (kronfluence has
    none; llama's k_proj here has 0.1 x mean Lambda < the default floor 1e-5): both mda-fast paths
    (fit + score, and the whole-window pass) equal the from-scratch EK-FAC on [W | b] to 1e-4 relative."""
    model, src = tiny(arch), window()
    s = Settings(fit_fraction=1.0, fisher="empirical", damping_floor=1e-30, batch_size=5, progress=False, probe_n=6,
                 probe_seq_len=16)
    mda = MDA(model, UNITS[arch], [CopyTargetProbe()], settings=s)
    ref = reference(model, arch, src, CopyTargetProbe(), mda.probe_data["copy_target"])
    two_pass = mda.fit(src).score(src, str(tmp_path / "a")).scores
    whole = MDA(model, UNITS[arch], [CopyTargetProbe()], settings=s).fit_and_score(src, str(tmp_path / "b")).scores
    for got in (two_pass, whole):
        err = np.abs(got - ref).max() / np.abs(ref).max()
        print(f"{arch}: max relative difference to the float64 reference EK-FAC {err:.2e}")
        assert err <= 1e-4


def test_module_index_equals_scores(tmp_path):
    """The index of whole-module units (bias column in its basis and in the probe side) equals scores."""
    model, src = tiny("neox"), window()
    s = Settings(fit_fraction=1.0, fisher="empirical", batch_size=5, progress=False, probe_n=6, probe_seq_len=16)
    mda = MDA(model, UNITS["neox"], [CopyTargetProbe()], settings=s)
    scores = mda.fit(src).score(src, str(tmp_path / "s")).scores
    idx = mda.index(src, str(tmp_path / "i"), IndexSpec(k="full", dtype="float32"), units="auto")
    got = idx.query([CopyTargetProbe()]).scores
    assert np.abs(got - scores).max() <= 1e-4 * np.abs(scores).max()


def test_head_only_commands_refuse_module_units():
    """mda intervene tracks a head: a whole-module unit is one ConfigError; a scores manifest holding
    module units is checked on its head units only."""
    from mda_fast.cli.intervene_cmd import _unit
    from mda_fast.intervene.validate import check_scores_match

    assert _unit("L1.H3") == (1, 3)
    with pytest.raises(ConfigError, match="names a whole module"):
        _unit("L1.attention.dense")
    check_scores_match({"units": ["L1.attention.dense", "L1.H3.qk"]}, unit=(1, 3))
    with pytest.raises(ConfigError, match="not the tracked unit L1.H2"):
        check_scores_match({"units": ["L1.attention.dense", "L1.H3.qk"]}, unit=(1, 2))
