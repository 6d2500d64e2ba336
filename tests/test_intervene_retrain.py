"""Retraining under a plan: deleted rows contribute no gradient; duplicate/insert/shuffle change
the batch exactly as specified."""

import numpy as np
import torch
from transformers import AutoModelForCausalLM

from mda_fast.data import ArraySource
from mda_fast.intervene.plans import SYNTH_BASE, Plan
from mda_fast.intervene.retrain import PlanTransform, delete_weights, local_shuffle
from mda_fast.models.configs import tiny_neox_config
from mda_fast.training import OptimConfig, train
from test_intervene_helpers import one_thread  # noqa: F401 (autouse fixture)

RPS, L = 4, 9


def _source(n=40, seed=0):
    return ArraySource(np.random.default_rng(seed).integers(32, 127, size=(n, L)), vocab_size=257)


def _one_step(rows, plan):
    torch.manual_seed(0)
    m = AutoModelForCausalLM.from_config(tiny_neox_config(vocab_size=257, hidden_size=32, intermediate_size=64),
                                         attn_implementation="eager")
    train(m, ArraySource(rows, vocab_size=257), (0, 1), RPS, OptimConfig(lr=1e-2, schedule="constant"),
          row_weights=delete_weights(plan))
    return torch.cat([p.detach().flatten() for p in m.parameters()])


def test_deleted_row_contributes_nothing():
    rows = _source(RPS).read(np.arange(RPS))
    plan = Plan("delete", "delete", (0, 1), RPS, delete=np.array([2]))
    other = rows.copy()
    other[2] = np.random.default_rng(9).integers(32, 127, size=L)      # different content, same slot
    w1, w2 = _one_step(rows, plan), _one_step(other, plan)
    assert torch.equal(w1, w2)                                            # content of row 2 is irrelevant
    keep = Plan("baseline", "baseline", (0, 1), RPS)
    assert not torch.allclose(_one_step(rows, keep), _one_step(other, keep))
    w = delete_weights(plan)(torch.arange(RPS))
    assert w.tolist() == [1.0, 1.0, 0.0, 1.0]
    assert delete_weights(keep) is None


def test_duplicate_transform_substitutes_target_slots():
    src = _source()
    plan = Plan("dup", "duplicate", (2, 6), RPS, sources=np.array([9, 20]), targets=np.array([13, 22]))
    t = PlanTransform(src, plan)
    ids, tok = torch.arange(12, 16), torch.as_tensor(src.read(np.arange(12, 16)))
    new_ids, new_tok = t(3, ids, tok)
    assert new_ids.tolist() == [12, 9, 14, 15]
    assert np.array_equal(new_tok[1].numpy(), src.read(np.array([9]))[0])
    assert torch.equal(new_tok[[0, 2, 3]], tok[[0, 2, 3]])
    assert new_tok.shape == tok.shape
    out_ids, out_tok = t(7, torch.arange(28, 32), torch.zeros(RPS, L, dtype=torch.long))  # outside window
    assert out_ids.tolist() == [28, 29, 30, 31] and out_tok.abs().sum() == 0


def test_insert_synthetic_transform():
    src = _source()
    syn = np.full((2, L), 65)
    syn[1] = 66
    plan = Plan("syn", "insert-synthetic", (2, 6), RPS, sources=SYNTH_BASE + np.array([0, 1]),
                targets=np.array([16, 19]))
    ids, tok = PlanTransform(src, plan, synthetic=syn)(4, torch.arange(16, 20),
                                                       torch.as_tensor(src.read(np.arange(16, 20))))
    assert ids.tolist() == [SYNTH_BASE, 17, 18, SYNTH_BASE + 1]
    assert (tok[0] == 65).all() and (tok[3] == 66).all()
    assert np.array_equal(tok[1].numpy(), src.read(np.array([17]))[0])


def test_local_shuffle_permutes_within_blocks_and_follows_targets():
    assert local_shuffle(8, RPS, 4, seed=0) is None
    o = local_shuffle(8, RPS, 4, seed=3)
    assert sorted(o.tolist()) == list(range(32))
    assert set(o[:16].tolist()) == set(range(16)) and not np.array_equal(o, np.arange(32))
    assert np.array_equal(o, local_shuffle(8, RPS, 4, seed=3))
    src = _source()
    plan = Plan("dup", "duplicate", (2, 10), RPS, sources=np.array([30]), targets=np.array([8 + int(o[5])]))
    t = PlanTransform(src, plan, order=o)
    ids, tok = t(3, torch.arange(12, 16), torch.as_tensor(src.read(np.arange(12, 16))))
    # step 3 = window positions 4..7 after the permutation; slot 1 held row 8 + o[5] -> replaced by row 30
    assert ids.tolist()[0] == 8 + int(o[4]) and ids.tolist()[1] == 30
    assert np.array_equal(tok[1].numpy(), src.read(np.array([30]))[0])
