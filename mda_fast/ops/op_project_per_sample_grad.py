"""Op 1, project_per_sample_grad: per-sample gradients projected on both sides, never materialized.

    out[b] = P_out^T G_b P_in = sum_t (P_out^T g_bt)(P_in^T a_bt)^T      [B, ko, ki] fp32

with G_b = sum_t g_bt a_bt^T [O, I]. Cost 2*B*T*(I*ki + O*ko) + 2*B*T*ko*ki FLOPs; the [B, O, I]
gradients never exist. P_in [I, ki], P_out [O, ko]: tensors or SeededProjection (generated inside
the compiled kernels, never stored).

Files of this op: reference below; kernels/project_per_sample_grad.py (Triton);
csrc/cpu/project_per_sample_grad.cpp (C++); csrc/cuda/project_per_sample_grad.cu (CUDA);
tests/test_op_project_per_sample_grad.py; benchmarks/bench_op_project_per_sample_grad.py.
"""

from __future__ import annotations

import torch

from . import backends, validate
from .projection import dense
from .tensors import f32


def prefers_cpp() -> bool:
    """CPU rule: the C++ backend was 1.05-1.11x torch at 2 threads and 1.0-1.2x at 1 (benchmarks/RESULTS.md,
    2026-11-24, quiet machine), so it runs CPU tensors under backend="auto"."""
    return True


def reference(a, g, P_in, P_out) -> torch.Tensor:
    """The torch backend: [B,T,k] projections of a and g first, then one bmm (fp32 throughout)."""
    ap = torch.matmul(f32(a), dense(P_in, a.device))  # [B, T, ki]
    gp = torch.matmul(f32(g), dense(P_out, g.device))  # [B, T, ko]
    return torch.bmm(gp.transpose(1, 2), ap)


def project_per_sample_grad(a, g, P_in, P_out, *, backend: str = "auto") -> torch.Tensor:
    """[B, ko, ki] fp32 = sum_t (P_out^T g_bt)(P_in^T a_bt)^T = P_out^T G_b P_in, no [B, O, I] held.

    a [B, T, I], g [B, T, O]; P_in [I, ki], P_out [O, ko]: tensors or SeededProjection.
    """
    B, T, I, O = validate.activations(a, g)
    validate.projection(P_in, "P_in", I, "I", a.device)
    validate.projection(P_out, "P_out", O, "O", a.device)
    name = backends.choose(backend, a.device, empty=a.numel() == 0 or g.numel() == 0, prefer_cpp=prefers_cpp())
    return backends.implementation(name, "project_per_sample_grad", reference)(a, g, P_in, P_out)
