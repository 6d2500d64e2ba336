"""Index coordinates of one block: a gradient in the block's EK-FAC eigenbasis, whitened, compressed.

For a block with factors (Q_A, Q_S, Λ, damping) and a gradient G [O, I] (a row's, or the probe's):

    C(G) = (Q_S^T G Q_A) / sqrt(Λ + damping)                      [O, I] whitened eigen-coordinates
    -<G_z, H^-1 ∇f>_F = -<C(G_z), C(∇f)>_F                        the score of mda score, exactly

so an index of C(G_z) for every row scores any probe with one product. C is compressed to
k_out x k_in per block with op 1 (``ops.project_per_sample_grad``), which computes
P_out^T (sum_t g_t a_t^T) P_in from the captured (a, g) without forming G:

    "eigen"   the leading eigen-directions: the k_out * k_in entries of C with the largest Λ (the
              Kronecker eigen-directions q_S,o ⊗ q_A,i along which the rows' gradients have the most
              variance). Op 1 with P_in, P_out = the columns of Q_A, Q_S those entries use gives
              their coordinates; the rest are dropped. (Measured on the demo: better than the k_out
              rows x k_in columns of largest Λ sums, and far better than "seeded"; README table.)
    "seeded"  R_out^T C R_in with seeded Rademacher R (op 1's SeededProjection, never stored): op 1
              with the whole Q_A, Q_S gives C, then op 1 again with C's rows as its "tokens" and
              the identity as g (sum_o e_o C[o]^T = C) applies the seeded projections.
    "none"    (k = full) the whole C: the index reproduces mda score to float tolerance.

A probe gradient goes through the same code as the rows: op 1 with a = G [n, O, I] and g = the
identity [n, O, O] gives P_out^T G P_in (its "tokens" are G's rows), so both sides are projected
by the same numbers.
"""

from __future__ import annotations

import torch

from mda_fast import ops
from mda_fast.attribution.index.spec import IndexSpec
from mda_fast.errors import ConfigError
from mda_fast.ops.projection import SeededProjection


def leading(weights: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest of the flattened ``weights`` (ties by index), in that order."""
    return torch.sort(-weights.flatten().double(), stable=True).indices[:k]


def _identity(n: int, size: int, dtype, device) -> torch.Tensor:
    """[n, size, size] identity without copies (stride 0 over n): op 1's g for a matrix input."""
    return torch.eye(size, dtype=dtype, device=device).expand(n, size, size)


def check_k(spec: IndexSpec, shapes: dict[str, tuple[int, int]]) -> None:
    """ConfigError naming every block (name -> (out, in)) that ``spec.k`` does not fit, and the
    largest k that fits them all: one k is applied to every block, so the smallest sets the limit."""
    if spec.k is None or spec.bounded or not shapes:
        return
    ko, ki = spec.k
    small = [f"{n} ({o} x {i}, out x in)" for n, (o, i) in shapes.items() if ko > o or ki > i]
    if small:
        lo, li = min(o for o, _ in shapes.values()), min(i for _, i in shapes.values())
        raise ConfigError(f"index k {ko}x{ki} (k_out x k_in) is larger than block {', '.join(small)}: "
                          f"use k_out <= {lo} and k_in <= {li}, or k 'full' for the whole blocks")


class BlockBasis:
    """Maps captured (a [B, T, I], g [B, T, O]) or gradients G [n, O, I] of one block to index
    coordinates [n, k_out * k_in] fp32 (see the module docstring)."""

    def __init__(self, name: str, factors, spec: IndexSpec, backend: str = "auto"):
        O, I = factors.shape
        check_k(spec, {name: (O, I)})
        ko, ki = spec.k_of(O, I)
        self.name, self.kind, self.backend = name, spec.kind, backend
        self.shape, self.k = (O, I), (ko, ki)
        lam = factors.lam.double()
        inv = (lam + float(factors.damping)).rsqrt()
        QA, QS = factors.Q_A.double(), factors.Q_S.double()
        self.keep = None  # eigen: positions of the kept entries in the flattened sub-grid [rows, cols]
        if self.kind == "eigen":
            flat = leading(lam, ko * ki)
            rows, r_at = torch.unique(flat // I, return_inverse=True)
            cols, c_at = torch.unique(flat % I, return_inverse=True)
            self.keep = r_at * len(cols) + c_at
            QA, QS, inv = QA[:, cols], QS[:, rows], inv[rows][:, cols].reshape(-1)[self.keep]  # inv: [dim]
        self.P_in, self.P_out, self.inv = QA.float(), QS.float(), inv.float()
        if self.kind == "seeded":
            self.R_in, self.R_out = SeededProjection(I, ki, spec.seed), SeededProjection(O, ko, spec.seed + 1)

    @property
    def dim(self) -> int:
        return self.k[0] * self.k[1]

    def to(self, device) -> "BlockBasis":
        self.P_in, self.P_out, self.inv = (t.to(device) for t in (self.P_in, self.P_out, self.inv))
        if self.keep is not None:
            self.keep = self.keep.to(device)
        return self

    def coords(self, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """[B, k_out * k_in] fp32 of sum_t g_t a_t^T for each of the B samples."""
        dev = a.device
        if self.P_in.device != dev:
            self.to(dev)
        C = ops.project_per_sample_grad(a, g, self.P_in, self.P_out, backend=self.backend)
        if self.keep is not None:  # gather first: whiten only the kept entries
            return C.reshape(C.shape[0], -1)[:, self.keep] * self.inv
        C = C * self.inv
        if self.kind == "seeded":
            B, O = C.shape[:2]
            C = ops.project_per_sample_grad(C, _identity(B, O, C.dtype, dev), self.R_in, self.R_out,
                                            backend=self.backend)
        return C.reshape(C.shape[0], -1)

    def of_gradients(self, G: torch.Tensor) -> torch.Tensor:
        """[n, k_out * k_in] fp32 of gradients G [n, O, I] (the probe side)."""
        G = G.float()
        return self.coords(G, _identity(G.shape[0], G.shape[1], G.dtype, G.device))
