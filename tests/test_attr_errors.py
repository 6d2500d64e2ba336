"""Bad input to the attribution pipeline: one clear error, nothing that looks complete."""

import os

import numpy as np
import pytest
import torch

from mda_fast.attribution import MDA, FactorSet, load_scores
from mda_fast.data import ArraySource
from mda_fast.errors import ConfigError, DataError, NumericalError
from mda_fast.probes import CallableProbe, Probe

from test_attr_bruteforce import one_thread, tiny, window  # noqa: F401

S = dict(progress=False, probe_n=4, probe_seq_len=16, batch_size=4, fit_fraction=1.0)


def test_head_and_layer_out_of_range():
    model = tiny("neox", 0)
    with pytest.raises(ConfigError, match="layer 2 is out of range"):
        MDA(model, ["L2.H0.qk"], ["copy_target"], settings=S)
    with pytest.raises(ConfigError, match="head 4 is out of range"):
        MDA(model, ["L1.H4.qk"], ["copy_target"], settings=S)
    with pytest.raises(ConfigError, match="unknown block mode"):
        MDA(model, ["L1.H0.qq"], ["copy_target"], settings=S)
    with pytest.raises(ConfigError, match="out of range"):
        MDA(model, ["L1.H0.qk"], ["prev_attn:L7.H0"], settings=S)


class VectorProbe(Probe):
    name = "vector"

    def __call__(self, outputs, tokens):
        return outputs.logits[..., 0].sum(-1)  # [B]: not summed over the batch


def test_non_scalar_probe(tmp_path):
    model = tiny("neox", 0)
    for probe in (VectorProbe(), CallableProbe(lambda o, t: o.logits[:, 0, :2].sum(0), name="two")):
        mda = MDA(model, ["L1.H0.qk"], [probe], settings=S).fit(window(n=4))
        with pytest.raises(ConfigError, match="scalar"):
            mda.score(window(n=4), str(tmp_path / probe.name))
        assert not os.path.exists(tmp_path / probe.name / "scores.npz")


def test_empty_window(tmp_path):
    model = tiny("neox", 0)
    empty = ArraySource(np.zeros((0, 17), np.int64), name="empty")
    mda = MDA(model, ["L1.H0.qk"], ["copy_target"], settings=S)
    with pytest.raises(DataError, match="window is empty"):
        mda.fit(empty)
    mda.fit(window(n=4))
    with pytest.raises(DataError, match="window is empty"):
        mda.score(empty, str(tmp_path / "r"))


def test_nan_in_gradient_names_block_and_batch():
    model = tiny("neox", 0)
    with torch.no_grad():
        model.gpt_neox.layers[1].attention.query_key_value.weight[0, 0] = float("nan")
    mda = MDA(model, ["L1.H0.qk"], ["copy_target"], settings=S)
    with pytest.raises(NumericalError, match=r"L1\.H0\.qk.*rows 1000\.\.1003"):
        mda.fit(window(n=8))


def test_nan_in_saved_factor_or_corrupt_files(tmp_path):
    model = tiny("neox", 0)
    mda = MDA(model, ["L1.H0.qk"], ["copy_target"], settings=S).fit(window(n=6))
    mda.factors.blocks["L1.H0.qk"].lam[0, 0] = float("nan")
    with pytest.raises(NumericalError, match=r"L1\.H0\.qk"):
        mda.score(window(n=6), str(tmp_path / "r"))
    assert not os.path.exists(tmp_path / "r" / "scores.npz")
    with pytest.raises(DataError, match="not a score run directory"):  # refused before anything is written
        load_scores(str(tmp_path / "r"))
    # factors for another unit / missing files
    mda.factors.blocks["L1.H0.qk"].lam[0, 0] = 1.0
    mda.factors.save(str(tmp_path / "f"))
    other = MDA(model, ["L0.H1.qk"], ["copy_target"], settings=S)
    with pytest.raises(DataError, match="no block L0.H1.qk"):
        other.load_factors(str(tmp_path / "f"))
    os.remove(tmp_path / "f" / "factors.safetensors")
    with pytest.raises(DataError, match="not a complete EK-FAC factor directory"):
        FactorSet.load(str(tmp_path / "f"))


def test_score_before_fit(tmp_path):
    mda = MDA(tiny("neox", 0), ["L1.H0.qk"], ["copy_target"], settings=S)
    with pytest.raises(ConfigError, match="fit"):
        mda.score(window(n=4), str(tmp_path / "r"))


def test_unsupported_dtype_and_unreachable_probe_refused_before_any_pass():
    with pytest.raises(ConfigError, match="parameters are float64"):
        MDA(tiny("neox", 0).double(), ["L1.H0.qk"], ["copy_target"], settings=S)
    with pytest.raises(ConfigError, match=r"probe prev_attn.L1.H2 depends on none of the units' blocks \(L1.H0.qk"):
        MDA(tiny("neox", 0), ["L1.H0.qk"], ["prev_attn:L1.H2"], settings=S)
    MDA(tiny("neox", 0), ["L1.H2.qkvo", "L0.H0.v"], ["prev_attn:L1.H2"], settings=S)  # reaches L1.H2.qk, L0


def test_factors_of_another_model_or_window_are_refused(tmp_path):
    mda = MDA(tiny("neox", 0), ["L1.H0.qk"], ["copy_target"], settings=S).fit(window(n=6), out_dir=str(tmp_path / "f"))
    other = MDA(tiny("neox", 1), ["L1.H0.qk"], ["copy_target"], settings=S).load_factors(str(tmp_path / "f"))
    with pytest.raises(ConfigError, match="were fitted on model weights"):
        other.score(window(n=6), str(tmp_path / "a"))
    with pytest.raises(ConfigError, match="were fitted on window rows 1000..1005"):
        mda.score(window(n=6, seed=1), str(tmp_path / "b"))
    assert not os.path.exists(tmp_path / "a" / "manifest.json") and not os.path.exists(tmp_path / "b" / "manifest.json")


def test_finite_check_of_views_names_the_bad_block_only_inside_blocks():
    from mda_fast.attribution.fit.factors import check_finite_views

    base = torch.zeros(2, 5, 12)  # [B, T, 3 heads x 4]: one captured tensor, blocks are its slices
    views = {f"h{h}": base[..., 4 * h : 4 * (h + 1)] for h in (0, 2)}
    views["own"] = torch.zeros(2, 5, 3)  # a block with its own tensor (e.g. a concatenation)
    check_finite_views(views, "output gradient", "here")
    base[1, 3, 5] = float("nan")  # head 1: no block reads it
    check_finite_views(views, "output gradient", "here")
    base[0, 4, 9] = float("inf")
    with pytest.raises(NumericalError, match=r"output gradient of block h2 is not finite .* at here"):
        check_finite_views(views, "output gradient", "here")
    base[0, 4, 9] = 0.0
    views["own"][0, 0, 0] = float("nan")
    with pytest.raises(NumericalError, match="block own"):
        check_finite_views(views, "output gradient", "here")
