"""Attribution ops, one module per op (see docs/ARCHITECTURE.md, "where things are").

``op_<op>.py`` holds the op's front door, its routing / CPU rules and its torch reference; the
compiled backends are thin adapters (backend_cpp.py, backend_cuda.py, backend_triton.py) chosen by
backends.py. Every op takes ``backend="auto" | "torch" | "cpp" | "cuda" | "triton"``; inputs may be
fp32, bf16 or fp16, accumulation and outputs are fp32. Bad arguments raise ValueError before any
kernel runs (mda_fast/ops/validate.py, once per call).
"""

from .backends import available_backends, backend_status
from .op_ekfac_lambda_accumulate import ekfac_lambda_accumulate
from .op_grad_dot_queries import grad_dot_queries
from .op_kron_inverse_apply import kron_inverse_apply, kron_inverse_apply_grouped
from .op_project_per_sample_grad import project_per_sample_grad
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
