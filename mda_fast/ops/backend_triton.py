"""Triton backend: adapts validated dispatch arguments to the kernels in mda_fast.kernels.

Kernels are imported lazily (first call), because importing them runs @triton.jit, which fixes
interpreter vs compiled mode from TRITON_INTERPRET at that moment.
"""

from __future__ import annotations

import math
import os

from .projection import SeededProjection


def available() -> tuple[bool, str]:
    try:
        import triton  # noqa: F401
    except Exception as e:  # pragma: no cover - triton is a test dependency
        return False, f"triton not importable: {e}"
    import torch

    if torch.cuda.is_available():
        return True, f"triton {triton.__version__} on {torch.cuda.get_device_name()}"
    if os.environ.get("TRITON_INTERPRET") == "1":
        return True, f"triton {triton.__version__} interpreter (TRITON_INTERPRET=1, CPU tensors, slow)"
    return False, "no CUDA device (set TRITON_INTERPRET=1 to run Triton kernels on the CPU, slowly)"


def project_per_sample_grad(a, g, P_in, P_out):
    from ..kernels.project_per_sample_grad import project_per_sample_grad as k

    scale, seeds, mats = 1.0, [], []
    for P in (P_in, P_out):
        if isinstance(P, SeededProjection):
            seeds.append((P.seed, P.k))
            mats.append(None)
            scale /= math.sqrt(P.k)  # ±1 in the kernel, scaled once at the end: exact
        else:
            seeds.append(None)
            mats.append(P)
    return k(a, g, mats[0], mats[1], seeds=tuple(seeds), scale=scale)


def grad_dot_queries(a, g, Q):
    from ..kernels.grad_dot_queries import grad_dot_queries as k

    return k(a, g, Q)


def ekfac_lambda_accumulate(a, g, Q_A, Q_S, out):
    from ..kernels.ekfac_lambda_accumulate import ekfac_lambda_accumulate as k

    return k(a, g, Q_A, Q_S, out)


def kron_inverse_apply(Q_A, Q_S, lam, V, damping):
    from ..kernels.kron_inverse_apply import kron_inverse_apply as k

    return k(Q_A, Q_S, lam, V, damping)


def kron_inverse_apply_grouped(blocks):
    from ..kernels.kron_inverse_apply import kron_inverse_apply_grouped as k

    return k(blocks)
