"""EK-FAC factors of one Kronecker block, their math, and their file format.

A block's weight is ``W [O, I]``; the per-sample gradient of row b is ``G_b = g_b^T a_b [O, I]``.
EK-FAC approximates the (true or empirical) Fisher of the block as

    F ~= (Q_S kron Q_A) diag(vec Lambda) (Q_S kron Q_A)^T          (row-major vec of [O, I])

with ``Q_A`` the eigenvectors of ``A = E_tok[a a^T]`` (I x I), ``Q_S`` those of
``S = E_tok[g g^T]`` (O x O), and ``Lambda[o, i] = E_b[(Q_S^T G_b Q_A)[o, i]^2]`` the eigenvalue
correction from per-sample gradients. ``H^-1 V = Q_S [(Q_S^T V Q_A) / (Lambda + damping)] Q_A^T``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from safetensors.torch import load_file, save_file

from mda_fast.errors import DataError, NumericalError
from mda_fast.io import atomic_path
from mda_fast.io import read_json, write_json

FORMAT = "mda-fast-ekfac/1"


def check_finite(t: torch.Tensor, what: str, block: str, where: str) -> None:
    """NumericalError naming the block and batch when ``t`` holds NaN or inf."""
    if not bool(torch.isfinite(t).all()):
        raise NumericalError(f"{what} of block {block} is not finite (NaN/inf) at {where}")


def covariance(total: torch.Tensor, count: float) -> torch.Tensor:
    """``total / count`` in float64, symmetrized: [D, D] sum of outer products -> E[x x^T]."""
    C = total.double() / max(float(count), 1.0)
    return 0.5 * (C + C.T)


def eigh_factor(C: torch.Tensor, block: str, which: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigendecomposition in float64 of a covariance C [D, D] (from :func:`covariance`) plus jitter
    1e-6 * trace / dim -> (eigenvalues [D], eigenvectors [D, D])."""
    check_finite(C, f"covariance {which}", block, "the end of pass 1")
    d = C.shape[0]
    C = C + (1e-6 * torch.trace(C).clamp_min(0) / d + 1e-30) * torch.eye(d, dtype=C.dtype, device=C.device)
    try:
        evals, evecs = torch.linalg.eigh(C)
    except RuntimeError as exc:  # eigh failed to converge
        raise NumericalError(f"eigendecomposition of covariance {which} of block {block} failed: {exc}") from None
    return evals, evecs


@dataclass
class BlockFactors:
    """Fitted EK-FAC of one block. Covariances/eigenvectors float64, ``lam`` float64 [O, I]."""

    name: str
    A: torch.Tensor  # [I, I] E_tok[a a^T] (symmetrized, before jitter)
    S: torch.Tensor  # [O, O] E_tok[g g^T]
    Q_A: torch.Tensor  # [I, I] eigenvectors of A (columns)
    Q_S: torch.Tensor  # [O, O] eigenvectors of S
    lam: torch.Tensor  # [O, I] eigenvalue correction E_b[(Q_S^T G_b Q_A)^2]
    damping: float  # max(alpha * mean(lam), floor), added to lam in the denominator
    n_tokens: int = 0
    n_samples: int = 0

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.lam.shape)

    def ops_args(self, dtype=torch.float32, device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Q_A, Q_S, lam) cast for mda_fast.ops (fp32 kernels)."""
        return tuple(t.to(dtype=dtype, device=device) for t in (self.Q_A, self.Q_S, self.lam))


def damping_of(lam: torch.Tensor, alpha: float, floor: float) -> float:
    """``alpha * mean(Lambda)`` floored at ``floor`` (authors' defaults 0.1, 1e-5)."""
    return max(float(alpha) * float(lam.double().mean()), float(floor))


@dataclass
class FactorSet:
    """Factors of several blocks plus the manifest describing how they were fitted."""

    blocks: dict[str, BlockFactors]
    manifest: dict = field(default_factory=dict)

    def __getitem__(self, name: str) -> BlockFactors:
        if name not in self.blocks:
            raise DataError(f"the EK-FAC factors hold no block {name}; fitted blocks: {', '.join(self.blocks) or 'none'}")
        return self.blocks[name]

    def save(self, out_dir: str) -> str:
        """Write ``factors.safetensors`` then ``manifest.json`` (each tmp + rename; manifest last)."""
        os.makedirs(out_dir, exist_ok=True)
        tensors, meta = {}, {}
        for n, f in self.blocks.items():
            for key in ("A", "S", "Q_A", "Q_S", "lam"):
                tensors[f"{n}/{key}"] = getattr(f, key).detach().to("cpu", torch.float64).contiguous()
            meta[n] = {"damping": f.damping, "n_tokens": f.n_tokens, "n_samples": f.n_samples, "shape": list(f.shape)}
        with atomic_path(os.path.join(out_dir, "factors.safetensors")) as tmp:
            save_file(tensors, str(tmp), metadata={"format": FORMAT})
        manifest = dict(self.manifest, format=FORMAT, blocks=meta)
        write_json(os.path.join(out_dir, "manifest.json"), manifest)
        return out_dir

    @classmethod
    def load(cls, out_dir: str) -> "FactorSet":
        mpath, tpath = os.path.join(out_dir, "manifest.json"), os.path.join(out_dir, "factors.safetensors")
        if not os.path.isfile(mpath) or not os.path.isfile(tpath):
            raise DataError(f"{out_dir} is not a complete EK-FAC factor directory (needs manifest.json and factors.safetensors)")
        manifest = read_json(mpath)
        if manifest.get("format") != FORMAT:
            raise DataError(f"{mpath} has format {manifest.get('format')!r}, expected {FORMAT!r}")
        try:
            tensors = load_file(tpath)
        except Exception as exc:  # safetensors raises its own error types on corrupt files
            raise DataError(f"{tpath} cannot be read: {exc}") from None
        blocks = {}
        for n, m in manifest["blocks"].items():
            try:
                t = {k: tensors[f"{n}/{k}"] for k in ("A", "S", "Q_A", "Q_S", "lam")}
            except KeyError as exc:
                raise DataError(f"{tpath} lacks tensor {exc.args[0]} listed in its manifest") from None
            blocks[n] = BlockFactors(n, damping=float(m["damping"]), n_tokens=int(m["n_tokens"]),
                                     n_samples=int(m["n_samples"]), **t)
        return cls(blocks, manifest)

