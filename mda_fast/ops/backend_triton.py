"""Triton backend ("triton"): a thin adapter over the kernels in kernels/<op>.py (mda_fast.kernels).

Arguments arrive validated and non-empty from the op's front door (mda_fast/ops/op_<op>.py). Each
Triton kernel has one route (op 2: G_b tiles fused on chip; op 3: rotate a, g first), so the
``route`` the front door passes is not used; op 5's kernel is its per-chunk head only (its GEMMs
stay torch). Kernels are found by ``backends.kernel`` (installed package, or kernels/ of the source
checkout) on first use: importing them runs @triton.jit, which fixes interpreter vs compiled mode
from TRITON_INTERPRET at that moment.
"""

from __future__ import annotations

import math

from .backends import kernel
from .projection import SeededProjection


def project_per_sample_grad(a, g, P_in, P_out):
    scale, seeds, mats = 1.0, [], []
    for P in (P_in, P_out):
        if isinstance(P, SeededProjection):
            seeds.append((P.seed, P.k))
            mats.append(None)
            scale /= math.sqrt(P.k)  # ±1 in the kernel, scaled once at the end: exact
        else:
            seeds.append(None)
            mats.append(P)
    k = kernel("project_per_sample_grad").project_per_sample_grad
    return k(a, g, mats[0], mats[1], seeds=tuple(seeds), scale=scale)


def grad_dot_queries(a, g, Q, route: str):
    return kernel("grad_dot_queries").grad_dot_queries(a, g, Q)


def ekfac_lambda_accumulate(a, g, Q_A, Q_S, out, route: str):
    return kernel("ekfac_lambda_accumulate").ekfac_lambda_accumulate(a, g, Q_A, Q_S, out)


def kron_inverse_apply(Q_A, Q_S, lam, V, damping):
    return kernel("kron_inverse_apply").kron_inverse_apply(Q_A, Q_S, lam, V, damping)


def kron_inverse_apply_grouped(blocks):
    return kernel("kron_inverse_apply").kron_inverse_apply_grouped(blocks)


def linear_cross_entropy_head(z, labels, u):
    return kernel("linear_cross_entropy").linear_cross_entropy_head(z, labels, u)
