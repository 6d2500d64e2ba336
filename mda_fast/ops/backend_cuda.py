"""CUDA backend ("cuda"): a thin adapter over ``mda_fast._C_cuda`` (csrc/cuda/<op>.cu).

Arguments arrive validated and non-empty from the op's front door (mda_fast/ops/op_<op>.py), on a
CUDA device, ``a`` and ``g`` of one dtype, with the route its FLOP rule chose. Outputs and workspaces
are allocated here with torch on the current stream BEFORE any kernel launches. ``a`` and ``g`` go
to the kernels in their own dtype and strides (converted to fp32 while staged in shared memory);
small operands (projections, queries, eigenbases, lam) are made fp32 contiguous here. Accumulation
and outputs are fp32. Workspaces: op 1 holds the projected activations [B, T, ki + ko]; ops 2 and 3
build per-sample gradients for at most ``_CHUNK_ELEMS`` floats of [b, O, I] at a time.
"""

from __future__ import annotations

import torch

from . import backends
from .projection import parts

_CHUNK_ELEMS = 1 << 26  # 256 MiB of fp32 workspace per chunk
_DTYPE = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
_C_cuda = backends.extension("_C_cuda")[0]


def _stream() -> int:
    return torch.cuda.current_stream().cuda_stream


def _ext():
    if _C_cuda is None or not torch.cuda.is_available():
        raise RuntimeError(backends.status("cuda")[1])
    return _C_cuda


def _small(x: torch.Tensor) -> torch.Tensor:
    return x.float().contiguous()


def project_per_sample_grad(a, g, P_in, P_out) -> torch.Tensor:
    """[B, ko, ki] fp32 = sum_t (P_out^T g_bt)(P_in^T a_bt)^T; seeded projections never stored."""
    (B, T, I), O = a.shape, g.shape[2]
    pin, sin, ki = parts(P_in)
    pout, sout, ko = parts(P_out)
    pin, pout = (None if P is None else _small(P) for P in (pin, pout))
    out = torch.zeros(B, ko, ki, dtype=torch.float32, device=a.device)
    ws = torch.empty(B * T * (ki + ko), dtype=torch.float32, device=a.device)
    _ext().project_per_sample_grad(
        _DTYPE[a.dtype], a.data_ptr(), a.stride(), g.data_ptr(), g.stride(), B, T, I, O,
        0 if pin is None else pin.data_ptr(), sin, ki, 0 if pout is None else pout.data_ptr(), sout, ko,
        out.data_ptr(), ws.data_ptr(), _stream())
    return out


def grad_dot_queries(a, g, Q, route: str) -> torch.Tensor:
    """[B, n] fp32 = <G_b, Q_q> by ``route``, ``chunk`` samples per workspace fill."""
    (B, T, I), O, n = a.shape, g.shape[2], Q.shape[0]
    Qf = _small(Q)
    out = torch.zeros(B, n, dtype=torch.float32, device=a.device)
    per = T * n * O if route == "factored" else O * I
    chunk = max(1, min(B, _CHUNK_ELEMS // max(1, per)))
    ws = torch.empty(chunk * per, dtype=torch.float32, device=a.device)
    _ext().grad_dot_queries(_DTYPE[a.dtype], a.data_ptr(), a.stride(), g.data_ptr(), g.stride(), B, T, I, O,
                            Qf.data_ptr(), n, out.data_ptr(), route, ws.data_ptr(), chunk, _stream())
    return out


def ekfac_lambda_accumulate(a, g, Q_A, Q_S, out, route: str) -> torch.Tensor:
    """out[O, I] += sum_b (Q_S^T G_b Q_A)^2 in place; returns out. One route (materialized): the
    kernel builds G_b chunks whatever ``route`` the FLOP rule preferred."""
    (B, T, I), O = a.shape, g.shape[2]
    QA, QS = _small(Q_A), _small(Q_S)
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
    prepared = [[_small(QA), _small(QS), _small(lam), V.contiguous(), d] for QA, QS, lam, V, d in blocks]
    dtypes = {p[3].dtype for p in prepared}
    if len(dtypes) > 1:  # one kernel instantiation per launch: unify V's dtype
        for p in prepared:
            p[3] = p[3].float()
    outs = [torch.empty(p[3].shape, dtype=torch.float32, device=p[3].device) for p in prepared]
    args = [(p[0].data_ptr(), p[1].data_ptr(), p[2].data_ptr(), p[3].data_ptr(), o.data_ptr(),
             p[3].shape[1], p[3].shape[2], p[3].shape[0], p[4]) for p, o in zip(prepared, outs)]
    ws = torch.empty(sum(2 * p[3].numel() for p in prepared), dtype=torch.float32, device=prepared[0][3].device)
    dtype = _DTYPE[prepared[0][3].dtype] if len(dtypes) == 1 else 0
    _ext().kron_inverse_apply_grouped(dtype, args, ws.data_ptr(), _stream())
    return outs
