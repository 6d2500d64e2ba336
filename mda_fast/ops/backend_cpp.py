"""C++ CPU backend ("cpp"): thin wrappers around the pybind11 extension ``mda_fast._C``.

Every function validates its arguments (device CPU, dtype fp32/bf16/fp16, shapes, finite damping)
and allocates outputs with torch BEFORE any call into C++; the extension only sees raw addresses,
shapes and element strides of fp32 buffers. bf16/fp16 inputs are upcast to fp32 here (bf16 matmul
on this class of CPU is ~100x slower than fp32, so converting once is the fast path); accumulation
and outputs are fp32. ``a`` and ``g`` may be non-contiguous: their strides go to the kernels as is.
Threads: ``torch.get_num_threads()`` (so ``torch.set_num_threads`` governs both).

Set ``MDA_FAST_DISABLE_CPP=1`` to make this backend report itself unavailable (tests of the
torch fallback).
"""

from __future__ import annotations

import math
import os

import torch

FLOATS = (torch.float32, torch.bfloat16, torch.float16)
MASK32 = 0xFFFFFFFF

try:  # the extension is optional: the package runs its torch paths without it
    if os.environ.get("MDA_FAST_DISABLE_CPP") == "1":
        raise ImportError("disabled by MDA_FAST_DISABLE_CPP=1")
    from mda_fast import _C  # type: ignore[attr-defined]

    _IMPORT_ERROR = ""
except ImportError as exc:  # not built, or disabled
    _C = None
    _IMPORT_ERROR = str(exc)


def available() -> tuple[bool, str]:
    """(usable, reason): reason says why not, or which SIMD path / threads are used."""
    if _C is None:
        return False, (f"C++ extension mda_fast._C not importable ({_IMPORT_ERROR}); "
                       "rebuild with `pip install -e . --no-build-isolation`")
    return True, f"mda_fast._C ({_C.simd_path()}, OpenMP {'on' if _C.openmp else 'off'})"


