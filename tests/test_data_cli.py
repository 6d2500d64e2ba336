"""`mda data pack` / `mda data show` through main([...]): exit codes, outputs, one-line errors."""

import json

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from mda_fast.cli import main
from mda_fast.data import MMIdxSource, write_mmidx
from mda_fast.data.pieces import split_file

DOCS = ["the cat sat on the mat", "hello world", "cat " * 9, "world hello the end"]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    t.train_from_iterator(DOCS * 5, trainers.BpeTrainer(
        vocab_size=280, special_tokens=["<|endoftext|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    path = tmp_path_factory.mktemp("tok")
    PreTrainedTokenizerFast(tokenizer_object=t, eos_token="<|endoftext|>").save_pretrained(path)
    return path


@pytest.fixture
def shard(tmp_path):
    rows = np.random.default_rng(0).integers(0, 50000, (40, 9))
    write_mmidx(tmp_path / "document", rows)
    split_file(tmp_path / "document.bin", 101)
    return tmp_path / "document", rows


def one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mda: error: "), err
    return err[0]


def test_pack_step_window_from_split_pieces(shard, tmp_path, capsys):
    prefix, rows = shard
    assert main(["data", "pack", "--data", str(prefix), "--out", str(tmp_path / "out" / "win"),
                 "--steps", "2:5", "--rows-per-step", "8"]) == 0
    assert "wrote 24 rows of 9 tokens" in capsys.readouterr().out
    out = MMIdxSource(tmp_path / "out" / "win")
    assert out.dtype == np.uint16 and np.array_equal(out.read(np.arange(24)), rows[16:40])


def test_pack_text_then_show_decoded(tmp_path, tok_dir, capsys):
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS))
    assert main(["data", "pack", "--data", str(tmp_path / "a.jsonl"), "--out", str(tmp_path / "p"),
                 "--seq-len", "5", "--tokenizer", str(tok_dir)]) == 0
    capsys.readouterr()
    tok = PreTrainedTokenizerFast.from_pretrained(tok_dir)
    stream = [t for d in DOCS for t in tok(d, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]]
    packed = MMIdxSource(tmp_path / "p")
    assert np.array_equal(packed.read(np.arange(len(packed))).ravel(), stream[: len(packed) * 5])
    assert main(["data", "show", "--data", str(tmp_path / "p"), "--row", "1", "--tokenizer", str(tok_dir)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("row 1 (position 1 of ") and out[1] == tok.decode(stream[5:10])


def test_show_ids_without_tokenizer(shard, capsys):
    prefix, rows = shard
    assert main(["data", "show", "--data", str(prefix), "--row", "13", "--steps", "1:3", "--rows-per-step", "8"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "row 13 (position 5 of 16)" in out[0]
    assert out[1] == " ".join(str(t) for t in rows[13])


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--row", "40"], "row id 40 is not in this source"),
        (["--row", "0", "--steps", "3:6", "--rows-per-step", "8"], "step window 3:6 needs rows [24, 48)"),
        (["--row", "0", "--steps", "3-6"], "is not of the form START:END"),
    ],
)
def test_show_bad_input_is_one_line(shard, capsys, argv, message):
    prefix, _ = shard
    assert main(["data", "show", "--data", str(prefix), *argv]) == 2
    assert message in one_error_line(capsys)


def test_missing_piece_is_one_line(shard, capsys):
    prefix, _ = shard
    (prefix.parent / "document-00003-of-00007.bin").unlink()
    assert main(["data", "show", "--data", str(prefix), "--row", "0"]) == 2
    assert "document-00003-of-00007.bin" in one_error_line(capsys)


def test_pack_errors(tmp_path, capsys):
    (tmp_path / "a.jsonl").write_text('{"text": "x"}\n')
    assert main(["data", "pack", "--data", str(tmp_path / "a.jsonl"), "--out", str(tmp_path / "o"), "--seq-len", "4"]) == 2
    assert "need a tokenizer" in one_error_line(capsys)
    bad = tmp_path / "bad.idx"
    bad.write_bytes(b"NOTANIDX" + bytes(40))
    (tmp_path / "bad.bin").write_bytes(b"")
    assert main(["data", "pack", "--data", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "not an MMIDIDX index" in one_error_line(capsys)
    assert not list(tmp_path.glob("o.*"))


def test_pack_refuses_to_overwrite_its_source(tmp_path, capsys):
    write_mmidx(tmp_path / "d", np.zeros((3, 4), np.uint16))
    assert main(["data", "pack", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "d")]) == 2
    assert "is the source itself" in one_error_line(capsys)
