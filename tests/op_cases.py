"""Shared cases for the per-op tests: backends to try, tolerances, input builders.

fp32 accumulates over at most a few hundred terms; low-precision inputs are rounded identically for
the float64 oracle, but GPU kernels may also round an explicit fp32 projection to the input dtype.
"""

import pytest
import torch

import mda_fast.ops as ops

ALL = [("torch", "cpu"), ("cpp", "cpu"), ("triton", "cpu"), ("triton", "cuda"), ("cuda", "cuda")]
BACKENDS = [pytest.param(b, d, id=f"{b}-{d}") for b, d in ALL]
# fp32: fp32 accumulation over <= a few hundred terms. Low precision: inputs are rounded identically
# for the oracle, but GPU kernels may also round an explicit fp32 projection to the input dtype.
TOL = {torch.float32: 2e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}


def need(backend, device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    if backend not in ops.available_backends(device):
        pytest.skip(f"{backend}: {ops.backend_status()[backend][1]}")


def close(out, want, dtype):
    assert out.dtype == torch.float32 and out.shape == want.shape
    err = (out.cpu().double() - want).abs().max().item()
    assert err <= TOL[dtype] * max(1.0, want.abs().max().item()), err


def inputs(B, T, I, O, dtype=torch.float32, noncontig=False, device="cpu"):
    gen = torch.Generator().manual_seed(B * 1000 + T * 10 + I + O)
    if noncontig:  # a transposed view and a sliced view
        a = torch.randn(T, B, I, generator=gen).transpose(0, 1)
        g = torch.randn(B, T, O + 3, generator=gen)[:, :, 1:O + 1]
    else:
        a, g = torch.randn(B, T, I, generator=gen), torch.randn(B, T, O, generator=gen)
    return a.to(device=device, dtype=dtype), g.to(device=device, dtype=dtype)
