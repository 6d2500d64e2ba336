"""Models as users hold them (``models.interop``): a transformers model, a TransformerLens 4
TransformerBridge, an nnsight wrapper give the unit names, head scores and attribution scores of
the same weights loaded from a checkpoint folder, bit for bit; what cannot be attributed faithfully
is refused with a ModelError. Offline: tiny models built from a config, a byte tokenizer saved here."""

import functools
import tempfile

import numpy as np
import pytest
import torch

from mda_fast.attribution import MDA, Settings
from mda_fast.cli import main
from mda_fast.codec import byte_tokenizer
from mda_fast.errors import ModelError
from mda_fast.heads import head_scores
from mda_fast.models import load_model, make_tiny_model
from mda_fast.models.fingerprint import weights_fingerprint
from mda_fast.models.interop import as_hf_model

from test_attr_bruteforce import one_thread, window  # noqa: F401  (one_thread: autouse fixture)

SMALL = dict(hidden_size=32, intermediate_size=64)
UNITS = ["L1.H2.qkvo", "L0.H1.qk"]
PROBES = ["copy_target", "prev_attn:L1.H2"]
SETTINGS = dict(fit_fraction=0.5, batch_size=4, progress=False, probe_n=6, probe_seq_len=16, chunk_rows=4)


def fresh(arch="neox", seed=3):
    return make_tiny_model(arch, seed=seed, **(SMALL if arch == "neox" else dict(n_embd=32, n_inner=64)))


@functools.lru_cache(maxsize=1)
def saved_tokenizer():
    """A byte tokenizer read back from disk (TransformerLens re-reads it by its name_or_path)."""
    from transformers import AutoTokenizer

    d = tempfile.mkdtemp(prefix="mda-interop-tok-")
    byte_tokenizer().save_pretrained(d)
    return AutoTokenizer.from_pretrained(d)


@pytest.fixture(scope="module")
def tokenizer():
    return saved_tokenizer()


def cli_bridge():
    """``--model test_interop:cli_bridge``: a factory the CLI calls."""
    return bridge(fresh(), saved_tokenizer())


def cli_processed_bridge():
    obj = bridge(fresh(), saved_tokenizer())
    obj.enable_compatibility_mode(disable_warnings=True)
    return obj


def bridge(model, tokenizer):
    tl = pytest.importorskip("transformer_lens.model_bridge")
    return tl.TransformerBridge.boot_transformers("tiny", hf_model=model, tokenizer=tokenizer, device="cpu")


def holders(tokenizer) -> dict:
    """{how: the tiny model of ``fresh()`` held that way}; kinds whose package is missing skipped."""
    out = {"transformers": fresh()}
    try:
        out["bridge"] = bridge(fresh(), tokenizer)
    except pytest.skip.Exception:
        pass
    try:
        import nnsight
    except ImportError:
        return out
    out["nnsight TransformersModel"] = nnsight.TransformersModel(fresh(), tokenizer=tokenizer)
    if "bridge" in out:
        out["nnsight around a bridge"] = nnsight.NNsight(bridge(fresh(), tokenizer))
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt") / "tiny"
    fresh().save_pretrained(d)
    return str(d)


def test_head_scores_equal_the_checkpoint_folders(folder, tokenizer):
    ref = head_scores(load_model(folder, load_tokenizer=False)[0], n=4, seq_len=16, vocab_high=200)
    seen = holders(tokenizer)
    if len(seen) < 2:
        pytest.skip("neither transformer_lens nor nnsight is installed (pip install -e '.[interop]')")
    for how, obj in seen.items():
        got = head_scores(obj, n=4, seq_len=16, vocab_high=200)
        for name in ref.scores:
            np.testing.assert_array_equal(got.scores[name], ref.scores[name], err_msg=f"{how}: {name}")


def test_attribution_scores_equal_the_checkpoint_folders(folder, tokenizer, tmp_path):
    def run(model, name):
        mda = MDA(model, UNITS, PROBES, settings=Settings(**SETTINGS))
        return mda, mda.fit(window(n=14)).score(window(n=14), str(tmp_path / name))

    ref_mda, ref = run(load_model(folder, load_tokenizer=False)[0], "folder")
    for i, (how, obj) in enumerate(holders(tokenizer).items()):
        mda, got = run(obj, f"held{i}")
        assert [u.name for u in mda.units] == [u.name for u in ref_mda.units], how
        assert [b.name for b in mda.blocks] == [b.name for b in ref_mda.blocks], how
        assert got.columns == ref.columns, how
        np.testing.assert_array_equal(got.row_ids, ref.row_ids, err_msg=how)
        np.testing.assert_array_equal(got.scores, ref.scores, err_msg=how)
        np.testing.assert_array_equal(got.loss, ref.loss, err_msg=how)


def test_index_query_and_pipeline_take_a_bridge(folder, tokenizer, tmp_path):
    from mda_fast.attribution.index.query import Index
    from mda_fast.attribution.pipeline import Pipeline

    def query(model, name):
        mda = MDA(model, UNITS, PROBES, settings=Settings(**SETTINGS)).fit(window(n=14))
        mda.index(window(n=14), str(tmp_path / name))
        return Index(str(tmp_path / name), model, mda.factors, Settings(**SETTINGS)).query(["copy_target"])

    ref = query(load_model(folder, load_tokenizer=False)[0], "folder")
    got = query(bridge(fresh(), tokenizer), "bridge")
    np.testing.assert_array_equal(got.scores, ref.scores)
    pipe = Pipeline(bridge(fresh(), tokenizer), window(n=14), str(tmp_path / "run"), PROBES, log=None)
    assert weights_fingerprint(pipe.model) == weights_fingerprint(fresh())


