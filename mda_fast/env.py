"""What can run here: backends (C++ CPU, CUDA, Triton compiled, Triton interpreter, torch), why a
backend is unavailable, versions and threads. Backs ``mda env``; never raises."""

from __future__ import annotations

import importlib
import os
import platform
import re
import shutil
import subprocess
import sys

BACKEND_ORDER = ("cpp", "cuda", "triton", "triton-interpreter", "torch")
BACKEND_TITLES = {
    "cpp": "C++ CPU extension (mda_fast._C)",
    "cuda": "CUDA extension (mda_fast._C_cuda)",
    "triton": "Triton, compiled (needs a GPU)",
    "triton-interpreter": "Triton interpreter (TRITON_INTERPRET=1, CPU)",
    "torch": "torch reference",
}


def _safe(fn, default=None):
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - a report must not crash
        return default if default is not None else f"error: {type(exc).__name__}: {exc}"


def _version(module: str) -> str | None:
    try:
        return getattr(importlib.import_module(module), "__version__", "unknown")
    except Exception:  # noqa: BLE001
        return None


def cpu_info() -> dict:
    """CPU model name (as lscpu/cpuinfo print it) and logical CPU count."""
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            m = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.M)
            if m:
                model = m.group(1).strip()
    except OSError:
        pass
    return {"model": model, "logical_cpus": os.cpu_count()}


def nvcc_version() -> str | None:
    nvcc = None
    for home in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if home and os.path.isfile(os.path.join(home, "bin", "nvcc")):
            nvcc = os.path.join(home, "bin", "nvcc")
            break
    nvcc = nvcc or shutil.which("nvcc")
    if nvcc is None:
        return None
    out = _safe(lambda: subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=30).stdout, "")
    m = re.search(r"release ([\d.]+)", out or "")
    return m.group(1) if m else "unknown"


def _backends() -> dict[str, tuple[bool, str]]:
    """The ops' own status (mda_fast.ops.backends.report): what the ops' backend choice sees, same reasons."""
    try:  # imported inside the try: an ops package that cannot load is reported, not raised
        from mda_fast.ops import backends

        return backends.report()
    except Exception as exc:  # noqa: BLE001 - a report must not crash
        why = f"mda_fast.ops not importable ({type(exc).__name__}: {exc})"
        return {name: (False, why) for name in BACKEND_ORDER}


def env_report() -> dict:
    """Everything ``mda env`` prints, as plain JSON-able data."""
    # imported here, not at the top: `mda env` must report a missing or broken torch, not fail to import
    import torch

    from mda_fast import __version__

    backends = _backends()
    ext = _safe(lambda: importlib.import_module("mda_fast._C"), "missing")
    threads = {
        "torch": torch.get_num_threads(),
        "cpp_openmp": ext.max_threads() if not isinstance(ext, str) else None,
        "cpp_openmp_compiled": bool(ext.openmp) if not isinstance(ext, str) else None,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
    }
    return {
        "mda_fast": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu_info(),
        "versions": {
            "torch": torch.__version__,
            "torch_cuda": torch.version.cuda,
            "numpy": _version("numpy"),
            "transformers": _version("transformers"),
            "triton": _version("triton"),
            "pybind11": _version("pybind11"),
            "nvcc": nvcc_version(),
            "cpp_compiler": getattr(ext, "compiler", None),
        },
        "cpp_simd": ext.simd_path() if not isinstance(ext, str) else None,
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "threads": threads,
        "backends": {k: {"available": backends[k][0], "reason": backends[k][1]} for k in BACKEND_ORDER},
    }


def format_report(rep: dict) -> str:
    """Human-readable form of :func:`env_report`."""
    lines = [f"mda-fast {rep['mda_fast']}  (python {rep['python']}, {rep['platform']})",
             f"cpu: {rep['cpu']['model']}, {rep['cpu']['logical_cpus']} logical CPUs",
             "gpu: " + (", ".join(rep["cuda_devices"]) or "none visible to torch"), "", "backends:"]
    for name in BACKEND_ORDER:
        b = rep["backends"][name]
        mark = "yes" if b["available"] else "no "
        lines.append(f"  [{mark}] {BACKEND_TITLES[name]:<46} {b['reason']}")
    lines += ["", "versions:"]
    lines += [f"  {k:<13} {v if v is not None else '-'}" for k, v in rep["versions"].items()]
    t = rep["threads"]
    lines += ["", f"threads: torch {t['torch']}, C++ OpenMP {t['cpp_openmp'] if t['cpp_openmp'] is not None else '-'}"
              f" (OpenMP compiled in: {t['cpp_openmp_compiled']}), OMP_NUM_THREADS={t['OMP_NUM_THREADS'] or 'unset'}",
              f"C++ micro-kernel: {rep['cpp_simd'] or '-'}"]
    return "\n".join(lines)
