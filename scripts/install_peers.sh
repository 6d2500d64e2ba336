#!/usr/bin/env bash
# Install the peers of benchmarks/bench_peers.py (kronfluence 1.0.1) into the current Python, keeping
# its torch: kronfluence's requirements except torchvision (never imported; pip would replace a CPU
# torch with a CUDA build to satisfy it) with torch pinned, then kronfluence --no-deps, then a check
# that torch.__version__ is unchanged (scripts/torch_safe.py). Exit 1 if torch would or did change.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" scripts/torch_safe.py install-peers
