"""CUDA backend ("cuda"): thin wrappers around ``mda_fast._C_cuda`` (csrc/cuda/*.cu).

Each function validates its arguments with ``validate`` (CUDA device, dtype fp32/bf16/fp16, shapes,
finite damping) and allocates outputs and workspaces with torch on the current stream BEFORE any
kernel launches. ``a`` and ``g`` go to the kernels in their own dtype and strides (converted to
fp32 while staged in shared memory); small operands (projections, queries, eigenbases, lam) are
made fp32 contiguous here. Accumulation and outputs are fp32.
Workspaces: op 1 holds the projected activations [B, T, ki + ko]; ops 2 and 3 build per-sample
gradients for at most ``_CHUNK_ELEMS`` floats of [b, O, I] at a time.
"""

from __future__ import annotations

import torch

from . import backend_cpp as _cpu  # routing rules
from . import validate

_CHUNK_ELEMS = 1 << 26  # 256 MiB of fp32 workspace per chunk
_DTYPE = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
_C_cuda, _IMPORT_ERROR = _cpu.import_extension("_C_cuda")


def available() -> tuple[bool, str]:
    """(usable, reason): needs the built extension AND a visible CUDA device through torch."""
    if _C_cuda is None:
        return False, (f"CUDA extension mda_fast._C_cuda not built ({_IMPORT_ERROR}); build with nvcc and "
                       "MDA_FAST_CUDA=1 pip install -e . --no-build-isolation")
    if not torch.cuda.is_available():
        return False, "mda_fast._C_cuda is built but torch sees no CUDA device"
    return True, f"mda_fast._C_cuda (CUDA runtime {_C_cuda.runtime_version()})"


def _stream() -> int:
    return torch.cuda.current_stream().cuda_stream


def _ext():
    ok, why = available()
    if not ok:
        raise RuntimeError(why)
    return _C_cuda


def _activations(a, g) -> tuple[torch.Tensor, torch.Tensor, int, int, int, int]:
    """Validated a, g (g in a's dtype: one kernel instantiation per call) and B, T, I, O."""
    B, T, I, O = validate.activations(a, g, device_type="cuda")
    return a, (g if g.dtype == a.dtype else g.to(a.dtype)), B, T, I, O


def _small(x: torch.Tensor) -> torch.Tensor:
    return x.float().contiguous()


def project_per_sample_grad(a, g, P_in, P_out) -> torch.Tensor:
    """[B, ko, ki] fp32 = sum_t (P_out^T g_bt)(P_in^T a_bt)^T; seeded projections never stored."""
    a, g, B, T, I, O = _activations(a, g)
    pin, sin, ki = validate.projection(P_in, "P_in", I, "I", a.device)
    pout, sout, ko = validate.projection(P_out, "P_out", O, "O", a.device)
    pin, pout = (None if P is None else _small(P) for P in (pin, pout))
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
    a, g, B, T, I, O = _activations(a, g)
    n = validate.queries(Q, O, I, a.device)
    Qf = _small(Q)
    out = torch.zeros(B, n, dtype=torch.float32, device=a.device)
    if out.numel() == 0 or a.numel() == 0:
        return out
    if route == "auto":
        route = _cpu.grad_dot_route(B, T, O, I, n)
    per = T * n * O if route == "factored" else O * I
    chunk = max(1, min(B, _CHUNK_ELEMS // max(1, per)))
    ws = torch.empty(chunk * per, dtype=torch.float32, device=a.device)
    _ext().grad_dot_queries(_DTYPE[a.dtype], a.data_ptr(), a.stride(), g.data_ptr(), g.stride(), B, T, I, O,
                            Qf.data_ptr(), n, out.data_ptr(), route, ws.data_ptr(), chunk,
                            _stream())
    return out


def ekfac_lambda_accumulate(a, g, Q_A, Q_S, out) -> torch.Tensor:
    """out[O, I] += sum_b (Q_S^T G_b Q_A)^2 in place; returns out."""
    a, g, B, T, I, O = _activations(a, g)
    validate.lambda_operands(Q_A, Q_S, out, I, O, a.device)
    QA, QS = _small(Q_A), _small(Q_S)
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
    blocks = validate.kron_blocks(blocks, device_type="cuda")
    prepared = [[_small(QA), _small(QS), _small(lam), V.contiguous(), d] for QA, QS, lam, V, d in blocks]
    dtypes = {p[3].dtype for p in prepared}
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
