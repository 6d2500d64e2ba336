"""Argument checks of the four ops, run once, in each op's front door (mda_fast/ops/op_<op>.py),
before a backend is chosen; the backends trust what passed them.

Every check raises ValueError naming the argument and its expected shape. All inputs of a call must
share one device; which device a backend needs is checked when it is chosen (backends.choose).
"""

from __future__ import annotations

import math
import numbers
from typing import Optional

import torch

from .projection import SeededProjection

FLOATS = (torch.float32, torch.bfloat16, torch.float16)
Block = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float]


def tensor(x, name: str, shape: str, ndim: int, device: Optional[torch.device] = None,
           dtypes: tuple[torch.dtype, ...] = FLOATS) -> torch.Tensor:
    """``x`` as a tensor of rank ``ndim`` and dtype in ``dtypes``, on ``device`` (None: any)."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape {shape}, got {type(x).__name__}")
    if x.dim() != ndim:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(x.shape)}")
    if x.dtype not in dtypes:
        raise ValueError(f"{name} must have dtype in {[str(d) for d in dtypes]} (shape {shape}), got {x.dtype}")
    if device is not None and x.device != device:
        raise ValueError(f"{name} is on {x.device} but the other inputs are on {device}")
    return x


def dims(x: torch.Tensor, name: str, shape: str, expected: tuple[int, ...]) -> None:
    if tuple(x.shape) != tuple(expected):
        raise ValueError(f"{name} must have shape {shape} = {tuple(expected)}, got {tuple(x.shape)}")


def sized(x, name: str, shape: str, expected: tuple[int, ...], device: torch.device,
          dtypes: tuple[torch.dtype, ...] = FLOATS) -> torch.Tensor:
    """tensor() and dims() in one: ``x`` of exactly ``expected`` shape on ``device``."""
    tensor(x, name, shape, len(expected), device, dtypes=dtypes)
    dims(x, name, shape, expected)
    return x


def activations(a, g) -> tuple[int, int, int, int]:
    """(B, T, I, O) of a [B, T, I], g [B, T, O] of one dtype."""
    tensor(a, "a", "[B, T, I]", 3)
    tensor(g, "g", "[B, T, O]", 3, a.device)
    if g.shape[:2] != a.shape[:2]:
        raise ValueError(f"g must have shape [B, T, O] with B, T = {tuple(a.shape[:2])} from a, got {tuple(g.shape)}")
    if g.dtype != a.dtype:
        raise ValueError(f"g must have the same dtype as a ({a.dtype}), got {g.dtype}")
    B, T, I = a.shape
    return B, T, I, g.shape[2]


def projection(P, name: str, dim: int, dimname: str, device: torch.device) -> None:
    """A dense [dim, k] tensor on ``device`` or a SeededProjection of that shape (k >= 1)."""
    if isinstance(P, SeededProjection):
        if P.dim != dim:
            raise ValueError(f"{name} must have shape [{dimname}, k] with {dimname} = {dim}, k >= 1, got "
                             f"SeededProjection(dim={P.dim}, k={P.k})")
        return
    tensor(P, name, f"[{dimname}, k]", 2, device)
    if P.shape[0] != dim or P.shape[1] < 1:
        raise ValueError(f"{name} must have shape [{dimname}, k] with {dimname} = {dim}, k >= 1, got {tuple(P.shape)}")


def queries(Q, O: int, I: int, device: torch.device) -> int:
    """n of the queries Q [n, O, I]."""
    tensor(Q, "Q", "[n, O, I]", 3, device)
    if tuple(Q.shape[1:]) != (O, I):
        raise ValueError(f"Q must have shape [n, O, I] with O, I = {(O, I)}, got {tuple(Q.shape)}")
    return Q.shape[0]


def lambda_operands(Q_A, Q_S, out, I: int, O: int, device: torch.device) -> None:
    """Eigenbases Q_A [I, I], Q_S [O, O] and the fp32 accumulator out [O, I] of ekfac_lambda_accumulate."""
    sized(Q_A, "Q_A", "[I, I]", (I, I), device)
    sized(Q_S, "Q_S", "[O, O]", (O, O), device)
    sized(out, "out", "[O, I]", (O, I), device, dtypes=(torch.float32,))


def damping(d, name: str = "damping") -> float:
    """A finite real number (or a one-element tensor holding one) as float."""
    if isinstance(d, torch.Tensor) and d.numel() == 1:
        d = d.item()
    if isinstance(d, bool) or not isinstance(d, numbers.Real) or not math.isfinite(float(d)):
        raise ValueError(f"{name} must be a finite real number, got {d!r}")
    return float(d)


def kron_block(Q_A, Q_S, lam, V, d, where: str = "", device: Optional[torch.device] = None) -> Block:
    """(Q_A [I, I], Q_S [O, O], lam [O, I], V [n, O, I], float damping); ``where`` prefixes names."""
    tensor(V, f"{where}V", "[n, O, I]", 3, device)
    n, O, I = V.shape
    sized(Q_A, f"{where}Q_A", "[I, I]", (I, I), V.device)
    sized(Q_S, f"{where}Q_S", "[O, O]", (O, O), V.device)
    sized(lam, f"{where}lam", "[O, I]", (O, I), V.device)
    return Q_A, Q_S, lam, V, damping(d, f"{where}damping")


def kron_blocks(blocks) -> list[Block]:
    """kron_block() of each of a list of (Q_A, Q_S, lam, V, damping) tuples, all on one device;
    names carry a ``blocks[k].`` prefix where there are several blocks."""
    if not isinstance(blocks, (list, tuple)):
        raise ValueError(f"blocks must be a list of (Q_A, Q_S, lam, V, damping) tuples, got {type(blocks).__name__}")
    checked: list[Block] = []
    for k, blk in enumerate(blocks):
        if not isinstance(blk, (list, tuple)) or len(blk) != 5:
            raise ValueError(f"blocks[{k}] must be a (Q_A, Q_S, lam, V, damping) tuple")
        device = checked[0][3].device if checked else None
        where = f"blocks[{k}]." if len(blocks) > 1 else ""
        checked.append(kron_block(*blk, where=where, device=device))
    return checked
