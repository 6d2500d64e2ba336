"""One front door per op: validate once, pick a backend, call it.

Backends are modules exposing ``available() -> (bool, reason)`` and the five op functions:
"torch" (mda_fast.ops.reference), "cpp" (backend_cpp), "cuda" (backend_cuda), "triton"
(backend_triton). They receive validated arguments: tensors on one device, possibly
non-contiguous and of dtype fp32/bf16/fp16; projections as tensors or SeededProjection.

Auto choice: CUDA tensors -> triton, else cuda, else torch. CPU tensors -> cpp where
``CPU_PREFERS_CPP[op]`` (set from benchmarks/RESULTS.md), else torch. The Triton interpreter
(TRITON_INTERPRET=1) runs CPU tensors only when asked for by name (tests).
"""

from __future__ import annotations

import importlib
import math
import numbers
import os

import torch

from . import reference
from .projection import SeededProjection

FLOATS = (torch.float32, torch.bfloat16, torch.float16)
BACKENDS = ("torch", "cpp", "cuda", "triton")
_MODULES = {"cpp": ".backend_cpp", "cuda": ".backend_cuda", "triton": ".backend_triton"}
# Per op: use the C++ backend for CPU tensors when it is built; from benchmarks/RESULTS.md
# (noisy run: revisit on an idle machine).
CPU_PREFERS_CPP = {
    "project_per_sample_grad": True,
    "grad_dot_queries": False,
    "ekfac_lambda_accumulate": True,
    "kron_inverse_apply": True,
    "kron_inverse_apply_grouped": True,
}
_cache: dict[str, tuple[object, bool, str]] = {}


def _load(name: str):
    """(module, ok, reason) for a backend; never raises."""
    if name == "torch":
        return reference, True, "plain torch"
    if name not in _cache:
        try:
            mod = importlib.import_module(_MODULES[name], __package__)
            ok, reason = mod.available()
        except Exception as e:  # missing extension, no triton, broken build: report, don't crash
            mod, ok, reason = None, False, f"{type(e).__name__}: {e}"
        _cache[name] = (mod, bool(ok), str(reason))
    return _cache[name]


def _device_ok(name: str, device_type: str) -> bool:
    if name == "torch":
        return True
    if name == "cpp":
        return device_type == "cpu"
    if name == "cuda":
        return device_type == "cuda"
    # triton: GPU, or CPU tensors under the interpreter
    return device_type == "cuda" or (device_type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1")


def backend_status() -> dict[str, tuple[bool, str]]:
    """{backend: (available, reason)} regardless of device (for `mda env`)."""
    return {n: _load(n)[1:] for n in BACKENDS}


def available_backends(device="cpu") -> list[str]:
    """Backends usable for tensors on ``device``, in auto-preference order (torch always last)."""
    dt = torch.device(device).type
    order = ("triton", "cuda", "torch") if dt == "cuda" else ("cpp", "triton", "torch")
    return [n for n in order if _device_ok(n, dt) and _load(n)[1]]


def _pick(op: str, backend: str, device: torch.device, empty: bool):
    if backend not in ("auto",) + BACKENDS:
        raise ValueError(f"backend must be one of 'auto', {', '.join(map(repr, BACKENDS))}; got {backend!r}")
    if backend == "auto":
        if empty:
            return reference
        if device.type == "cuda":
            choices = ("triton", "cuda")
        else:
            choices = ("cpp",) if CPU_PREFERS_CPP.get(op, False) else ()
        for name in choices:
            mod, ok, _ = _load(name)
            if ok:
                return mod
        return reference
    mod, ok, reason = _load(backend)
    if not ok:
        raise ValueError(f"backend={backend!r} is not available: {reason}")
    if not _device_ok(backend, device.type):
        raise ValueError(f"backend={backend!r} cannot run on {device.type} tensors")
    return mod


# ---- validation ----------------------------------------------------------------------------------
def _tensor(x, name: str, shape: str, ndim: int, device=None, dtypes=FLOATS) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor {shape}, got {type(x).__name__}")
    if x.dim() != ndim:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(x.shape)}")
    if x.dtype not in dtypes:
        raise ValueError(f"{name} must have dtype in {[str(d) for d in dtypes]}, got {x.dtype}")
    if device is not None and x.device != device:
        raise ValueError(f"{name} is on {x.device} but the other inputs are on {device}")
    return x


def _dims(x, name: str, shape: str, expected: tuple):
    if tuple(x.shape) != tuple(expected):
        raise ValueError(f"{name} must have shape {shape} = {tuple(expected)}, got {tuple(x.shape)}")


def _activations(a, g):
    _tensor(a, "a", "[B, T, I]", 3)
    _tensor(g, "g", "[B, T, O]", 3, a.device)
    if g.shape[:2] != a.shape[:2]:
        raise ValueError(f"g must have shape [B, T, O] with B, T = {tuple(a.shape[:2])} from a, got {tuple(g.shape)}")
    if g.dtype != a.dtype:
        raise ValueError(f"g must have the same dtype as a ({a.dtype}), got {g.dtype}")
    return a.shape[0], a.shape[1], a.shape[2], g.shape[2]


def _projection(P, name: str, dim: int, dimname: str, device):
    if isinstance(P, SeededProjection):
        if P.dim != dim:
            raise ValueError(f"{name} must have shape [{dimname}, k] with {dimname} = {dim}, got SeededProjection{P.shape}")
        return P.k
    _tensor(P, name, f"[{dimname}, k]", 2, device)
    if P.shape[0] != dim or P.shape[1] < 1:
        raise ValueError(f"{name} must have shape [{dimname}, k] with {dimname} = {dim}, k >= 1, got {tuple(P.shape)}")
    return P.shape[1]


