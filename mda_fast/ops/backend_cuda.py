"""CUDA backend ("cuda"): thin wrappers around ``mda_fast._C_cuda`` (csrc/cuda/*.cu).

Each function validates its arguments (CUDA device, dtype fp32/bf16/fp16, shapes, finite damping)
and allocates outputs and workspaces with torch on the current stream BEFORE any kernel launches.
``a`` and ``g`` go to the kernels in their own dtype and strides (converted to fp32 while staged in
shared memory); small operands (projections, queries, eigenbases, lam) are made fp32 contiguous
here. Accumulation and outputs are fp32.
Workspaces: op 1 holds the projected activations [B, T, ki + ko]; ops 2 and 3 build per-sample
gradients for at most ``_CHUNK_ELEMS`` floats of [b, O, I] at a time.
"""

from __future__ import annotations

import math

import torch

from . import backend_cpp as _cpu  # shared validation (device-agnostic parts) and routing rules

_CHUNK_ELEMS = 1 << 26  # 256 MiB of fp32 workspace per chunk
_DTYPE = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}

try:
    from mda_fast import _C_cuda  # type: ignore[attr-defined]

    _IMPORT_ERROR = ""
except ImportError as exc:
    _C_cuda = None
    _IMPORT_ERROR = str(exc)


def available() -> tuple[bool, str]:
    """(usable, reason): needs the built extension AND a visible CUDA device through torch."""
    if _C_cuda is None:
        return False, (f"CUDA extension mda_fast._C_cuda not built ({_IMPORT_ERROR}); build with nvcc and "
                       "MDA_FAST_CUDA=1 pip install -e . --no-build-isolation")
    if not torch.cuda.is_available():
        return False, "mda_fast._C_cuda is built but torch sees no CUDA device"
    return True, f"mda_fast._C_cuda (CUDA runtime {_C_cuda.runtime_version()})"


