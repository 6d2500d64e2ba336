"""The output machinery: content digests (cached), fingerprints of weights and windows, atomic
directories, the one-writer lock, and write failures as one clear error."""

import errno
import json
import multiprocessing
import os
import shutil

import numpy as np
import pytest

from mda_fast.data import ArraySource, open_source, select_steps, write_mmidx
from mda_fast.data.fingerprint import window_fingerprint
from mda_fast.digest import CACHE_NAME, files_digest
from mda_fast.errors import OutputError
from mda_fast.io import atomic_dir, write_json
from mda_fast.lock import LOCK_NAME, claim
from mda_fast.models import load_model, make_tiny_model
from mda_fast.models.fingerprint import checkpoint_weights, weights_fingerprint


def test_files_digest_is_cached_and_follows_rewrites(tmp_path, monkeypatch):
    (tmp_path / "w.bin").write_bytes(b"abc")
    first = files_digest(tmp_path, ["w.bin"])["w.bin"]
    assert (tmp_path / CACHE_NAME).is_file()
    import mda_fast.digest as digest

    monkeypatch.setattr(digest, "file_sha256", lambda p: pytest.fail("a cached file was read again"))
    assert files_digest(tmp_path, ["w.bin"])["w.bin"] == first
    monkeypatch.undo()
    os.replace(tmp_path / "w.bin", tmp_path / "old")          # a replaced file of the same size
    (tmp_path / "w.bin").write_bytes(b"xyz")
    assert files_digest(tmp_path, ["w.bin"])["w.bin"] != first


def test_hub_cache_links_are_named_by_their_blob(tmp_path):
    blob = tmp_path / "blobs" / ("ab" * 32)
    blob.parent.mkdir()
    blob.write_bytes(b"weights")
    (tmp_path / "snap").mkdir()
    (tmp_path / "snap" / "model.safetensors").symlink_to(blob)
    assert files_digest(tmp_path / "snap", ["model.safetensors"]) == {"model.safetensors": "ab" * 32}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("fp")
    make_tiny_model("neox", seed=1, hidden_size=32, intermediate_size=64).save_pretrained(d / "a")
    return d


def test_weights_fingerprint_is_the_content_not_the_path(ckpt):
    model, _ = load_model(str(ckpt / "a"), load_tokenizer=False)
    fp = weights_fingerprint(model)
    assert fp == checkpoint_weights(ckpt / "a")
    shutil.copytree(ckpt / "a", ckpt / "copy")
    assert checkpoint_weights(ckpt / "copy") == fp           # moved or copied: the same model
    other = make_tiny_model("neox", seed=2, hidden_size=32, intermediate_size=64)
    assert weights_fingerprint(other) != weights_fingerprint(make_tiny_model("neox", seed=1, hidden_size=32,
                                                                             intermediate_size=64))


def test_training_forgets_the_files(ckpt):
    from mda_fast.training import OptimConfig, train

    model, _ = load_model(str(ckpt / "a"), load_tokenizer=False)
    rows = ArraySource(np.random.default_rng(0).integers(0, 256, (8, 9)), vocab_size=256)
    train(model, rows, (0, 1), 8, OptimConfig(lr=1e-2, schedule="constant"))
    assert weights_fingerprint(model) != checkpoint_weights(ckpt / "a")


def test_window_fingerprint_is_the_rows_not_the_format(tmp_path):
    rows = np.random.default_rng(0).integers(0, 500, (40, 9))
    np.save(tmp_path / "r.npy", rows)
    write_mmidx(tmp_path / "r", rows)
    a = window_fingerprint(select_steps(open_source(tmp_path / "r.npy"), 2, 7, 4))
    assert a == window_fingerprint(select_steps(open_source(tmp_path / "r"), 2, 7, 4))
    assert a != window_fingerprint(select_steps(open_source(tmp_path / "r"), 3, 8, 4))
    rows[12, 0] += 1                                             # one sampled row changed
    assert a != window_fingerprint(select_steps(ArraySource(rows), 2, 7, 4))


def test_atomic_dir_replaces_only_when_complete(tmp_path):
    out = tmp_path / "factors"
    with atomic_dir(out) as tmp:
        write_json(tmp / "manifest.json", {"v": 1})
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(out) as tmp:
            (tmp / "factors.safetensors").write_bytes(b"new")
            raise KeyboardInterrupt          # killed between the tensors and the manifest
    assert sorted(os.listdir(out)) == ["manifest.json"] and json.loads((out / "manifest.json").read_text()) == {"v": 1}
    assert sorted(os.listdir(tmp_path)) == ["factors"]
    (tmp_path / "factors.999999.tmp").mkdir()                   # left by a dead process
    with atomic_dir(out) as tmp:
        write_json(tmp / "manifest.json", {"v": 2})
    assert sorted(os.listdir(tmp_path)) == ["factors"]


def _hold(path, ready, release):
    with claim(path):
        ready.set()
        release.wait(30)


def test_one_writer_and_the_lock_dies_with_its_holder(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(tmp_path / "run"), ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        with pytest.raises(OutputError, match=f"already being written by pid {holder.pid}"):
            with claim(tmp_path / "run"):
                pass
        assert sorted(os.listdir(tmp_path / "run")) == [LOCK_NAME]
    finally:
        holder.kill()
        holder.join()
    with claim(tmp_path / "run"), claim(tmp_path / "run"):      # free again; re-entrant in one process
        pass


def test_full_disk_is_one_clear_error(tmp_path, monkeypatch):
    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OutputError, match="cannot write .*run: No space left on device"):
        with claim(tmp_path / "run"):
            pass
    monkeypatch.undo()
    monkeypatch.setattr(np, "savez", lambda *a, **k: full(0, b""))
    from mda_fast.attribution.store.scores import _save_npz

    with pytest.raises(OutputError, match="cannot write .*x.npz: No space left on device"):
        _save_npz(str(tmp_path / "x.npz"), a=np.zeros(1))
    assert not list(tmp_path.glob("x.npz*"))