def test_held_models_are_identified_by_their_tensors(folder, tokenizer):
    plain = weights_fingerprint(fresh())
    for how, obj in holders(tokenizer).items():
        hf, what = as_hf_model(obj)
        assert weights_fingerprint(hf) == plain, how
        assert list(hf.state_dict()) == list(fresh().state_dict()), how
    assert plain != weights_fingerprint(fresh(seed=4))
    # a bridge around a model load_model read keeps that checkpoint's identity (same tensors)
    loaded = load_model(folder, load_tokenizer=False)[0]
    held = bridge(load_model(folder, load_tokenizer=False)[0], tokenizer)
    assert weights_fingerprint(as_hf_model(held)[0]) == weights_fingerprint(loaded)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_bridge_view_shares_the_wrapped_tensors(arch, tokenizer):
    model = fresh(arch)
    ref = fresh(arch)
    hf, what = as_hf_model(bridge(model, tokenizer))
    assert "TransformerBridge" in what and type(hf) is type(ref)
    theirs = {id(p) for p in model.parameters()}
    assert all(id(p) in theirs for p in hf.parameters())  # nothing copied
    tokens = torch.randint(0, 256, (2, 12))
    with torch.no_grad():
        assert torch.equal(hf(tokens).logits, ref(tokens).logits)


def test_load_model_takes_a_held_model(tokenizer):
    obj = bridge(fresh(), tokenizer)
    model, tok = load_model(obj)
    assert tok is obj.tokenizer and not model.training
    assert weights_fingerprint(model) == weights_fingerprint(fresh())
    with pytest.raises(ModelError, match="revision"):
        load_model(obj, revision="step1")


def test_processed_bridge_is_refused(tokenizer):
    obj = bridge(fresh(), tokenizer)
    obj.enable_compatibility_mode(disable_warnings=True)
    for call in (lambda: as_hf_model(obj), lambda: head_scores(obj, n=2, seq_len=8),
                 lambda: MDA(obj, UNITS, PROBES, settings=Settings(**SETTINGS)), lambda: load_model(obj)):
        with pytest.raises(ModelError, match="enable_compatibility_mode.*folded"):
            call()


def test_unprocessed_compatibility_mode_is_accepted(tokenizer):
    obj = bridge(fresh(), tokenizer)
    obj.enable_compatibility_mode(disable_warnings=True, no_processing=True)
    assert weights_fingerprint(as_hf_model(obj)[0]) == weights_fingerprint(fresh())


def test_nnsight_edits_and_meta_weights_are_refused(tokenizer):
    nnsight = pytest.importorskip("nnsight")
    with pytest.warns(FutureWarning):  # LanguageModel: deprecated in nnsight 0.8, still common
        lm = nnsight.LanguageModel(fresh(), tokenizer=tokenizer)
    with lm.edit() as (_, edited):
        edited.gpt_neox.layers[0].output[0][:] = 0
    assert as_hf_model(lm)[0] is lm._module  # the original stays clean
    with pytest.raises(ModelError, match="edits"):
        as_hf_model(edited)
    edited.clear_edits()
    assert as_hf_model(edited)[0] is lm._module
    with torch.device("meta"):
        ghost = fresh()
    with pytest.raises(ModelError, match="meta device"):
        as_hf_model(nnsight.NNsight(ghost))


def test_nnsight_model_read_from_a_folder_once_dispatched(folder, tokenizer):
    nnsight = pytest.importorskip("nnsight")
    with pytest.warns(FutureWarning):
        lm = nnsight.LanguageModel(folder, tokenizer=tokenizer)  # weights not read yet
    with pytest.raises(ModelError, match="not dispatched"):
        head_scores(lm, n=2, seq_len=8)
    lm.dispatch()
    ref = head_scores(load_model(folder, load_tokenizer=False)[0], n=4, seq_len=16, vocab_high=200)
    got = head_scores(lm, n=4, seq_len=16, vocab_high=200)  # its sdpa model is scored eager, as the folder's
    for name in ref.scores:
        np.testing.assert_array_equal(got.scores[name], ref.scores[name], err_msg=name)


@pytest.mark.parametrize("obj", ["runs/x", 3, torch.nn.Linear(2, 2)])
def test_other_objects_are_refused(obj):
    with pytest.raises(ModelError, match="cannot attribute"):
        as_hf_model(obj)


def test_cli_takes_a_module_name_spec(folder, capsys):
    pytest.importorskip("transformer_lens")
    args = ["--n", "4", "--seq-len", "16", "--vocab-high", "200", "-k", "100%"]
    assert main(["heads", "--model", folder, *args]) == 0
    want = capsys.readouterr().out.splitlines()[1:]  # the first line names the model
    assert main(["heads", "--model", "test_interop:cli_bridge", *args]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == want
    for spec, why in (("test_interop:cli_processed_bridge", "enable_compatibility_mode"),
                      ("no_such_module_here:model", "cannot import")):
        assert main(["heads", "--model", spec, *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("mda: error: ") and why in err and err.count("\n") == 1, err
