"""No extra of pyproject.toml, and not the peers' install, swaps the installed torch.

The real check is pip's own dry-run resolution (``pip install --dry-run --report``) of each extra in
this environment (scripts/torch_safe.py check): it needs the package index, so it skips only when
pip cannot reach it. The install itself (scripts/install_peers.sh) changes the environment and runs
only with MDA_FAST_TEST_INSTALL_PEERS=1.
"""

import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("torch_safe", ROOT / "scripts" / "torch_safe.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ts = _script()


def _item(name, version="1.0"):
    return {"metadata": {"name": name, "version": version}}


def test_torch_family_is_recognised():
    install = [_item(n) for n in ("torch", "TorchVision", "torchaudio", "nvidia-cublas", "nvidia_cudnn_cu13",
                                  "cuda-bindings", "triton", "torchopt", "accelerate", "einops")]
    assert ts.torch_changes(install) == ["torch==1.0", "TorchVision==1.0", "torchaudio==1.0", "nvidia-cublas==1.0",
                                         "nvidia_cudnn_cu13==1.0", "cuda-bindings==1.0"]


def test_targets_are_pyprojects_extras_with_the_base_dependencies():
    targets = ts.project_targets()
    assert {"base", "test", "bench"} <= set(targets)
    assert all(targets[name][:len(targets["base"])] == targets["base"] for name in targets)
    assert not any(r.startswith(("kronfluence", "torchvision", "bergson")) for reqs in targets.values() for r in reqs)


def _run(*args):
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "torch_safe.py"), *args],
                       capture_output=True, text=True, timeout=600)
    if r.returncode == 3:
        pytest.skip(f"pip cannot reach the package index: {r.stderr.strip().splitlines()[-1]}")
    return r


def test_every_extra_and_the_peers_keep_torch():
    r = _run("check")
    assert r.returncode == 0, r.stdout + r.stderr
    verdicts = dict(line.strip().split(": ", 1) for line in r.stdout.splitlines() if ": " in line)
    expected = [t for t in ts.project_targets() if t != "base"] + ["peers"]
    assert sorted(verdicts) == sorted(expected), r.stdout
    assert all(v.endswith("keeps torch") for v in verdicts.values()), r.stdout


def test_check_fails_on_what_used_to_be_the_bench_extra(tmp_path):
    """kronfluence with its own requirements (the old `bench` extra) would replace torch: the check says so."""
    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed here, so kronfluence's requirements change nothing")
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "x"\ndependencies = []\n'
                         '[project.optional-dependencies]\nbench = ["kronfluence==1.0.1"]\n')
    try:
        code = ts.check(["bench"], str(pyproject))
    except ts.PipError as exc:
        if exc.network:
            pytest.skip("pip cannot reach the package index")
        raise
    assert code == 1


@pytest.mark.skipif(os.environ.get("MDA_FAST_TEST_INSTALL_PEERS") != "1",
                    reason="installs kronfluence into this environment: set MDA_FAST_TEST_INSTALL_PEERS=1")
def test_install_peers_keeps_torch():
    before = ts.torch_version()
    r = subprocess.run(["bash", str(ROOT / "scripts" / "install_peers.sh")], capture_output=True, text=True,
                       timeout=900, env={**os.environ, "PYTHON": sys.executable})
    assert r.returncode == 0, r.stdout + r.stderr
    assert ts.torch_version() == before and f"torch {before} kept" in r.stdout
