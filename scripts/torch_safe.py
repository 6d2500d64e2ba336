#!/usr/bin/env python3
"""Installs that never swap torch.

    python3 scripts/torch_safe.py check [TARGET ...]   # pip's dry-run resolution of each extra in
        # pyproject.toml (with the base dependencies) and of the peers; exit 1 when any would install
        # or replace torch, torchvision, torchaudio or a CUDA library (nvidia-*, cuda-*)
    python3 scripts/torch_safe.py install-peers        # what scripts/install_peers.sh runs

Why: kronfluence 1.0.1 requires torchvision>=0.16, which its code never imports (it imports torch,
accelerate, safetensors, tqdm, opt_einsum, einops, einconv, numpy), and pip satisfies torchvision
by replacing a CPU torch 2.13 with torch 2.14.1 and ~15 nvidia-*/cuda-* wheels. ``install-peers``
installs kronfluence's other requirements (read from its own metadata) with torch pinned to the
installed version, then kronfluence itself with --no-deps, and compares ``torch.__version__`` before
and after. Targets of ``check``: every extra (each with the base dependencies) and "peers" by default; "base"
(the dependencies alone) when named.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    from pip._vendor import tomli as tomllib
try:
    from packaging.requirements import Requirement
except ModuleNotFoundError:
    from pip._vendor.packaging.requirements import Requirement

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYPROJECT = os.path.join(ROOT, "pyproject.toml")
KRONFLUENCE = "kronfluence==1.0.1"
NEVER_IMPORTED = {"torchvision"}  # kronfluence 1.0.1 requirements its code never imports
TORCH_FAMILY = re.compile(r"^(torch|torchvision|torchaudio|nvidia-.+|cuda-.+)$")
NETWORK_ERRORS = ("NewConnectionError", "Max retries exceeded", "Temporary failure in name resolution",
                  "Network is unreachable", "ConnectTimeoutError", "ReadTimeoutError")


class PipError(RuntimeError):
    """pip failed; ``network`` says whether it could not reach the index at all."""

    def __init__(self, cmd: list[str], stderr: str):
        self.network = any(s in stderr for s in NETWORK_ERRORS)
        tail = "\n".join(line for line in stderr.splitlines() if "is ignored" not in line)[-3000:]
        super().__init__(f"{' '.join(cmd)} failed:\n{tail}")


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pip(*args: str) -> str:
    """Run ``python -m pip ARGS`` with this interpreter; stdout, or PipError."""
    cmd = [sys.executable, "-m", "pip", *args]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise PipError(cmd, r.stderr)
    return r.stdout


def dry_run(*args: str) -> list[dict]:
    """pip's --dry-run --report of ``pip install ARGS`` in this environment: its "install" list
    (each with "metadata": name, version, requires_dist)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "report.json")
        pip("install", "--dry-run", "--quiet", "--disable-pip-version-check", "--report", report, *args)
        with open(report, encoding="utf-8") as f:
            return json.load(f)["install"]


def torch_changes(install: list[dict]) -> list[str]:
    """"name==version" of every torch-family package an install list would install or replace."""
    return [f"{i['metadata']['name']}=={i['metadata']['version']}" for i in install
            if TORCH_FAMILY.match(normalized(i["metadata"]["name"]))]


def project_targets(pyproject: str = PYPROJECT) -> dict[str, list[str]]:
    """{"base": dependencies, extra: dependencies + the extra's requirements} of pyproject.toml."""
    with open(pyproject, "rb") as f:
        project = tomllib.load(f)["project"]
    base = list(project.get("dependencies", []))
    return {"base": base, **{name: base + list(reqs) for name, reqs in project.get("optional-dependencies", {}).items()}}


def peer_requirements() -> list[str]:
    """kronfluence's own runtime requirements (its metadata, via a --no-deps dry run that ignores an
    installed copy) minus those its code never imports."""
    (kf,) = dry_run("--no-deps", "--ignore-installed", KRONFLUENCE)
    reqs = [Requirement(r) for r in kf["metadata"].get("requires_dist", [])]
    return [str(r) for r in reqs if not (r.marker and "extra" in str(r.marker)) and normalized(r.name) not in NEVER_IMPORTED]


def check(targets: list[str], pyproject: str = PYPROJECT) -> int:
    """Print what each target's resolution would do to the torch family; 1 if any would change it."""
    found = project_targets(pyproject)
    unknown = [t for t in targets if t != "peers" and t not in found]
    if unknown:
        print(f"unknown targets {unknown}; pyproject has {sorted(found)} (and 'peers')", file=sys.stderr)
        return 2
    targets = targets or [*(t for t in found if t != "base" or len(found) == 1), "peers"]
    with ThreadPoolExecutor(max_workers=4) as pool:  # each resolution is one pip process, mostly waiting
        installs = list(pool.map(lambda t: dry_run(*(peer_requirements() if t == "peers" else found[t])), targets))
    bad = 0
    for target, install in zip(targets, installs):
        changes = torch_changes(install)
        bad += bool(changes)
        verdict = f"WOULD CHANGE TORCH: {', '.join(changes)}" if changes else "keeps torch"
        print(f"{target:>8}: {len(install)} to install, {verdict}")
    return 1 if bad else 0


def torch_version() -> str:
    """torch.__version__ as a fresh interpreter sees it (not this process's import cache)."""
    return subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__)"], check=True,
                          capture_output=True, text=True).stdout.strip()


def install_peers() -> int:
    """kronfluence 1.0.1 for benchmarks/bench_peers.py, keeping the installed torch (module docstring)."""
    before = torch_version()
    reqs = peer_requirements()
    changes = torch_changes(dry_run(*reqs))
    if changes:
        print(f"refusing: installing {reqs} would change torch ({', '.join(changes)})", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        pin = os.path.join(tmp, "keep-torch.txt")
        with open(pin, "w", encoding="utf-8") as f:
            f.write(f"torch=={before}\n")
        pip("install", "--quiet", "-c", pin, *reqs)
        pip("install", "--quiet", "--no-deps", KRONFLUENCE)
    after = torch_version()
    if after != before:
        print(f"torch changed from {before} to {after}", file=sys.stderr)
        return 1
    subprocess.run([sys.executable, "-c", "import kronfluence.analyzer, kronfluence.arguments, kronfluence.task"],
                   check=True)
    print(f"{KRONFLUENCE} installed with {', '.join(reqs)} ({', '.join(sorted(NEVER_IMPORTED))} left out); "
          f"torch {after} kept")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="dry-run each extra (default: all, and 'peers'); exit 1 if torch would change")
    c.add_argument("targets", nargs="*")
    sub.add_parser("install-peers", help="install kronfluence 1.0.1 keeping torch")
    args = p.parse_args(argv)
    try:
        return check(args.targets) if args.cmd == "check" else install_peers()
    except PipError as exc:
        print(exc, file=sys.stderr)
        return 3 if exc.network else 1


if __name__ == "__main__":
    raise SystemExit(main())
