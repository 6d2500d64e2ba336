#!/usr/bin/env bash
# Install mda-fast and its dependencies into the current Python (no model or data downloads).
# torch==2.13.0 is pinned first: on these machines it resolves to a CPU build on disk, whereas a
# bare "torch" requirement could pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q "torch==2.13.0" || python3 -m pip install -q "torch>=2.1"
python3 -m pip install -q "setuptools>=77" wheel "pybind11>=2.11"
# No build isolation: the build needs only setuptools + pybind11, installed just above.
# interop: TransformerLens 4 + nnsight, whose tests (tests/test_interop.py, test_heads_peer.py) skip
# without them; with torch 2.13.0 installed first they add no torch, nvidia-* or triton package.
python3 -m pip install -q --no-build-isolation -e ".[test,interop]"
python3 -m mda_fast env || true
