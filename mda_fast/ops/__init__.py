"""Attribution ops with one dispatch each (see docs/ARCHITECTURE.md, issue 4).

Every op takes ``backend="auto" | "torch" | "cpp" | "cuda" | "triton"``; inputs may be fp32, bf16
or fp16, accumulation and outputs are fp32. Bad arguments raise ValueError before any kernel runs.
"""

from .dispatch import (
    available_backends,
    backend_status,
    ekfac_lambda_accumulate,
    grad_dot_queries,
    kron_inverse_apply,
    kron_inverse_apply_grouped,
    project_per_sample_grad,
)
from .projection import SeededProjection

__all__ = [
    "SeededProjection",
    "available_backends",
    "backend_status",
    "ekfac_lambda_accumulate",
    "grad_dot_queries",
    "kron_inverse_apply",
    "kron_inverse_apply_grouped",
    "project_per_sample_grad",
]
