"""SOURCE-style propagation between the segments of a trajectory (approximate unrolled
differentiation, Bae et al. 2024), on the EK-FAC of each segment.

Within segment l (K_l steps, Adam step size eta_l on the unit's weights, curvature H_l held fixed),
training is linearised as theta_{k+1} - theta* = (I - eta_l H_l)(theta_k - theta*). Up-weighting a
row z of the segment (at a step averaged over the segment: SOURCE's assumption) moves the
segment's end by

    r_l(z) = -(1 / K_l) (I - exp(-eta_l K_l H_l)) H_l^-1 grad L(z) / B          (B rows per step)

and a later segment l' carries that displacement on by exp(-eta_l' K_l' H_l'). So the query of the
rows of segment l is

    q_l = Phi_l Psi_{l+1} ... Psi_L grad f(theta_T),
    Phi_l = Q diag((1 - exp(-c_l Lambda)) / (K_l Lambda)) Q^T,   Psi_l = Q diag(exp(-c_l Lambda)) Q^T

in segment l's EK-FAC eigenbasis Q (Lambda: the eigenvalues of the per-row Fisher of the *summed*
row loss, which is what ``fit`` estimates). The training loss is the mean over B rows of T tokens,
so H_train = Lambda / T and c_l = eta_l K_l / T. Both maps are ``ops.kron_inverse_apply`` with
Lambda replaced (damping 0): Phi with K Lambda / (1 - exp(-c Lambda)) (-> K / c as Lambda -> 0: no
damping is needed), Psi with exp(c Lambda). The common 1 / B is dropped (it scales every score).

Adam is reduced to one step size per segment: eta_l = lr / median(sqrt(v_hat) + eps) over the
unit's weights, from the Adam state of the segment's end checkpoint (:func:`adam_step_size`); the
per-coordinate preconditioner, momentum and weight decay are not modelled. As c -> infinity (a
segment long against its curvature) Phi_l -> Lambda^-1 / K_l, single-checkpoint influence.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from mda_fast import ops
from mda_fast.attribution.fit.factors import FactorSet
from mda_fast.errors import ConfigError
from mda_fast.training.checkpoints import read_state, restore
from mda_fast.training.optim import OptimConfig, build_optimizer, lr_at

_EXP_MAX = 80.0                    # exp(80) ~ 5.5e34: Psi's replaced eigenvalue stays finite in fp32


def adam_denominators(checkpoint: str | Path, model, adapter, blocks) -> dict[str, torch.Tensor]:
    """{block: sqrt(v_hat) + eps [O, I] fp32}: Adam's denominator over each block's weights, v_hat the
    bias-corrected second moment in ``checkpoint`` (written by ``training.train``). ``model`` is only
    borrowed to map the optimizer state to the blocks (its weights and grads are put back)."""
    state = read_state(checkpoint)
    if "optim" not in state:
        raise ConfigError(f"checkpoint {checkpoint} records no optimizer settings (not written by training.train); "
                          "SOURCE propagation needs the Adam state of every segment's end")
    params = [p for p in model.parameters() if p.requires_grad]
    saved = [p.detach().clone() for p in params]
    opt = build_optimizer(model, OptimConfig.from_dict(state["optim"]))
    restore(checkpoint, model, opt, restore_rng=False)
    beta2, eps = opt.param_groups[0]["betas"][1], opt.param_groups[0]["eps"]
    try:
        for p in params:                 # the blocks' entries through the adapter's own weight slicing
            st = opt.state.get(p, {})
            if "exp_avg_sq" not in st or float(st.get("step", 0)) <= 0:
                raise ConfigError(f"checkpoint {checkpoint} holds no Adam second moments")
            p.grad = (st["exp_avg_sq"] / (1.0 - beta2 ** float(st["step"]))).sqrt() + eps
        return {b.name: adapter.slice_weight(model, b, grad=True).detach().float().clone() for b in blocks}
    finally:
        with torch.no_grad():
            for p, w in zip(params, saved):
                p.copy_(w)
                p.grad = None


def adam_step_size(checkpoint: str | Path, model, adapter, blocks, steps: tuple[int, int]) -> float:
    """eta: the mean learning rate over ``steps`` divided by the median of Adam's denominator
    (:func:`adam_denominators`) over the blocks' weights."""
    dens = adam_denominators(checkpoint, model, adapter, blocks)
    median = float(torch.cat([d.reshape(-1) for d in dens.values()]).double().median())
    cfg = OptimConfig.from_dict(read_state(checkpoint)["optim"])
    lr = sum(lr_at(cfg, s) for s in range(*steps)) / max(1, steps[1] - steps[0])
    return lr / median


def _apply(factors: FactorSet, grads: dict[str, torch.Tensor], replaced, backend: str) -> dict[str, torch.Tensor]:
    """{block: V [n, O, I]} -> Q diag(1 / replaced(Lambda)) Q^T V, one grouped op call."""
    group = []
    for name, V in grads.items():
        QA, QS = factors[name].ops_args(torch.float32, V.device)[:2]
        group.append((QA, QS, replaced(factors[name].lam.double()).float().to(V.device), V.float(), 0.0))
    return dict(zip(grads, ops.kron_inverse_apply_grouped(group, backend=backend)))


def segment_response(factors: FactorSet, grads: dict, c: float, steps: int, backend: str = "auto") -> dict:
    """Phi: Q diag((1 - exp(-c Lambda)) / (K Lambda)) Q^T V (see the module doc)."""
    if not (c > 0 and math.isfinite(c) and steps > 0):
        raise ConfigError(f"SOURCE needs a positive finite c = eta K / T and K > 0 steps, got c={c}, K={steps}")

    def replaced(lam):
        lam = lam.clamp_min(0.0)
        small = c * lam < 1e-8           # (1 - exp(-c lam)) / lam -> c
        safe = torch.where(small, torch.ones_like(lam), lam)
        return torch.where(small, torch.full_like(lam, steps / c), steps * safe / -torch.expm1(-c * safe))
    return _apply(factors, grads, replaced, backend)


def carry(factors: FactorSet, grads: dict, c: float, backend: str = "auto") -> dict:
    """Psi: Q diag(exp(-c Lambda)) Q^T V, how a later segment carries an earlier displacement on."""
    return _apply(factors, grads, lambda lam: torch.exp((c * lam.clamp_min(0.0)).clamp_max(_EXP_MAX)), backend)


def source_queries(final_grads: dict, segments: list[tuple[FactorSet, float, int]], backend: str = "auto") -> list[dict]:
    """[q_l per segment, in time order]: ``final_grads`` {block: [n, O, I]} the probe gradients at the
    window's end, ``segments`` [(factors, c_l, K_l)] in time order."""
    out, v = [], final_grads
    for factors, c, steps in reversed(segments):
        out.append(segment_response(factors, v, c, steps, backend))
        v = carry(factors, v, c, backend)
    return out[::-1]
