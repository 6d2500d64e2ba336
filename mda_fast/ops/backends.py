"""The ops' backends: loading, status with the reason, and the choice for one call (one copy for all ops).

Backends: "torch" (each op's reference in mda_fast/ops/op_<op>.py, always there), "cpp"
(backend_cpp.py over the extension mda_fast._C, csrc/cpu/), "cuda" (backend_cuda.py over
mda_fast._C_cuda, csrc/cuda/), "triton" (backend_triton.py over the kernels of the top-level
kernels/ directory, installed as the package mda_fast.kernels). The adapters receive arguments that
the op's front door validated (mda_fast.ops.validate) and that are not empty (empty inputs run the
torch reference); they import this module, never each other.

Auto choice: CUDA tensors -> triton, else cuda, else torch. CPU tensors -> cpp where the op's own
``prefers_cpp`` rule says so (measured, benchmarks/RESULTS.md), else torch. The Triton interpreter
(TRITON_INTERPRET=1) runs CPU tensors only when asked for by name (tests).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from types import ModuleType
from typing import Callable, Optional

import torch

BACKENDS = ("torch", "cpp", "cuda", "triton")
_ADAPTERS = {"cpp": ".backend_cpp", "cuda": ".backend_cuda", "triton": ".backend_triton"}
# kernels/<op>.py, one Triton file per op (kron_inverse_apply.py holds the grouped op too)
KERNEL_FILES = ("project_per_sample_grad", "grad_dot_queries", "ekfac_lambda_accumulate", "kron_inverse_apply",
                "linear_cross_entropy")
_cache: dict[str, tuple[bool, str]] = {}  # backend -> (available, reason); tests may patch it
_kernels: list = []  # [(package module or None, where it is or why not)] once looked for


# ---- loading ----------------------------------------------------------------------------------------
def extension(name: str) -> tuple[Optional[ModuleType], str]:
    """(mda_fast.<name>, "") or (None, why not): the compiled extensions are optional, the package
    runs its torch paths without them. ``MDA_FAST_DISABLE_CPP=1`` hides mda_fast._C (tests)."""
    if name == "_C" and os.environ.get("MDA_FAST_DISABLE_CPP") == "1":
        return None, "disabled by MDA_FAST_DISABLE_CPP=1"
    try:
        return importlib.import_module(f"mda_fast.{name}"), ""
    except ImportError as exc:  # not built
        return None, str(exc)


def _kernel_dirs() -> tuple[str, str]:
    """(installed, source): mda_fast/kernels/ of an installed wheel, kernels/ next to the package
    in a source checkout (setup.py's package_dir maps the latter to the former)."""
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.join(pkg, "kernels"), os.path.join(os.path.dirname(pkg), "kernels")


def _find_kernels() -> tuple[Optional[ModuleType], str]:
    """(the package mda_fast.kernels, its directory) or (None, why not, naming the paths tried).

    An installed package is imported as such; in a source checkout kernels/ is loaded as
    mda_fast.kernels from the tree this mda_fast comes from (not from another install)."""
    installed, source = _kernel_dirs()
    loaded = sys.modules.get("mda_fast.kernels")
    if loaded is not None:  # imported before (by us, or through an install's own finder)
        return loaded, os.path.dirname(loaded.__file__) if loaded.__file__ else str(list(loaded.__path__))
    if os.path.isfile(os.path.join(installed, "__init__.py")):
        return importlib.import_module("mda_fast.kernels"), installed
    checkout = os.path.isfile(os.path.join(os.path.dirname(source), "setup.py"))
    if not (checkout and os.path.isfile(os.path.join(source, "__init__.py"))):
        return None, (f"Triton kernels not found: no {installed}/ (installed package mda_fast.kernels) and no "
                      f"{source}/ in a source checkout; reinstall mda-fast")
    spec = importlib.util.spec_from_file_location("mda_fast.kernels", os.path.join(source, "__init__.py"),
                                                  submodule_search_locations=[source])
    pkg = importlib.util.module_from_spec(spec)
    sys.modules["mda_fast.kernels"] = pkg
    try:
        spec.loader.exec_module(pkg)
    except BaseException:
        del sys.modules["mda_fast.kernels"]
        raise
    sys.modules["mda_fast"].kernels = pkg
    return pkg, source


def kernels() -> tuple[Optional[ModuleType], str]:
    """(mda_fast.kernels with every kernels/<op>.py imported, where from) or (None, why not).

    Importing runs @triton.jit, which fixes interpreter vs compiled mode from TRITON_INTERPRET."""
    if not _kernels:
        where = " or ".join(_kernel_dirs())
        try:
            pkg, where = _find_kernels()
            for name in KERNEL_FILES if pkg is not None else ():
                importlib.import_module(f"mda_fast.kernels.{name}")
            _kernels.append((pkg, where))
        except Exception as exc:  # noqa: BLE001 - a broken kernel file or triton: say where and why
            _kernels.append((None, f"Triton kernels in {where} not importable ({type(exc).__name__}: {exc})"))
    return _kernels[0]


def kernel(op_file: str) -> ModuleType:
    """The module kernels/<op_file>.py; RuntimeError saying why when it cannot be imported."""
    pkg, where = kernels()
    if pkg is None:
        raise RuntimeError(where)
    return sys.modules[f"mda_fast.kernels.{op_file}"]


def adapter(name: str) -> ModuleType:
    """The adapter module of a compiled backend ("cpp", "cuda", "triton")."""
    return importlib.import_module(_ADAPTERS[name], __package__)


# ---- status -----------------------------------------------------------------------------------------
def _cpp() -> tuple[bool, str]:
    ext, why = extension("_C")
    if ext is None:
        return False, (f"C++ extension mda_fast._C not importable ({why}); "
                       "rebuild with `pip install -e . --no-build-isolation`")
    return True, f"mda_fast._C ({ext.simd_path()}, OpenMP {'on' if ext.openmp else 'off'})"


def _cuda() -> tuple[bool, str]:
    ext, why = extension("_C_cuda")
    if ext is None:
        return False, (f"CUDA extension mda_fast._C_cuda not built ({why}); build with nvcc and "
                       "MDA_FAST_CUDA=1 pip install -e . --no-build-isolation")
    if not torch.cuda.is_available():
        return False, "mda_fast._C_cuda is built but torch sees no CUDA device"
    return True, f"mda_fast._C_cuda (CUDA runtime {ext.runtime_version()})"


def triton_modes() -> dict[str, tuple[bool, str]]:
    """{"triton": compiled (needs a GPU), "triton-interpreter": TRITON_INTERPRET=1 on CPU tensors}:
    (usable here, reason); both need triton and the kernels importable."""
    try:
        import triton
    except Exception as exc:  # noqa: BLE001 - triton is optional
        why = f"triton not importable ({type(exc).__name__}: {exc}); pip install triton"
        return {"triton": (False, why), "triton-interpreter": (False, why)}
    pkg, where = kernels()
    if pkg is None:
        return {"triton": (False, where), "triton-interpreter": (False, where)}
    found = f"triton {triton.__version__}, kernels from {where}"
    compiled = (True, f"{found}, on {torch.cuda.get_device_name()}") if torch.cuda.is_available() else \
        (False, f"no CUDA device visible to torch ({found})")
    on = os.environ.get("TRITON_INTERPRET") == "1"
    interp = (True, f"{found}; " + ("TRITON_INTERPRET=1 is set (CPU tensors, slow)" if on else
                                    "set TRITON_INTERPRET=1 to use it (slow, small shapes)"))
    return {"triton": compiled, "triton-interpreter": interp}


def _triton() -> tuple[bool, str]:
    """The "triton" backend: compiled on a GPU, else the interpreter when TRITON_INTERPRET=1."""
    modes = triton_modes()
    if torch.cuda.is_available() or not modes["triton-interpreter"][0]:
        return modes["triton"]
    if os.environ.get("TRITON_INTERPRET") == "1":
        return modes["triton-interpreter"]
    return False, "no CUDA device (set TRITON_INTERPRET=1 to run Triton kernels on the CPU, slowly)"


_STATUS: dict[str, Callable[[], tuple[bool, str]]] = {"cpp": _cpp, "cuda": _cuda, "triton": _triton}


def status(name: str) -> tuple[bool, str]:
    """(available, reason) of one backend; never raises, cached per process."""
    if name == "torch":
        return True, f"plain torch {torch.__version__}"
    if name not in _cache:
        try:
            ok, reason = _STATUS[name]()
        except Exception as exc:  # noqa: BLE001 - a broken build: report, don't crash
            ok, reason = False, f"{type(exc).__name__}: {exc}"
        _cache[name] = (bool(ok), str(reason))
    return _cache[name]


def backend_status() -> dict[str, tuple[bool, str]]:
    """{backend: (available, reason)} regardless of device."""
    return {n: status(n) for n in BACKENDS}


def report() -> dict[str, tuple[bool, str]]:
    """What `mda env` lists: every backend's status, the Triton backend split into its two modes."""
    return {"cpp": status("cpp"), "cuda": status("cuda"), **triton_modes(), "torch": status("torch")}


def _device_ok(name: str, device_type: str) -> bool:
    if name == "torch":
        return True
    if name == "cpp":
        return device_type == "cpu"
    if name == "cuda":
        return device_type == "cuda"
    # triton: GPU, or CPU tensors under the interpreter
    return device_type == "cuda" or (device_type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1")


def available_backends(device="cpu") -> list[str]:
    """Backends usable for tensors on ``device``, in auto-preference order (torch always last)."""
    dt = torch.device(device).type
    order = ("triton", "cuda", "torch") if dt == "cuda" else ("cpp", "triton", "torch")
    return [n for n in order if _device_ok(n, dt) and status(n)[0]]


# ---- choice -----------------------------------------------------------------------------------------
def unusable(backend: str, device_type: str | None = None) -> str | None:
    """Why a backend named by the user cannot run ops here, on ``device_type`` tensors when given
    (None: it can)."""
    if backend not in ("auto",) + BACKENDS:
        return f"is not one of 'auto', {', '.join(map(repr, BACKENDS))}"
    if backend == "auto":
        return None
    ok, reason = status(backend)
    if not ok:
        return f"is not available: {reason}"
    if device_type is not None and not _device_ok(backend, device_type):
        return f"cannot run on {device_type} tensors"
    return None


def choose(backend: str, device: torch.device, *, empty: bool, prefer_cpp: bool,
           has: tuple[str, ...] = BACKENDS) -> str:
    """The backend that runs one call. A named one must be available and able to run on ``device``
    (else ValueError saying why); empty inputs then run the torch reference (nothing to compute).
    ``prefer_cpp``: the op's measured CPU rule for this call (``prefers_cpp`` in its module);
    ``has``: the backends the op implements (auto picks among them; naming another is a ValueError)."""
    if backend != "auto":
        why = unusable(backend, device.type)
        if not why and backend not in has:
            why = f"does not implement this op (it has {', '.join(map(repr, has))})"
        if why:
            raise ValueError(f"backend={backend!r} {why}")
        return "torch" if empty else backend
    if empty:
        return "torch"
    choices = ("triton", "cuda") if device.type == "cuda" else (("cpp",) if prefer_cpp else ())
    return next((name for name in choices if name in has and status(name)[0]), "torch")


def implementation(name: str, op: str, reference: Callable) -> Callable:
    """The function that runs ``op`` on backend ``name``: the op's torch reference, or the adapter's."""
    return reference if name == "torch" else getattr(adapter(name), op)
