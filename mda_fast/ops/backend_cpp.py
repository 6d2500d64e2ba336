"""C++ CPU backend ("cpp"): thin wrappers around the pybind11 extension ``mda_fast._C``.

Every function validates its arguments with ``validate`` (device CPU, dtype fp32/bf16/fp16,
shapes, finite damping) and allocates outputs with torch BEFORE any call into C++; the extension
only sees raw addresses, shapes and element strides of fp32 buffers. bf16/fp16 inputs are upcast
to fp32 here (bf16 matmul on this class of CPU is ~100x slower than fp32, so converting once is the
fast path); accumulation and outputs are fp32. ``a`` and ``g`` may be non-contiguous: their
strides go to the kernels as is.
Threads: ``torch.get_num_threads()`` (so ``torch.set_num_threads`` governs both).

Set ``MDA_FAST_DISABLE_CPP=1`` to make this backend report itself unavailable (tests of the
torch fallback).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Optional

import torch

from . import validate


def import_extension(name: str) -> tuple[Optional[ModuleType], str]:
    """(mda_fast.<name>, "") or (None, why not): the compiled extensions are optional, the package
    runs its torch paths without them."""
    try:
        return importlib.import_module(f"mda_fast.{name}"), ""
    except ImportError as exc:  # not built
        return None, str(exc)


if os.environ.get("MDA_FAST_DISABLE_CPP") == "1":
    _C, _IMPORT_ERROR = None, "disabled by MDA_FAST_DISABLE_CPP=1"
else:
    _C, _IMPORT_ERROR = import_extension("_C")


def available() -> tuple[bool, str]:
    """(usable, reason): reason says why not, or which SIMD path / threads are used."""
    if _C is None:
        return False, (f"C++ extension mda_fast._C not importable ({_IMPORT_ERROR}); "
                       "rebuild with `pip install -e . --no-build-isolation`")
    return True, f"mda_fast._C ({_C.simd_path()}, OpenMP {'on' if _C.openmp else 'off'})"


# ---- helpers ------------------------------------------------------------------------------------------
def _f32(x: torch.Tensor) -> torch.Tensor:
    """fp32 view or copy; keeps strides of fp32 tensors (the kernels take strides)."""
    return x if x.dtype == torch.float32 else x.float()


def _dense(x: torch.Tensor) -> torch.Tensor:
    return _f32(x).contiguous()


def _activations(a, g) -> tuple[torch.Tensor, torch.Tensor, int, int, int, int]:
    B, T, I, O = validate.activations(a, g, device_type="cpu")
    return _f32(a), _f32(g), B, T, I, O


def _strides(x: torch.Tensor) -> tuple[int, int, int]:
    return tuple(int(s) for s in x.stride())  # type: ignore[return-value]


def _projection(P, name: str, dim: int, dimname: str):
    """(fp32 contiguous tensor or None, seed, k) for a dense [dim, k] CPU tensor or a SeededProjection
    (duck-typed: anything with ``dim``, ``k`` and ``seed``)."""
    P, seed, k = validate.projection(P, name, dim, dimname, torch.device("cpu"))
    return (None if P is None else _dense(P)), seed, k


def _threads() -> int:
    return max(1, torch.get_num_threads())


def _ext():
    if _C is None:
        raise RuntimeError(available()[1])
    return _C


# ---- op 1 ---------------------------------------------------------------------------------------------
def project_per_sample_grad(a, g, P_in, P_out) -> torch.Tensor:
    """[B, ko, ki] fp32 = sum_t (P_out^T g_bt)(P_in^T a_bt)^T for a [B,T,I], g [B,T,O].

    P_in [I, ki] / P_out [O, ko]: tensors or seeded projections generated inside the kernel.
    Cost 2*B*T*(I*ki + O*ko) + 2*B*T*ko*ki FLOPs; the [B, O, I] gradient never exists.
    """
    a, g, B, T, I, O = _activations(a, g)
    pin, pin_seed, ki = _projection(P_in, "P_in", I, "I")
    pout, pout_seed, ko = _projection(P_out, "P_out", O, "O")
    out = torch.zeros(B, ko, ki, dtype=torch.float32)
    if a.numel() == 0 or g.numel() == 0:
        return out
    _ext().project_per_sample_grad(
        a.data_ptr(), _strides(a), g.data_ptr(), _strides(g), B, T, I, O,
        0 if pin is None else pin.data_ptr(), pin_seed, ki,
        0 if pout is None else pout.data_ptr(), pout_seed, ko, out.data_ptr(), _threads())
    return out


# ---- op 2 ---------------------------------------------------------------------------------------------
def grad_dot_route(B: int, T: int, O: int, I: int, n: int) -> str:
    """"factored" or "materialized" for grad_dot_queries, whichever needs fewer FLOPs.

    factored:     per query, Y = a Q_n^T over all B*T tokens, then <Y_bt, g_bt>
                  C_f = 2*B*n*T*O*I + 2*B*n*T*O
    materialized: per sample, G_b = g_b^T a_b (one [O, I] tile per thread), then <G_b, Q_n>
                  C_m = 2*B*T*O*I + 2*B*n*O*I
    With dense queries factored wins only for n == 1 or T == 1 (tiny rows / a single query).
    """
    c_f = 2 * B * n * T * O * I + 2 * B * n * T * O
    c_m = 2 * B * T * O * I + 2 * B * n * O * I
    return "factored" if c_f < c_m else "materialized"


def grad_dot_queries(a, g, Q, route: str = "auto") -> torch.Tensor:
    """[B, n] fp32 = sum_t g_bt^T Q_q a_bt = <G_b, Q_q>; a [B,T,I], g [B,T,O], Q [n,O,I].

    ``route``: "auto" (grad_dot_route's FLOP rule), "factored" or "materialized".
    """
    a, g, B, T, I, O = _activations(a, g)
    n = validate.queries(Q, O, I, a.device)
    if route not in ("auto", "factored", "materialized"):
        raise ValueError(f"route must be 'auto', 'factored' or 'materialized', got {route!r}")
    out = torch.zeros(B, n, dtype=torch.float32)
    if out.numel() == 0 or a.numel() == 0 or g.numel() == 0:
        return out
    if route == "auto":
        route = grad_dot_route(B, T, O, I, n)
    sa = _strides(a)
    if route == "factored":  # the factored kernel reads a as [B*T, I] rows
        # explicit strides: torch ignores the strides of size-1 dims when calling a tensor contiguous
        a, sa = a.contiguous(), (T * I, I, 1)
    Q = _dense(Q)
    _ext().grad_dot_queries(a.data_ptr(), sa, g.data_ptr(), _strides(g), B, T, I, O,
                            Q.data_ptr(), n, out.data_ptr(), route, _threads())
    return out


# ---- op 3 ---------------------------------------------------------------------------------------------
def lambda_route(T: int, O: int, I: int) -> str:
    """"inputs" (rotate a, g first) or "gradients" (rotate each G_b) for ekfac_lambda_accumulate.

    Per sample: inputs C = 2*T*(I^2 + O^2) + 2*T*O*I; gradients C = 2*T*O*I + 2*O*I*(O + I).
    """
    return "inputs" if T * (I * I + O * O) < O * I * (O + I) else "gradients"


def ekfac_lambda_accumulate(a, g, Q_A, Q_S, out, route: str = "auto") -> torch.Tensor:
    """out[O, I] += sum_b (Q_S^T G_b Q_A)^2 in place (G_b = sum_t g_bt a_bt^T); returns out.

    One G_b per thread at a time; per-thread partial sums are reduced in a fixed order.
    """
    a, g, B, T, I, O = _activations(a, g)
    validate.lambda_operands(Q_A, Q_S, out, I, O, a.device)
    if route not in ("auto", "inputs", "gradients"):
        raise ValueError(f"route must be 'auto', 'inputs' or 'gradients', got {route!r}")
    if a.numel() == 0 or g.numel() == 0:
        return out
    if route == "auto":
        route = lambda_route(T, O, I)
    QA, QS = _dense(Q_A), _dense(Q_S)
    dst = out if out.is_contiguous() else torch.zeros(O, I, dtype=torch.float32)
    _ext().ekfac_lambda_accumulate(a.data_ptr(), _strides(a), g.data_ptr(), _strides(g), B, T, I, O,
                                   QA.data_ptr(), QS.data_ptr(), dst.data_ptr(),
                                   "factored" if route == "inputs" else "materialized", _threads())
    if dst is not out:
        out += dst
    return out


# ---- op 4 ---------------------------------------------------------------------------------------------
def kron_inverse_apply_grouped(blocks) -> list[torch.Tensor]:
    """kron_inverse_apply for a list of (Q_A, Q_S, lam, V, damping) blocks of any shapes, in one
    parallel region over all (block, query) pairs. Returns a list of [n, O, I] fp32 tensors."""
    blocks = validate.kron_blocks(blocks, device_type="cpu")
    dense, outs, args = [], [], []
    for blk in blocks:
        QA, QS, lam, V = (_dense(x) for x in blk[:4])
        n, O, I = V.shape
        out = torch.empty(n, O, I, dtype=torch.float32)
        outs.append(out)
        dense.append((QA, QS, lam, V))  # keep alive until the call returns
        if out.numel():
            args.append((QA.data_ptr(), QS.data_ptr(), lam.data_ptr(), V.data_ptr(), out.data_ptr(), O, I, n, blk[4]))
    if args:
        _ext().kron_inverse_apply_grouped(args, _threads())
    return outs


def kron_inverse_apply(Q_A, Q_S, lam, V, damping) -> torch.Tensor:
    """[n, O, I] fp32 = Q_S [(Q_S^T V_q Q_A) / (lam + damping)] Q_A^T for each query q."""
    return kron_inverse_apply_grouped([(Q_A, Q_S, lam, V, damping)])[0]