def _kron(Q_A, Q_S, lam, V, damping, where: str = ""):
    _tensor(V, f"{where}V", "[n, O, I]", 3)
    n, O, I = V.shape
    _tensor(Q_A, f"{where}Q_A", "[I, I]", 2, V.device)
    _tensor(Q_S, f"{where}Q_S", "[O, O]", 2, V.device)
    _tensor(lam, f"{where}lam", "[O, I]", 2, V.device)
    _dims(Q_A, f"{where}Q_A", "[I, I]", (I, I))
    _dims(Q_S, f"{where}Q_S", "[O, O]", (O, O))
    _dims(lam, f"{where}lam", "[O, I]", (O, I))
    if isinstance(damping, torch.Tensor) and damping.numel() == 1:
        damping = damping.item()
    if isinstance(damping, bool) or not isinstance(damping, numbers.Real) or not math.isfinite(float(damping)):
        raise ValueError(f"{where}damping must be a finite real number, got {damping!r}")
    return float(damping)


# ---- ops -----------------------------------------------------------------------------------------
def project_per_sample_grad(a, g, P_in, P_out, *, backend: str = "auto") -> torch.Tensor:
    """[B, ko, ki] fp32 = sum_t (P_out^T g_bt)(P_in^T a_bt)^T = P_out^T G_b P_in, no [B, O, I] held.

    a [B, T, I], g [B, T, O]; P_in [I, ki], P_out [O, ko]: tensors or SeededProjection.
    """
    B, T, I, O = _activations(a, g)
    _projection(P_in, "P_in", I, "I", a.device)
    _projection(P_out, "P_out", O, "O", a.device)
    mod = _pick("project_per_sample_grad", backend, a.device, a.numel() == 0 or g.numel() == 0)
    return mod.project_per_sample_grad(a, g, P_in, P_out)


def grad_dot_queries(a, g, Q, *, backend: str = "auto") -> torch.Tensor:
    """[B, n] fp32 = sum_t g_bt^T Q_n a_bt = <G_b, Q_n>. a [B, T, I], g [B, T, O], Q [n, O, I].

    The torch backend routes factored vs materialized by reference.grad_dot_flops (costs written
    there); the compiled backends compute G_b tiles on chip and contract them with Q directly.
    """
    B, T, I, O = _activations(a, g)
    _tensor(Q, "Q", "[n, O, I]", 3, a.device)
    if Q.shape[1:] != (O, I):
        raise ValueError(f"Q must have shape [n, O, I] with O, I = {(O, I)}, got {tuple(Q.shape)}")
    mod = _pick("grad_dot_queries", backend, a.device, a.numel() == 0 or Q.numel() == 0)
    return mod.grad_dot_queries(a, g, Q)


def ekfac_lambda_accumulate(a, g, Q_A, Q_S, out, *, backend: str = "auto") -> torch.Tensor:
    """out[O, I] (fp32, in place) += sum_b (Q_S^T G_b Q_A)^2; returns out.

    a [B, T, I], g [B, T, O], Q_A [I, I], Q_S [O, O] (eigenbases, columns = eigenvectors).
    """
    B, T, I, O = _activations(a, g)
    _tensor(Q_A, "Q_A", "[I, I]", 2, a.device)
    _tensor(Q_S, "Q_S", "[O, O]", 2, a.device)
    _tensor(out, "out", "[O, I]", 2, a.device, dtypes=(torch.float32,))
    _dims(Q_A, "Q_A", "[I, I]", (I, I))
    _dims(Q_S, "Q_S", "[O, O]", (O, O))
    _dims(out, "out", "[O, I]", (O, I))
    mod = _pick("ekfac_lambda_accumulate", backend, a.device, a.numel() == 0 or g.numel() == 0)
    return mod.ekfac_lambda_accumulate(a, g, Q_A, Q_S, out)


def kron_inverse_apply(Q_A, Q_S, lam, V, damping, *, backend: str = "auto") -> torch.Tensor:
    """[n, O, I] fp32 = Q_S [(Q_S^T V_n Q_A) / (lam + damping)] Q_A^T.

    Q_A [I, I], Q_S [O, O], lam [O, I], V [n, O, I], damping a finite float.
    """
    damping = _kron(Q_A, Q_S, lam, V, damping)
    mod = _pick("kron_inverse_apply", backend, V.device, V.numel() == 0)
    return mod.kron_inverse_apply(Q_A, Q_S, lam, V, damping)


def kron_inverse_apply_grouped(blocks, *, backend: str = "auto") -> list[torch.Tensor]:
    """kron_inverse_apply over many blocks of different shapes (one launch per stage on GPU).

    blocks: list of (Q_A, Q_S, lam, V, damping) tuples, all on one device. Returns a list of [n, O, I].
    """
    if not isinstance(blocks, (list, tuple)):
        raise ValueError(f"blocks must be a list of (Q_A, Q_S, lam, V, damping) tuples, got {type(blocks).__name__}")
    checked, device = [], None
    for k, blk in enumerate(blocks):
        if not isinstance(blk, (list, tuple)) or len(blk) != 5:
            raise ValueError(f"blocks[{k}] must be a (Q_A, Q_S, lam, V, damping) tuple")
        Q_A, Q_S, lam, V, damping = blk
        damping = _kron(Q_A, Q_S, lam, V, damping, f"blocks[{k}].")
        device = device or V.device
        if V.device != device:
            raise ValueError(f"blocks[{k}].V is on {V.device} but blocks[0] is on {device}")
        checked.append((Q_A, Q_S, lam, V, damping))
    if not checked:
        return []
    empty = any(b[3].numel() == 0 for b in checked)
    mod = _pick("kron_inverse_apply_grouped", backend, device, empty)
    return mod.kron_inverse_apply_grouped(checked)
