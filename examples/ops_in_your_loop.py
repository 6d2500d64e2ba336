"""EK-FAC influence on one nn.Linear, in your own torch loop, with mda_fast.ops doing the hot math.

A toy model (Linear -> tanh -> *target* Linear -> tanh -> Linear readout, cross-entropy at every
token) is run once over the training rows and once over the query rows with two hooks on the target
layer: its input activations a [B, T, I] and the gradient of the summed loss w.r.t. its output
g [B, T, O]. Every row's weight gradient is G_b = sum_t g_bt a_bt^T [O, I]; nothing below
materializes it. The ops then give

* ``ekfac_lambda_accumulate``  Λ = mean_b (Q_S^T G_b Q_A)^2, EK-FAC's eigenvalue correction;
* ``project_per_sample_grad``  P_out^T G_b P_in (identity projections: the query gradients
  themselves; seeded random ones: compressed per-row gradients for an index);
* ``kron_inverse_apply``       (EK-FAC + damping)^-1 applied to the query gradients;
* ``grad_dot_queries``         scores[b, q] = <G_b, H^-1 grad f_q>.

``brute_force`` recomputes all of it with plain torch: one backward per row for the per-row
gradients, a dense [O*I, O*I] EK-FAC matrix and ``torch.linalg.solve``. ``main`` returns both sides'
relative errors and ``ok`` (all within tolerance). Run: ``python examples/ops_in_your_loop.py``.

Score sign: scores[b, q] = grad L_b^T H^-1 grad f_q with f_q the query row's loss, so a positive
score says up-weighting training row b lowers the query's loss (kronfluence's convention).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F

from mda_fast.ops import (SeededProjection, ekfac_lambda_accumulate, grad_dot_queries, kron_inverse_apply,
                          project_per_sample_grad)

TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 5e-2}  # relative error, by the ops' input dtype


class Toy(nn.Module):
    """x [B, T, d_in] -> logits [B, T, classes]; ``target`` ([O, I] weight, no bias) is attributed."""

    def __init__(self, d_in: int, I: int, O: int, classes: int):
        super().__init__()
        self.inp, self.target, self.out = nn.Linear(d_in, I), nn.Linear(I, O, bias=False), nn.Linear(O, classes)

    def forward(self, x):
        return self.out(torch.tanh(self.target(torch.tanh(self.inp(x)))))


def row_losses(model: nn.Module, x, y, mean: bool = False) -> torch.Tensor:
    """[B] summed token cross-entropy of each row (``mean``: divided by B, the usual bug for this)."""
    B, T = y.shape
    ce = F.cross_entropy(model(x).reshape(B * T, -1), y.reshape(B * T), reduction="none").view(B, T).sum(1)
    return ce / B if mean else ce


class Capture:
    """Hooks on one nn.Linear: ``a`` its input [B, T, I], ``g`` d(loss)/d(output) [B, T, O]."""

    def __init__(self, layer: nn.Linear):
        self.a = self.g = None
        self.handle = layer.register_forward_hook(self._forward)

    def _forward(self, module, inputs, output):
        self.a = inputs[0].detach()
        output.register_hook(self._backward)

    def _backward(self, grad):
        self.g = grad.detach()

    def run(self, model: nn.Module, x, y, mean_loss: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(a, g) of the rows x, y: one forward and one backward of the summed row losses."""
        row_losses(model, x, y, mean_loss).sum().backward()
        model.zero_grad(set_to_none=True)
        return self.a, self.g


