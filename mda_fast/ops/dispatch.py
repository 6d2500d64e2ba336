"""One front door per op: validate once (mda_fast.ops.validate), pick a backend, call it.

Backends are modules exposing ``available() -> (bool, reason)`` and the five op functions:
"torch" (mda_fast.ops.reference), "cpp" (backend_cpp), "cuda" (backend_cuda), "triton"
(backend_triton). They receive validated arguments: tensors on one device, possibly
non-contiguous and of dtype fp32/bf16/fp16; projections as tensors or SeededProjection.

Auto choice: CUDA tensors -> triton, else cuda, else torch. CPU tensors -> cpp where
``CPU_PREFERS_CPP[op]`` says so (measured, benchmarks/RESULTS.md), else torch. The Triton interpreter
(TRITON_INTERPRET=1) runs CPU tensors only when asked for by name (tests).
"""

from __future__ import annotations

import importlib
import os

import torch

from . import reference, validate

BACKENDS = ("torch", "cpp", "cuda", "triton")
_MODULES = {"cpp": ".backend_cpp", "cuda": ".backend_cuda", "triton": ".backend_triton"}
L3_BYTES = 8 << 20  # this CPU's last-level cache; a larger one only moves the crossover


def _op2_q_outgrows_l3(n: int, O: int, I: int) -> bool:
    """C++ op 2 streams the queries once per group of samples, torch's materialized route once per
    sample: it pays off (1.09-1.17x torch, 2 threads) once Q's 4*n*O*I bytes no longer fit in L3,
    and ties or loses (0.90-1.0x) below that, or with one thread (no second core to hide the dots)."""
    return torch.get_num_threads() > 1 and 4 * n * O * I > L3_BYTES


# CPU routing, from benchmarks/RESULTS.md (2026-11-24, 1 and 2 threads, quiet machine). Ops 2-4 are
# GEMM-bound and MKL runs them at 85-100% of peak, as does our C++; cpp is chosen only where it was
# ahead in both runs. A callable decides per call from (n, O, I).
CPU_PREFERS_CPP = {
    "project_per_sample_grad": True,       # 1.05-1.11x torch at 2 threads, 1.0-1.2x at 1
    "grad_dot_queries": _op2_q_outgrows_l3,  # (n, O, I) of the call
    "ekfac_lambda_accumulate": False,      # 0.93-1.0x torch at 2 threads (ties at 1)
    "kron_inverse_apply": False,           # 0.95-1.0x torch at 2 threads (ties at 1)
    "kron_inverse_apply_grouped": True,    # one parallel region over all blocks: 1.01-1.08x
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


def _pick(op: str, backend: str, device: torch.device, empty: bool, shape: tuple = ()):
    if backend not in ("auto",) + BACKENDS:
        raise ValueError(f"backend must be one of 'auto', {', '.join(map(repr, BACKENDS))}; got {backend!r}")
    if backend == "auto":
        if empty:
            return reference
        if device.type == "cuda":
            choices = ("triton", "cuda")
        else:
            prefer = CPU_PREFERS_CPP.get(op, False)
            choices = ("cpp",) if (prefer(*shape) if callable(prefer) else prefer) else ()
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


# ---- ops -----------------------------------------------------------------------------------------
def project_per_sample_grad(a, g, P_in, P_out, *, backend: str = "auto") -> torch.Tensor:
    """[B, ko, ki] fp32 = sum_t (P_out^T g_bt)(P_in^T a_bt)^T = P_out^T G_b P_in, no [B, O, I] held.

    a [B, T, I], g [B, T, O]; P_in [I, ki], P_out [O, ko]: tensors or SeededProjection.
    """
    B, T, I, O = validate.activations(a, g, same_dtype=True)
    validate.projection(P_in, "P_in", I, "I", a.device, duck_typed=False)
    validate.projection(P_out, "P_out", O, "O", a.device, duck_typed=False)
    mod = _pick("project_per_sample_grad", backend, a.device, a.numel() == 0 or g.numel() == 0)
    return mod.project_per_sample_grad(a, g, P_in, P_out)


def grad_dot_queries(a, g, Q, *, backend: str = "auto") -> torch.Tensor:
    """[B, n] fp32 = sum_t g_bt^T Q_n a_bt = <G_b, Q_n>. a [B, T, I], g [B, T, O], Q [n, O, I].

    The torch backend routes factored vs materialized by reference.grad_dot_flops (costs written
    there); the compiled backends compute G_b tiles on chip and contract them with Q directly.
    """
    B, T, I, O = validate.activations(a, g, same_dtype=True)
    n = validate.queries(Q, O, I, a.device)
    mod = _pick("grad_dot_queries", backend, a.device, a.numel() == 0 or Q.numel() == 0, (n, O, I))
    return mod.grad_dot_queries(a, g, Q)


def ekfac_lambda_accumulate(a, g, Q_A, Q_S, out, *, backend: str = "auto") -> torch.Tensor:
    """out[O, I] (fp32, in place) += sum_b (Q_S^T G_b Q_A)^2; returns out.

    a [B, T, I], g [B, T, O], Q_A [I, I], Q_S [O, O] (eigenbases, columns = eigenvectors).
    """
    B, T, I, O = validate.activations(a, g, same_dtype=True)
    validate.lambda_operands(Q_A, Q_S, out, I, O, a.device)
    mod = _pick("ekfac_lambda_accumulate", backend, a.device, a.numel() == 0 or g.numel() == 0)
    return mod.ekfac_lambda_accumulate(a, g, Q_A, Q_S, out)


def kron_inverse_apply(Q_A, Q_S, lam, V, damping, *, backend: str = "auto") -> torch.Tensor:
    """[n, O, I] fp32 = Q_S [(Q_S^T V_n Q_A) / (lam + damping)] Q_A^T.

    Q_A [I, I], Q_S [O, O], lam [O, I], V [n, O, I], damping a finite float.
    """
    damping = validate.kron_block(Q_A, Q_S, lam, V, damping)[4]
    mod = _pick("kron_inverse_apply", backend, V.device, V.numel() == 0)
    return mod.kron_inverse_apply(Q_A, Q_S, lam, V, damping)


def kron_inverse_apply_grouped(blocks, *, backend: str = "auto") -> list[torch.Tensor]:
    """kron_inverse_apply over many blocks of different shapes (one launch per stage on GPU).

    blocks: list of (Q_A, Q_S, lam, V, damping) tuples, all on one device. Returns a list of [n, O, I].
    """
    checked = validate.kron_blocks(blocks)
    if not checked:
        return []
    empty = any(b[3].numel() == 0 for b in checked)
    mod = _pick("kron_inverse_apply_grouped", backend, checked[0][3].device, empty)
    return mod.kron_inverse_apply_grouped(checked)
