"""Demo corpus, tokenizer, config and a tiny end-to-end smoke run."""

import json

import numpy as np
import pytest
import yaml

from mda_fast.demo.config import DEFAULT_YAML, DemoConfig, load_demo_config
from mda_fast.demo.corpus import KINDS, build_corpus, load_row_kinds, make_documents, pack_rows
from mda_fast.intervene.generators import GENERATORS
from mda_fast.demo.measure import formation_window, measure_heads
from mda_fast.codec import EOD_ID, byte_tokenizer, decode_ids, encode_bytes
from mda_fast.errors import ConfigError


def test_tokenizer_is_bytes_and_roundtrips(tmp_path):
    tok = byte_tokenizer()
    text = "héllo <td>x</td>\n\t\\hline ✓"
    ids = tok.encode(text)
    assert ids == encode_bytes(text).tolist()
    assert tok.decode(ids) == text
    assert tok.eos_token_id == EOD_ID and len(tok) == 257
    assert tok.encode("a<|endoftext|>b") == [97, EOD_ID, 98]
    tok.save_pretrained(tmp_path)
    from transformers import AutoTokenizer
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again.decode(ids) == text and again.eos_token_id == EOD_ID
    assert decode_ids([104, 105, EOD_ID, 33]) == "hi<|endoftext|>!"


def test_pack_rows_joins_with_eod():
    docs = [(0, np.array([1, 2, 3], np.uint16)), (5, np.array([7, 8], np.uint16)),
            (2, np.array([9] * 10, np.uint16))]
    rows, kinds = pack_rows(docs, n_rows=3, seq_len=4)
    assert rows.reshape(-1).tolist() == [1, 2, 3, EOD_ID, 7, 8, EOD_ID, 9, 9, 9, 9, 9]
    assert kinds.reshape(-1).tolist() == [0, 0, 0, 0, 5, 5, 5, 2, 2, 2, 2, 2]


def test_corpus_deterministic_and_labelled(tmp_path):
    a = build_corpus(tmp_path / "a" / "c", n_rows=300, seq_len=65, seed=3, max_doc_bytes=2048)
    build_corpus(tmp_path / "b" / "c", n_rows=300, seq_len=65, seed=3, max_doc_bytes=2048)
    build_corpus(tmp_path / "c" / "c", n_rows=300, seq_len=65, seed=4, max_doc_bytes=2048)
    ba, bb, bc = ((tmp_path / d / "c.bin").read_bytes() for d in "abc")
    assert ba == bb and ba != bc
    assert (tmp_path / "a" / "c.idx").read_bytes() == (tmp_path / "b" / "c.idx").read_bytes()
    from mda_fast.data import MMIdxSource
    src = MMIdxSource(tmp_path / "a" / "c")
    assert len(src) == 300 and src.seq_len == 65
    rows = src.read(np.arange(300))
    assert rows.max() <= EOD_ID and (rows == EOD_ID).any()
    kinds, row_kind = load_row_kinds(tmp_path / "a" / "c")
    assert kinds == list(KINDS) and row_kind.tolist() == a.row_kind.tolist()
    assert set(row_kind.tolist()) >= {KINDS.index("code"), KINDS.index("repeated")}
    frac = np.load(tmp_path / "a" / "c.kindfrac.npy")
    assert frac.shape == (300, len(KINDS)) and np.allclose(frac.sum(1), 1)
    # the label follows the content: rows labelled markup contain tags, latex rows backslashes
    for name, marker in (("markup", "</"), ("latex", "\\"), ("code", "")):
        picked = np.flatnonzero((row_kind == KINDS.index(name)) & (frac.max(1) >= 0.9))
        assert len(picked), name
        assert all(marker in decode_ids(rows[i]) for i in picked[:5])
    assert not list(tmp_path.rglob("*.tmp"))
    assert sum(a.tokens_by_kind.values()) == 300 * 65


def test_generators_have_repeats():
    import random
    for kind, gen in GENERATORS.items():
        text = gen(random.Random(1))
        assert len(text) > 20, kind
    rep = GENERATORS["repeated"](random.Random(2))
    # the repeated span occurs at least 4 times
    span = max((rep[i:i + 6] for i in range(len(rep) - 6)), key=rep.count)
    assert rep.count(span) >= 4


