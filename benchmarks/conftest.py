"""pytest-benchmark setup for the op benchmarks (run: pytest benchmarks --benchmark-enable).

Measures this machine's fp32 matmul peak in the same run (torch matmul 2048^3, best of 5) and
records the machine into every benchmark's extra_info, with GFLOP/s and % of that peak.
Parametrizes ``shape`` (Pythia head / whole-layer block shapes) and ``impl`` for the bench files.
"""

import os
import platform
import time

import sys

import pytest
import torch

import mda_fast.ops as ops

# The benchmarks' naive baselines are the tests' oracles (tests/oracles.py), outside the product.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

# Block (O, I) per Pythia model: "head" = one head's QK block [2*d_head, d_model];
# "layer" = the whole attention input projection query_key_value [3*d_model, d_model].
PYTHIA = {"14m": (128, 32), "70m": (512, 64), "160m": (768, 64), "1b": (2048, 256)}
CUDA = torch.cuda.is_available()
BT = (16, 1024) if CUDA else (4, 256)  # rows x tokens per batch; bounded on the CPU
LARGE = CUDA or os.environ.get("MDA_BENCH_LARGE") == "1"


def shapes():
    out = []
    for name, (d, dh) in PYTHIA.items():
        out.append((f"{name}-head", 2 * dh, d))
        if name != "1b" or LARGE:  # 1b whole layer: [6144, 2048] x B*T is minutes on 2 CPU cores
            out.append((f"{name}-layer", 3 * d, d))
    return out


def pytest_collect_file(file_path, parent):
    # bench_*.py are not test_*.py: collect them here unless named on the command line.
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)


def pytest_generate_tests(metafunc):
    if "shape" in metafunc.fixturenames:
        s = shapes()
        metafunc.parametrize("shape", [x[1:] for x in s], ids=[x[0] for x in s])
    if "impl" in metafunc.fixturenames:
        dev = "cuda" if CUDA else "cpu"
        impls = ["naive", "torch"] + [b for b in ops.available_backends(dev) if b != "torch"]
        metafunc.parametrize("impl", impls)


@pytest.fixture(scope="session")
def device():
    return "cuda" if CUDA else "cpu"


def _sync():
    if CUDA:
        torch.cuda.synchronize()


@pytest.fixture(scope="session")
def machine():
    """Machine description + measured fp32 matmul peak (GFLOP/s)."""
    dev = "cuda" if CUDA else "cpu"
    n = 4096 if CUDA else 2048
    x, y = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    best = float("inf")
    for _ in range(5):
        _sync()
        t = time.perf_counter()
        torch.matmul(x, y)
        _sync()
        best = min(best, time.perf_counter() - t)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "peak_fp32_gflops": round(2 * n**3 / best / 1e9, 1),
            "peak_matmul_n": n}
    if CUDA:
        info["gpu"] = torch.cuda.get_device_name()
    return info


@pytest.fixture
def run(benchmark, machine):
    """run(fn, flops, **info): benchmark fn (pedantic, few rounds), record GFLOP/s and % of peak."""

    def _run(fn, flops, rounds=5, **info):
        def call():
            fn()
            _sync()

        benchmark.pedantic(call, rounds=rounds, warmup_rounds=1, iterations=1)
        best = benchmark.stats.stats.min
        gflops = flops / best / 1e9
        benchmark.extra_info.update(machine)
        benchmark.extra_info.update(info)
        benchmark.extra_info.update({"gflop": round(flops / 1e9, 3), "gflops": round(gflops, 1),
                                     "pct_peak": round(100 * gflops / machine["peak_fp32_gflops"], 1)})

    return _run