def eigenbases(a: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Q_A [I, I], Q_S [O, O]): eigenvectors of the token covariances of a and g (float64 eigh)."""
    A = torch.einsum("bti,btj->ij", a.double(), a.double()) / (a.shape[0] * a.shape[1])
    S = torch.einsum("bti,btj->ij", g.double(), g.double()) / (g.shape[0] * g.shape[1])
    return torch.linalg.eigh(A).eigenvectors.float(), torch.linalg.eigh(S).eigenvectors.float()


def with_ops(train, query, Q_A, Q_S, *, k: int, backend: str, dtype: torch.dtype) -> dict:
    """Λ, damping, query gradients, preconditioned queries, scores and projected row gradients, all
    by the ops; a, g go in as ``dtype`` (fp32 or bf16), everything comes out fp32."""
    (a, g), (aq, gq) = [(x.to(dtype), y.to(dtype)) for x, y in (train, query)]
    N, I, O = a.shape[0], a.shape[2], g.shape[2]
    lam = torch.zeros(O, I)
    ekfac_lambda_accumulate(a, g, Q_A, Q_S, lam, backend=backend)  # in place: lam += sum_b (Q_S^T G_b Q_A)^2
    lam /= N
    damping = 0.1 * float(lam.mean())  # mda-fast's default: 0.1 x the mean eigenvalue
    V = project_per_sample_grad(aq, gq, torch.eye(I, dtype=dtype), torch.eye(O, dtype=dtype), backend=backend)
    pre = kron_inverse_apply(Q_A, Q_S, lam, V, damping, backend=backend)  # [n, O, I]
    scores = grad_dot_queries(a, g, pre, backend=backend)  # [N, n]
    P_in, P_out = SeededProjection(I, k, seed=1), SeededProjection(O, k, seed=2)  # never stored
    proj = project_per_sample_grad(a, g, P_in, P_out, backend=backend)  # [N, k, k]
    return {"lam": lam, "damping": damping, "V": V, "pre": pre, "scores": scores, "proj": proj,
            "P_in": P_in, "P_out": P_out}


def per_row_grads(model: Toy, x, y) -> torch.Tensor:
    """[B, O, I]: plain autograd, one backward per row, no hooks."""
    out = []
    for b in range(x.shape[0]):
        model.zero_grad(set_to_none=True)
        row_losses(model, x[b:b + 1], y[b:b + 1]).sum().backward()
        out.append(model.target.weight.grad.detach().clone())
    model.zero_grad(set_to_none=True)
    return torch.stack(out)


def brute_force(model: Toy, train_xy, query_xy, Q_A, Q_S, damping: float, P_in, P_out) -> dict:
    """The same quantities with plain torch in float64: per-row gradients by autograd, the EK-FAC
    matrix K diag(Λ + damping) K^T (K = Q_S ⊗ Q_A) built densely and solved."""
    G, Gq = per_row_grads(model, *train_xy).double(), per_row_grads(model, *query_xy).double()
    N, O, I = G.shape
    QA, QS = Q_A.double(), Q_S.double()
    lam = ((QS.T @ G @ QA) ** 2).mean(0)  # [O, I]
    K = torch.kron(QS, QA)  # row-major vec: vec(Q_S^T G Q_A) = K^T vec(G)
    H = K @ torch.diag(lam.reshape(-1) + damping) @ K.T
    pre = torch.linalg.solve(H, Gq.reshape(-1, O * I).T).T.reshape(-1, O, I)
    scores = G.reshape(N, -1) @ pre.reshape(-1, O * I).T
    proj = P_out.materialize(torch.float64).T @ G @ P_in.materialize(torch.float64)
    return {"lam": lam, "V": Gq, "pre": pre, "scores": scores, "proj": proj}


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-300))


def make_data(n: int, T: int, d_in: int, classes: int, gen: torch.Generator):
    return torch.randn(n, T, d_in, generator=gen), torch.randint(0, classes, (n, T), generator=gen)


def main(n_train: int = 64, n_query: int = 3, T: int = 6, d_in: int = 7, I: int = 12, O: int = 9,
         classes: int = 5, k: int = 4, backend: str = "auto", dtype: torch.dtype = torch.float32,
         mean_loss: bool = False, seed: int = 0, verbose: bool = True) -> dict:
    """Run the ops and the brute force on a fresh toy model; {"errors": {name: rel err}, "ok": bool,
    "tolerance": float, "scores": [n_train, n_query] from the ops}. ``mean_loss``: capture with a
    mean-reduced loss (a common mistake: every g is 1/B too small), which the check must catch."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = Toy(d_in, I, O, classes)
    train_xy, query_xy = make_data(n_train, T, d_in, classes, gen), make_data(n_query, T, d_in, classes, gen)
    cap = Capture(model.target)
    train, query = cap.run(model, *train_xy, mean_loss), cap.run(model, *query_xy, mean_loss)
    cap.handle.remove()
    Q_A, Q_S = eigenbases(*train)
    ops = with_ops(train, query, Q_A, Q_S, k=k, backend=backend, dtype=dtype)
    ref = brute_force(model, train_xy, query_xy, Q_A, Q_S, ops["damping"], ops["P_in"], ops["P_out"])
    errors = {name: rel_err(ops[name], ref[name]) for name in ("lam", "V", "pre", "scores", "proj")}
    tol = TOLERANCE[dtype]
    ok = all(e <= tol for e in errors.values())
    if verbose:
        for name, e in errors.items():
            print(f"{name:>7}: relative error {e:.2e} (tolerance {tol:.0e})")
        print(f"ops and plain-torch brute force {'agree' if ok else 'DISAGREE'} (backend={backend}, {dtype})")
    return {"errors": errors, "ok": ok, "tolerance": tol, "scores": ops["scores"]}


def cli() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "cpp", "cuda", "triton"])
    p.add_argument("--bf16", action="store_true", help="feed the ops bf16 activations and gradients")
    p.add_argument("--n-train", type=int, default=64)
    args = p.parse_args()
    out = main(n_train=args.n_train, backend=args.backend, dtype=torch.bfloat16 if args.bf16 else torch.float32)
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(cli())