def test_mix_validation():
    with pytest.raises(ConfigError, match="unknown kinds"):
        make_documents(1000, 0, mix={"poetry": 1.0})
    docs = make_documents(20000, 0, mix={"repeated": 1.0})
    assert {k for k, _ in docs} == {KINDS.index("repeated")}


def test_yaml_mirrors_defaults(tmp_path):
    assert load_demo_config(DEFAULT_YAML).to_dict() == DemoConfig().to_dict()
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"steps": 10, "lr": 1e-3}))
    cfg = load_demo_config(p, rows_per_step=4)
    assert (cfg.steps, cfg.lr, cfg.rows_per_step) == (10, 1e-3, 4)
    p.write_text("stepz: 3\n")
    with pytest.raises(ConfigError, match="stepz"):
        load_demo_config(p)
    with pytest.raises(ConfigError):
        DemoConfig(d_model=130, heads=4)


def test_formation_window():
    curve = {0: 0.02, 100: 0.03, 150: 0.08, 200: 0.3, 250: 0.6, 300: 0.8}
    assert formation_window(curve) == (150, 250)
    assert formation_window({0: 0.0, 50: 0.2}) is None


def test_fresh_model_has_no_formed_heads():
    from mda_fast.demo.train_demo import new_model
    cfg = DemoConfig(layers=1, d_model=32, heads=2, intermediate=64, probe_n=4, probe_len=8)
    m = new_model(cfg)
    s = measure_heads(m, cfg)
    assert np.shape(s["induction"]) == (1, 2) and np.shape(s["previous_token"]) == (1, 2)
    assert max(map(max, s["induction"])) < 0.3 and max(map(max, s["previous_token"])) < 0.5
    assert m.config._attn_implementation == "sdpa"   # switched back after measuring


