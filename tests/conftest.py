"""Shared pytest setup.

Triton decides interpreter vs compiled mode when a @triton.jit decorator runs (at import of the
kernel modules), so the choice is made here, before any test module imports them: without CUDA,
Triton kernels run on CPU tensors under TRITON_INTERPRET=1 (slow, so triton tests use small shapes).
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
