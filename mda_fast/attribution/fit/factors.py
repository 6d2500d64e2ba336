"""EK-FAC factors of one Kronecker block, their math, and their file format.

A block's weight is ``W [O, I]``; the per-sample gradient of row b is ``G_b = g_b^T a_b [O, I]``.
EK-FAC approximates the (true or empirical) Fisher of the block as

    F ~= (Q_S kron Q_A) diag(vec Lambda) (Q_S kron Q_A)^T          (row-major vec of [O, I])

with ``Q_A`` the eigenvectors of ``A = E_tok[a a^T]`` (I x I), ``Q_S`` those of
``S = E_tok[g g^T]`` (O x O), and ``Lambda[o, i] = E_b[(Q_S^T G_b Q_A)[o, i]^2]`` the eigenvalue
correction from per-sample gradients. ``H^-1 V = Q_S [(Q_S^T V Q_A) / (Lambda + damping)] Q_A^T``.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field

import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_bytes

from mda_fast.errors import DataError, NumericalError
from mda_fast.io import atomic_dir, read_json, write_bytes, write_json

FORMAT = "mda-fast-ekfac/1"
TENSORS = ("A", "S", "Q_A", "Q_S", "lam")
MANIFEST, TENSOR_FILE = "manifest.json", "factors.safetensors"


def check_finite(t: torch.Tensor, what: str, block: str, where: str) -> None:
    """NumericalError naming the block and batch when ``t`` holds NaN or inf."""
    if not bool(torch.isfinite(t).all()):
        raise NumericalError(f"{what} of block {block} is not finite (NaN/inf) at {where}")


def check_finite_views(tensors: dict[str, torch.Tensor], what: str, where: str) -> None:
    """:func:`check_finite` of every {block: tensor}, reading each distinct underlying tensor once.

    A layer's blocks are views of one captured tensor (every head's qk and v block see the attention
    input; their output gradients are slices of the qkv gradient), so all heads cost one check per
    module instead of one per block; the blocks of a bad tensor are then checked one by one to name
    the first bad block (non-finite values outside every block's slice are not an error).
    """
    groups: dict[int, tuple[torch.Tensor, list[str]]] = {}
    for name, t in tensors.items():
        base = t._base if t._base is not None else t
        groups.setdefault(id(base), (base, []))[1].append(name)
    for base, names in groups.values():
        if not bool(torch.isfinite(base).all()):
            for name in names:
                check_finite(tensors[name], what, name, where)


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
    return evals, evecs.contiguous()  # row-major like loaded factors: same GEMM rounding in session and from disk


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


def _finite_number(value, what: str) -> float:
    """``value`` as a float; NumericalError naming ``what`` when it is not a finite number >= 0."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = float("nan")
    if not (math.isfinite(x) and x >= 0):
        raise NumericalError(f"{what} is {value!r}; expected a finite number >= 0")
    return x


@dataclass
class FactorSet:
    """Factors of several blocks plus the manifest describing how they were fitted."""

    blocks: dict[str, BlockFactors]
    manifest: dict = field(default_factory=dict)

    def __getitem__(self, name: str) -> BlockFactors:
        if name not in self.blocks:
            raise DataError(f"the EK-FAC factors hold no block {name}; fitted blocks: {', '.join(self.blocks) or 'none'}")
        return self.blocks[name]

    def check_values(self, where: str = "the EK-FAC factors") -> None:
        """NumericalError naming ``where`` and the tensor unless every tensor is finite, Lambda >= 0
        and every damping a finite number >= 0 (a corrupt factor file must never be scored)."""
        for n, f in self.blocks.items():
            for key in TENSORS:
                t = getattr(f, key)
                if not bool(torch.isfinite(t).all()):
                    raise NumericalError(f"{where}: tensor {n}/{key} holds NaN or inf")
            if f.lam.numel() and float(f.lam.min()) < 0:
                raise NumericalError(f"{where}: tensor {n}/lam (the eigenvalue correction, a mean of squares) "
                                     f"holds negative values (min {float(f.lam.min()):.3g})")
            _finite_number(f.damping, f"{where}: the damping of block {n}")

    def save(self, out_dir: str) -> str:
        """Write ``factors.safetensors`` and ``manifest.json`` (with the tensors' sha256) into a
        temporary sibling directory that replaces ``out_dir`` when both are complete."""
        tensors, meta = {}, {}
        for n, f in self.blocks.items():
            for key in TENSORS:
                # a copy: blocks reading one input share A and Q_A in memory (ekfac.input_key)
                tensors[f"{n}/{key}"] = getattr(f, key).detach().to("cpu", torch.float64).contiguous().clone()
            meta[n] = {"damping": f.damping, "n_tokens": f.n_tokens, "n_samples": f.n_samples, "shape": list(f.shape)}
        data = safetensors_bytes(tensors, metadata={"format": FORMAT})
        manifest = dict(self.manifest, format=FORMAT, blocks=meta, tensors_sha256=hashlib.sha256(data).hexdigest())
        with atomic_dir(out_dir) as tmp:
            write_bytes(tmp / TENSOR_FILE, data)
            write_json(tmp / MANIFEST, manifest)
        self.manifest = manifest
        return out_dir

    @classmethod
    def load(cls, out_dir: str) -> "FactorSet":
        """The factors in ``out_dir``; DataError / NumericalError naming the file for anything
        missing, corrupt, not matching the manifest, or not finite."""
        mpath, tpath = os.path.join(out_dir, MANIFEST), os.path.join(out_dir, TENSOR_FILE)
        if not os.path.isfile(mpath) or not os.path.isfile(tpath):
            raise DataError(f"{out_dir} is not a complete EK-FAC factor directory (needs {MANIFEST} and {TENSOR_FILE})")
        manifest = read_json(mpath)
        if manifest.get("format") != FORMAT:
            raise DataError(f"{mpath} has format {manifest.get('format')!r}, expected {FORMAT!r}")
        if not isinstance(manifest.get("blocks"), dict):
            raise DataError(f"{mpath} lists no blocks")
        with open(tpath, "rb") as fh:
            data = fh.read()
        try:
            tensors = safetensors_load(data)
        except Exception as exc:  # safetensors raises its own error types on corrupt files
            raise DataError(f"{tpath} cannot be read: {exc}") from None
        factors = cls({n: _block(n, m, tensors, mpath, tpath) for n, m in manifest["blocks"].items()}, manifest)
        factors.check_values(tpath)
        if manifest.get("tensors_sha256") not in (None, hashlib.sha256(data).hexdigest()):
            raise DataError(f"{tpath} is not the file {mpath} describes (its sha256 differs): it was written by "
                            f"another fit or changed since; fit the factors again")
        return factors


def _block(name: str, meta: dict, tensors: dict, mpath: str, tpath: str) -> BlockFactors:
    try:
        t = {k: tensors[f"{name}/{k}"] for k in TENSORS}
    except KeyError as exc:
        raise DataError(f"{tpath} lacks tensor {exc.args[0]} listed in its manifest") from None
    damping = _finite_number(meta.get("damping"), f"{mpath}: the damping of block {name}")
    try:
        counts = {k: int(meta[k]) for k in ("n_tokens", "n_samples")}
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{mpath}: block {name} lacks integer n_tokens / n_samples") from None
    return BlockFactors(name, damping=damping, **counts, **t)