def test_demo_smoke(tmp_path):
    """Corpus -> a few training steps with checkpoints + tokenizer -> curve; resume is a no-op."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from mda_fast.demo.train_demo import run_demo_training
    cfg = DemoConfig(layers=1, d_model=32, heads=2, intermediate=64, steps=6, rows_per_step=4,
                     save_every=3, seq_len=33, probe_n=4, probe_len=8)
    s = run_demo_training(tmp_path, cfg, progress=False)
    assert sorted(s["curve"]) == [0, 1, 2, 3, 4, 6]
    assert s["final_loss"] < 5.6                        # below uniform over 257 tokens (ln 257 = 5.55)
    ck = tmp_path / "checkpoints" / "step6"
    tok = AutoTokenizer.from_pretrained(ck)
    model = AutoModelForCausalLM.from_pretrained(ck)
    assert model.config.vocab_size == 257 and tok.decode(tok.encode("<a>")) == "<a>"
    st = json.loads((ck / "trainer_state.json").read_text())
    assert st["demo_config"]["steps"] == 6
    again = run_demo_training(tmp_path, cfg, progress=False)    # everything already there
    assert again["curve"] == s["curve"] and again["sec_per_step"] is None


def test_repeated_span_rows_overwrite_the_requested_share():
    from mda_fast.demo.corpus import overwrite_repeated_spans

    rng = np.random.default_rng(0)
    rows = rng.integers(0, 256, (200, 65)).astype(np.uint16)
    kinds = np.zeros(rows.shape, np.int8)
    before = rows.copy()
    chosen = overwrite_repeated_spans(rows, kinds, 0.3, seed=1)          # default: a span tiled along the row
    assert len(chosen) == 60 and len(set(chosen.tolist())) == 60
    changed = np.nonzero((rows != before).any(axis=1))[0]
    assert set(changed.tolist()) <= set(chosen.tolist())
    rep = KINDS.index("repeated")
    for r in chosen:
        assert (kinds[r] == rep).all()                 # the whole row
        row = bytes(rows[r].astype(np.uint8))
        period = next(p for p in range(1, 65) if all(row[i] == row[i % p] for i in range(65)))
        assert 6 <= period <= 30 and all(32 <= b < 127 for b in row)
    gapped = before.copy()
    kinds[:] = 0
    chosen = overwrite_repeated_spans(gapped, kinds, 0.3, seed=1, span=(6, 24), gap=(1, 12))
    for r in chosen:                                   # text is left between copies
        marked = kinds[r] == rep
        assert 0.2 < marked.mean() < 1.0
        assert (gapped[r][~marked] == before[r][~marked]).all()
    with pytest.raises(ConfigError):
        overwrite_repeated_spans(rows, kinds, 1.5, seed=0)
    with pytest.raises(ConfigError):
        overwrite_repeated_spans(rows, kinds, 0.3, seed=0, span=(5, 2))


def test_bad_lds_fraction_is_refused_before_training(tmp_path, capsys):
    from mda_fast.cli import main

    assert main(["demo", "--out", str(tmp_path / "d"), "--experiment", "--lds-fractions", "0.5,1.5"]) == 2
    assert "--lds-fractions must be in (0, 1), got 0.5,1.5" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_strata_overwrite_disjoint_rows_with_their_planted_corruption():
    from mda_fast.demo.corpus import check_strata, overwrite_strata

    rng = np.random.default_rng(0)
    rows = rng.integers(0, 256, (400, 65)).astype(np.uint16)              # [N, L]
    kinds = np.zeros(rows.shape, np.int8)
    before = rows.copy()
    strata = check_strata([{"name": "clean", "share": 0.2, "span": [10, 12]},
                           {"name": "noisy", "share": 0.1, "span": [10, 12], "corrupt": 0.5},
                           {"name": "half", "share": 0.1, "span": [10, 12], "cover": 0.5}])
    st = overwrite_strata(rows, kinds, strata, seed=3)
    assert np.bincount(st + 1).tolist() == [240, 80, 40, 40]
    assert (rows[st < 0] == before[st < 0]).all()                         # other rows untouched

    def copy_errors(r):
        """Share of tokens of the 2nd+ copies that differ from the first copy's (the row's period p)."""
        row, cov = rows[r], int(round(strata[st[r]]["cover"] * 65))
        return min(float(np.mean(row[p:cov] != np.resize(row[:p], cov)[p:])) for p in range(10, 13))

    err = {s: np.mean([copy_errors(r) for r in np.flatnonzero(st == s)]) for s in range(3)}
    assert err[0] == 0.0 and err[2] == 0.0 and 0.35 < err[1] < 0.6      # ~0.5 x (1 - 1/95) replaced
    half = np.flatnonzero(st == 2)
    cov = int(round(0.5 * 65))                                            # tiled prefix, the rest is text
    assert (kinds[half][:, :cov] == KINDS.index("repeated")).all() and (rows[half][:, cov:] == before[half][:, cov:]).all()
    with pytest.raises(ConfigError, match="sum to"):
        check_strata([{"share": 0.7}, {"share": 0.5}])
    with pytest.raises(ConfigError, match="corrupt"):
        check_strata([{"share": 0.1, "corrupt": 2}])
    with pytest.raises(ConfigError, match="appears twice"):
        check_strata([{"name": "a", "share": 0.1}, {"name": "a", "share": 0.1}])


def test_trajectories_run_one_demo_per_seed(tmp_path, capsys):
    """`mda demo --trajectories 0,1` on a tiny config: a demo per seed (its own corpus draw), the pooled
    file; no experiment without a formed head."""
    from mda_fast.cli import main

    conf = tmp_path / "tiny.yaml"
    conf.write_text(yaml.safe_dump(dict(layers=1, d_model=32, heads=2, intermediate=64, steps=6, rows_per_step=4,
                                        save_every=3, seq_len=33, probe_n=4, probe_len=8, after_formed=0)))
    out = tmp_path / "traj"
    assert main(["demo", "--out", str(out), "--config", str(conf), "--trajectories", "0,1", "--no-progress",
                 "--top-k", "1"]) == 0
    res = json.loads((out / "trajectories.json").read_text())
    assert res["seeds"] == [0, 1] and set(res["demos"]) == {"0", "1"} and "pooled" not in res
    a, b = (np.fromfile(out / f"seed{s}" / "corpus" / "demo.bin", dtype=np.uint16) for s in (0, 1))
    assert a.size == b.size and not np.array_equal(a, b)
    assert json.loads((out / "seed1" / "induction.json").read_text())["config"]["model_seed"] == 1
    assert main(["demo", "--out", str(out), "--trajectories", "0,x"]) == 2
    assert "--trajectories must be comma-separated integers" in capsys.readouterr().err