def _on_cuda(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.device.type != "cuda":
        raise ValueError(f"{name} must be a CUDA tensor for the cuda backend, got device {x.device}")
    return x


def _stream() -> int:
    return torch.cuda.current_stream().cuda_stream


def _ext():
    ok, why = available()
    if not ok:
        raise RuntimeError(why)
    return _C_cuda


def _check_acts(a, g):
    _cpu._tensor_any(a, "a", "[B, T, I]", 3)
    _cpu._tensor_any(g, "g", "[B, T, O]", 3)
    _on_cuda(a, "a")
    _on_cuda(g, "g")
    if g.device != a.device:
        raise ValueError(f"g is on {g.device} but a is on {a.device}")
    if g.shape[:2] != a.shape[:2]:
        raise ValueError(f"g must have shape [B, T, O] with B, T = {tuple(a.shape[:2])} from a, got {tuple(g.shape)}")
    if g.dtype != a.dtype:
        g = g.to(a.dtype)
    B, T, I = a.shape
    return a, g, B, T, I, g.shape[2]


def _small(x, name, shape, ndim, device) -> torch.Tensor:
    _cpu._tensor_any(x, name, shape, ndim)
    if x.device != device:
        raise ValueError(f"{name} must be on {device}, got {x.device}")
    return x.float().contiguous()


def project_per_sample_grad(a, g, P_in, P_out) -> torch.Tensor:
    """[B, ko, ki] fp32 = sum_t (P_out^T g_bt)(P_in^T a_bt)^T; seeded projections never stored."""
    a, g, B, T, I, O = _check_acts(a, g)
    projs = []
    for P, name, dim, dn in ((P_in, "P_in", I, "I"), (P_out, "P_out", O, "O")):
        if not isinstance(P, torch.Tensor) and all(hasattr(P, k) for k in ("dim", "k", "seed")):
            if int(P.dim) != dim:
                raise ValueError(f"{name} must have shape [{dn}, k] with {dn} = {dim}, got SeededProjection(dim={P.dim})")
            projs.append((None, int(P.seed) & _cpu.MASK32, int(P.k)))
        else:
            Pt = _small(P, name, f"[{dn}, k]", 2, a.device)
            if Pt.shape[0] != dim:
                raise ValueError(f"{name} must have shape [{dn}, k] with {dn} = {dim}, got {tuple(Pt.shape)}")
            projs.append((Pt, 0, Pt.shape[1]))
    (pin, sin, ki), (pout, sout, ko) = projs
    out = torch.zeros(B, ko, ki, dtype=torch.float32, device=a.device)
    if a.numel() == 0 or g.numel() == 0:
        return out
    ws = torch.empty(B * T * (ki + ko), dtype=torch.float32, device=a.device)
    _ext().project_per_sample_grad(
        _DTYPE[a.dtype], a.data_ptr(), a.stride(), g.data_ptr(), g.stride(), B, T, I, O,
        0 if pin is None else pin.data_ptr(), sin, ki, 0 if pout is None else pout.data_ptr(), sout, ko,
        out.data_ptr(), ws.data_ptr(), _stream())
    return out


def grad_dot_queries(a, g, Q, route: str = "auto") -> torch.Tensor:
    """[B, n] fp32 = <G_b, Q_q>; route by backend_cpp.grad_dot_route (same FLOP rule)."""
    a, g, B, T, I, O = _check_acts(a, g)
    Qf = _small(Q, "Q", "[n, O, I]", 3, a.device)
    if tuple(Qf.shape[1:]) != (O, I):
        raise ValueError(f"Q must have shape [n, O, I] with O, I = {(O, I)}, got {tuple(Qf.shape)}")
    n = Qf.shape[0]
    out = torch.zeros(B, n, dtype=torch.float32, device=a.device)
    if out.numel() == 0 or a.numel() == 0:
        return out
    if route == "auto":
        route = _cpu.grad_dot_route(B, T, O, I, n)
    per = T * n * O if route == "factored" else O * I
    chunk = max(1, min(B, _CHUNK_ELEMS // max(1, per)))
    ws = torch.empty(chunk * per, dtype=torch.float32, device=a.device)
    _ext().grad_dot_queries(_DTYPE[a.dtype], a.data_ptr(), a.stride(), g.data_ptr(), g.stride(), B, T, I, O,
                            Qf.data_ptr(), n, out.data_ptr(), route == "factored", ws.data_ptr(), chunk,
                            _stream())
    return out


def ekfac_lambda_accumulate(a, g, Q_A, Q_S, out) -> torch.Tensor:
    """out[O, I] += sum_b (Q_S^T G_b Q_A)^2 in place; returns out."""
    a, g, B, T, I, O = _check_acts(a, g)
    QA = _small(Q_A, "Q_A", "[I, I]", 2, a.device)
    QS = _small(Q_S, "Q_S", "[O, O]", 2, a.device)
    _cpu._shape(QA, "Q_A", "[I, I]", (I, I))
    _cpu._shape(QS, "Q_S", "[O, O]", (O, O))
    if not isinstance(out, torch.Tensor) or out.device != a.device or out.dtype != torch.float32:
        raise ValueError(f"out must be a float32 tensor of shape [O, I] on {a.device}")
    _cpu._shape(out, "out", "[O, I]", (O, I))
    if a.numel() == 0 or g.numel() == 0:
        return out
    dst = out if out.is_contiguous() else torch.zeros(O, I, dtype=torch.float32, device=a.device)
    chunk = max(1, min(B, _CHUNK_ELEMS // (2 * O * I)))
    ws = torch.empty(2 * chunk * O * I, dtype=torch.float32, device=a.device)
    _ext().ekfac_lambda_accumulate(_DTYPE[a.dtype], a.data_ptr(), a.stride(), g.data_ptr(), g.stride(), B, T, I,
                                   O, QA.data_ptr(), QS.data_ptr(), dst.data_ptr(), ws.data_ptr(), chunk, _stream())
    if dst is not out:
        out += dst
    return out


def kron_inverse_apply(Q_A, Q_S, lam, V, damping) -> torch.Tensor:
    """[n, O, I] fp32 = Q_S [(Q_S^T V_q Q_A) / (lam + damping)] Q_A^T."""
    return kron_inverse_apply_grouped([(Q_A, Q_S, lam, V, damping)])[0]


def kron_inverse_apply_grouped(blocks) -> list[torch.Tensor]:
    """All (block, query) problems of all blocks in one launch per stage (4 stages)."""
    if not isinstance(blocks, (list, tuple)):
        raise ValueError("blocks must be a list of (Q_A, Q_S, lam, V, damping) tuples")
    prepared, dtypes = [], set()
    for k, blk in enumerate(blocks):
        if not isinstance(blk, (list, tuple)) or len(blk) != 5:
            raise ValueError(f"blocks[{k}] must be a (Q_A, Q_S, lam, V, damping) tuple")
        Q_A, Q_S, lam, V, d = blk
        where = f"blocks[{k}]." if len(blocks) > 1 else ""
        _cpu._tensor_any(V, f"{where}V", "[n, O, I]", 3)
        _on_cuda(V, f"{where}V")
        n, O, I = V.shape
        QA = _small(Q_A, f"{where}Q_A", "[I, I]", 2, V.device)
        QS = _small(Q_S, f"{where}Q_S", "[O, O]", 2, V.device)
        L = _small(lam, f"{where}lam", "[O, I]", 2, V.device)
        _cpu._shape(QA, f"{where}Q_A", "[I, I]", (I, I))
        _cpu._shape(QS, f"{where}Q_S", "[O, O]", (O, O))
        _cpu._shape(L, f"{where}lam", "[O, I]", (O, I))
        if isinstance(d, torch.Tensor) and d.numel() == 1:
            d = d.item()
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not math.isfinite(float(d)):
            raise ValueError(f"{where}damping must be a finite real number, got {d!r}")
        prepared.append([QA, QS, L, V.contiguous(), float(d)])
        dtypes.add(V.dtype)
    if len(dtypes) > 1:  # one kernel instantiation per launch: unify V's dtype
        for p in prepared:
            p[3] = p[3].float()
    outs = [torch.empty(p[3].shape, dtype=torch.float32, device=p[3].device) for p in prepared]
    args = [(p[0].data_ptr(), p[1].data_ptr(), p[2].data_ptr(), p[3].data_ptr(), o.data_ptr(),
             p[3].shape[1], p[3].shape[2], p[3].shape[0], p[4]) for p, o in zip(prepared, outs) if o.numel()]
    if args:
        total = sum(2 * p[3].numel() for p in prepared)
        ws = torch.empty(total, dtype=torch.float32, device=prepared[0][3].device)
        dtype = _DTYPE[prepared[0][3].dtype] if len(dtypes) == 1 else 0
        _ext().kron_inverse_apply_grouped(dtype, args, ws.data_ptr(), _stream())
    return outs
