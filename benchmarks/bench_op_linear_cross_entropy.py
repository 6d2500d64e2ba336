"""Op 5 at Pythia's vocabulary (V = 50304): the plain path ("naive": full [N, V] logits, F.cross_entropy,
autograd into h) vs the chunked op with the torch head ("torch") and the Triton head ("triton", CUDA
only: the CPU interpreter is no speed). The op has no cpp/cuda backend, so those rows skip.

FLOPs counted: the two GEMMs, 4 N V d (logits, and p @ W / the backward into h); the head's passes
over [N, V] are memory traffic, not counted. N = B*T tokens: 256 on the CPU, 8192 on CUDA; fp32 on
the CPU, bf16 (the model dtype of a real fit) on CUDA. "fit": one data and one sampled label set from
one pass (what mda fit runs), naive drawing from the full logits.
"""

import pytest
import torch

from mda_fast.attribution.score.forward import row_uniforms
from oracles import sample_labels
from mda_fast.ops import op_linear_cross_entropy as lce
from conftest import CUDA, PYTHIA

V = 50304
BT = (8, 1024) if CUDA else (2, 128)
DTYPE = torch.bfloat16 if CUDA else torch.float32
MODELS = ["14m", "70m", "160m", "1b"] if CUDA else ["14m"]  # d = 128 .. 2048


def _inputs(d, device):
    gen = torch.Generator().manual_seed(0)
    B, T = BT
    h = torch.randn(B, T, d, generator=gen).to(device, DTYPE)
    W = (torch.randn(V, d, generator=gen) * d**-0.5).to(device, DTYPE)
    y = torch.randint(0, V, (B, T), generator=gen).to(device)
    return h, W, y


def _skip(impl, device):
    if impl in ("cpp", "cuda"):
        pytest.skip(f"op 5 has no {impl} backend")
    if impl == "triton" and device != "cuda":
        pytest.skip("Triton head timed on CUDA only")


def _plain(h, W, labels):
    hh = h.detach().requires_grad_(True)
    sum(lce.reference(hh, W, None, y).sum() for y in labels).backward()
    return hh.grad


@pytest.mark.parametrize("model", MODELS)
def test_linear_cross_entropy(run, device, model, impl):
    _skip(impl, device)
    d = PYTHIA[model][0]
    h, W, y = _inputs(d, device)
    fn = (lambda: _plain(h, W, [y])) if impl == "naive" else (lambda: lce.chunked(h, W, None, [y], backend=impl))
    B, T = BT
    run(fn, 4 * B * T * V * d, B=B, T=T, d=d, V=V, dtype=str(DTYPE))


@pytest.mark.parametrize("model", MODELS)
def test_linear_cross_entropy_fit(run, device, model, impl):
    _skip(impl, device)
    d = PYTHIA[model][0]
    h, W, y = _inputs(d, device)
    B, T = BT
    ids = torch.arange(B)
    u = row_uniforms(ids, 3, T).to(device)
    if impl == "naive":
        fn = lambda: _plain(h, W, [y, sample_labels(torch.nn.functional.linear(h, W), ids, 3)])  # noqa: E731
    else:
        fn = lambda: lce.chunked(h, W, None, [y], u, backend=impl)  # noqa: E731
    run(fn, 4 * B * T * V * d, B=B, T=T, d=d, V=V, dtype=str(DTYPE), label_sets=2)