# ---- validation helpers -----------------------------------------------------------------------------
def _tensor_any(x, name: str, shape: str, ndim: int) -> torch.Tensor:
    """Type, rank and dtype checks shared with the CUDA backend (any device)."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape {shape}, got {type(x).__name__}")
    if x.dim() != ndim:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(x.shape)}")
    if x.dtype not in FLOATS:
        raise ValueError(f"{name} must be float32, bfloat16 or float16 (shape {shape}), got {x.dtype}")
    return x


def _tensor(x, name: str, shape: str, ndim: int) -> torch.Tensor:
    _tensor_any(x, name, shape, ndim)
    if x.device.type != "cpu":
        raise ValueError(f"{name} must be a CPU tensor for the cpp backend, got device {x.device}")
    return x


def _shape(x: torch.Tensor, name: str, shape: str, expected: tuple) -> None:
    if tuple(x.shape) != tuple(expected):
        raise ValueError(f"{name} must have shape {shape} = {tuple(expected)}, got {tuple(x.shape)}")


def _f32(x: torch.Tensor) -> torch.Tensor:
    """fp32 view or copy; keeps strides of fp32 tensors (the kernels take strides)."""
    return x if x.dtype == torch.float32 else x.float()


def _dense(x: torch.Tensor) -> torch.Tensor:
    return _f32(x).contiguous()


def _activations(a, g) -> tuple[torch.Tensor, torch.Tensor, int, int, int, int]:
    _tensor(a, "a", "[B, T, I]", 3)
    _tensor(g, "g", "[B, T, O]", 3)
    if g.shape[:2] != a.shape[:2]:
        raise ValueError(f"g must have shape [B, T, O] with B, T = {tuple(a.shape[:2])} from a, got {tuple(g.shape)}")
    B, T, I = a.shape
    return _f32(a), _f32(g), B, T, I, g.shape[2]


def _strides(x: torch.Tensor) -> tuple[int, int, int]:
    return tuple(int(s) for s in x.stride())  # type: ignore[return-value]


def _projection(P, name: str, dim: int, dimname: str):
    """(tensor or None, seed, k) for a dense [dim, k] tensor or a SeededProjection (duck-typed)."""
    if all(hasattr(P, attr) for attr in ("dim", "k", "seed")) and not isinstance(P, torch.Tensor):
        if int(P.dim) != dim or int(P.k) < 1:
            raise ValueError(f"{name} must have shape [{dimname}, k] with {dimname} = {dim}, got "
                             f"SeededProjection(dim={P.dim}, k={P.k})")
        return None, int(P.seed) & MASK32, int(P.k)
    _tensor(P, name, f"[{dimname}, k]", 2)
    if P.shape[0] != dim or P.shape[1] < 1:
        raise ValueError(f"{name} must have shape [{dimname}, k] with {dimname} = {dim}, k >= 1, got {tuple(P.shape)}")
    return _dense(P), 0, int(P.shape[1])


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
    _tensor(Q, "Q", "[n, O, I]", 3)
    if tuple(Q.shape[1:]) != (O, I):
        raise ValueError(f"Q must have shape [n, O, I] with O, I = {(O, I)}, got {tuple(Q.shape)}")
    if route not in ("auto", "factored", "materialized"):
        raise ValueError(f"route must be 'auto', 'factored' or 'materialized', got {route!r}")
    n = Q.shape[0]
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
                            Q.data_ptr(), n, out.data_ptr(), route == "factored", _threads())
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
    _tensor(Q_A, "Q_A", "[I, I]", 2)
    _tensor(Q_S, "Q_S", "[O, O]", 2)
    _shape(Q_A, "Q_A", "[I, I]", (I, I))
    _shape(Q_S, "Q_S", "[O, O]", (O, O))
    if not isinstance(out, torch.Tensor) or out.device.type != "cpu" or out.dtype != torch.float32:
        raise ValueError("out must be a float32 CPU tensor of shape [O, I]")
    _shape(out, "out", "[O, I]", (O, I))
    if route not in ("auto", "inputs", "gradients"):
        raise ValueError(f"route must be 'auto', 'inputs' or 'gradients', got {route!r}")
    if a.numel() == 0 or g.numel() == 0:
        return out
    if route == "auto":
        route = lambda_route(T, O, I)
    QA, QS = _dense(Q_A), _dense(Q_S)
    dst = out if out.is_contiguous() else torch.zeros(O, I, dtype=torch.float32)
    _ext().ekfac_lambda_accumulate(a.data_ptr(), _strides(a), g.data_ptr(), _strides(g), B, T, I, O,
                                   QA.data_ptr(), QS.data_ptr(), dst.data_ptr(), route == "inputs",
                                   _threads())
    if dst is not out:
        out += dst
    return out


# ---- op 4 ---------------------------------------------------------------------------------------------
def _kron_block(Q_A, Q_S, lam, V, damping, where: str = ""):
    _tensor(V, f"{where}V", "[n, O, I]", 3)
    n, O, I = V.shape
    _tensor(Q_A, f"{where}Q_A", "[I, I]", 2)
    _tensor(Q_S, f"{where}Q_S", "[O, O]", 2)
    _tensor(lam, f"{where}lam", "[O, I]", 2)
    _shape(Q_A, f"{where}Q_A", "[I, I]", (I, I))
    _shape(Q_S, f"{where}Q_S", "[O, O]", (O, O))
    _shape(lam, f"{where}lam", "[O, I]", (O, I))
    if isinstance(damping, torch.Tensor) and damping.numel() == 1:
        damping = damping.item()
    if isinstance(damping, bool) or not isinstance(damping, (int, float)) or not math.isfinite(float(damping)):
        raise ValueError(f"{where}damping must be a finite real number, got {damping!r}")
    return _dense(Q_A), _dense(Q_S), _dense(lam), _dense(V), float(damping)


def kron_inverse_apply(Q_A, Q_S, lam, V, damping) -> torch.Tensor:
    """[n, O, I] fp32 = Q_S [(Q_S^T V_q Q_A) / (lam + damping)] Q_A^T for each query q."""
    return kron_inverse_apply_grouped([(Q_A, Q_S, lam, V, damping)])[0]


def kron_inverse_apply_grouped(blocks) -> list[torch.Tensor]:
    """kron_inverse_apply for a list of (Q_A, Q_S, lam, V, damping) blocks of any shapes, in one
    parallel region over all (block, query) pairs. Returns a list of [n, O, I] fp32 tensors."""
    if not isinstance(blocks, (list, tuple)):
        raise ValueError("blocks must be a list of (Q_A, Q_S, lam, V, damping) tuples")
    dense, outs, args = [], [], []
    for k, blk in enumerate(blocks):
        if not isinstance(blk, (list, tuple)) or len(blk) != 5:
            raise ValueError(f"blocks[{k}] must be a (Q_A, Q_S, lam, V, damping) tuple")
        QA, QS, lam, V, d = _kron_block(*blk, where=f"blocks[{k}]." if len(blocks) > 1 else "")
        n, O, I = V.shape
        out = torch.empty(n, O, I, dtype=torch.float32)
        outs.append(out)
        dense.append((QA, QS, lam, V))  # keep alive until the call returns
        if out.numel():
            args.append((QA.data_ptr(), QS.data_ptr(), lam.data_ptr(), V.data_ptr(), out.data_ptr(), O, I, n, d))
    if args:
        _ext().kron_inverse_apply_grouped(args, _threads())
    return outs
