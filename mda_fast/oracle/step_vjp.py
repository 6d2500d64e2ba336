"""One training update as a differentiable function, and its vector-Jacobian product.

The update of step s maps (theta, m, v) and the batch's row weights w [B] to (theta', m', v'):

    loss(theta, w) = sum_b w_b * rowloss_b(theta) / (B * (L - 1))     (training.loop, per micro-batch)
    g   = clip(grad_theta loss)                                       (clip_grad_norm_, total 2-norm)
    theta', m', v' = adamw_update(theta, g, m, v, n)                  (training.adam_math, per tensor)

``g`` is built with ``create_graph=True`` so the update is differentiable in theta through g (a
Hessian-vector product in the VJP). The model runs with eager attention here: PyTorch's fused CPU
attention kernel (``_scaled_dot_product_flash_attention_for_cpu``) has no double backward; eager
attention is the same function (the states themselves come from the real training step).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.func import functional_call

from mda_fast.heads import eager_attention
from mda_fast.models.loss import row_losses, split_rows
from mda_fast.oracle.train_state import TrainState, trainable
from mda_fast.training.adam_math import adamw_update
from mda_fast.training.optim import OptimConfig

CLIP_EPS = 1e-6          # torch.nn.utils.clip_grad_norm_: coef = max_norm / (total_norm + 1e-6)


@dataclass
class Adjoint:
    """d target / d (theta, m, v) of the state at ``step`` (one tensor per trainable parameter)."""

    step: int
    theta: list[torch.Tensor]
    m: list[torch.Tensor]
    v: list[torch.Tensor]


def batch_gradient(model, names, theta, tokens, w, micro_batch: int | None) -> list[torch.Tensor | None]:
    """grad_theta of the loop's weighted loss on rows ``tokens`` [B, L] with weights ``w`` [B],
    summed over micro-batches as ``loss.backward()`` accumulates it; differentiable (create_graph).
    None for a parameter the loss does not reach (the optimizer skips it)."""
    B, L = tokens.shape
    denom = B * (L - 1)
    mb = micro_batch or B
    total = [None] * len(theta)
    params = dict(zip(names, theta))
    for i in range(0, B, mb):
        inputs, labels = split_rows(tokens[i:i + mb])
        logits = functional_call(model, params, (), {"input_ids": inputs}).logits
        loss = (w[i:i + mb] * row_losses(logits, labels)).sum() / denom
        gs = torch.autograd.grad(loss, theta, create_graph=True, allow_unused=True)
        total = [g if t is None else (t if g is None else t + g) for t, g in zip(total, gs)]
    return total


def clip_gradient(grads: list, clip: float | None) -> list:
    """clip_grad_norm_'s scaling, differentiable: g * min(1, clip / (||g||_2 + 1e-6))."""
    if clip is None:
        return grads
    present = [g for g in grads if g is not None]
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in present]))
    coef = torch.clamp(clip / (total + CLIP_EPS), max=1.0)
    return [None if g is None else g * coef for g in grads]


def group_settings(model, optimizer) -> list[dict]:
    """Per trainable parameter (``model.parameters()`` order) its optimizer group (betas, eps,
    weight decay): what the live optimizer uses (a restored checkpoint's groups override the config)."""
    by_param = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    return [by_param[id(p)] for _, p in trainable(model)]


def update(model, state: TrainState, theta, m, v, w, tokens, lr: float, optim: OptimConfig,
           micro_batch: int | None, groups: list[dict] | None = None):
    """(theta', m', v') of the update at ``state`` as functions of the given leaves (lists).
    ``groups``: per parameter the optimizer's settings (``group_settings``); None: from ``optim``
    with training.optim.build_optimizer's grouping (weight decay only on tensors of ndim >= 2)."""
    names = [n for n, _ in trainable(model)]
    with eager_attention(model):
        grads = clip_gradient(batch_gradient(model, names, theta, tokens, w, micro_batch), optim.clip)
    groups = groups or [{"weight_decay": optim.weight_decay if p.ndim >= 2 else 0.0, "betas": optim.betas,
                         "eps": optim.eps} for p in theta]
    out_p, out_m, out_v = [], [], []
    for p, g, mi, vi, n, gr in zip(theta, grads, m, v, state.count, groups):
        if g is None:                                    # no gradient: torch's AdamW leaves it alone
            out_p.append(p), out_m.append(mi), out_v.append(vi)
            continue
        count = 1 if n is None else int(n.item()) + 1
        new = adamw_update(p, g, mi, vi, count, lr=lr, weight_decay=gr["weight_decay"], betas=tuple(gr["betas"]),
                           eps=gr["eps"], smooth=optim.smooth_adam)
        out_p.append(new[0]), out_m.append(new[1]), out_v.append(new[2])
    return out_p, out_m, out_v


def leaves(state: TrainState, batch_rows: int) -> tuple[list, list, list, torch.Tensor]:
    """Fresh leaves requiring grad: theta, m, v (zeros before a parameter's first update), w = 1 [B]."""
    theta = [p.detach().clone().requires_grad_() for p in state.params]
    m = [(torch.zeros_like(p) if t is None else t.detach().clone()).requires_grad_()
         for p, t in zip(state.params, state.exp_avg)]
    v = [(torch.zeros_like(p) if t is None else t.detach().clone()).requires_grad_()
         for p, t in zip(state.params, state.exp_avg_sq)]
    w = torch.ones(batch_rows, dtype=state.params[0].dtype, requires_grad=True)
    return theta, m, v, w


def step_vjp(model, state: TrainState, tokens, lr: float, optim: OptimConfig, after: Adjoint,
             micro_batch: int | None = None, groups: list[dict] | None = None) -> tuple[Adjoint, torch.Tensor]:
    """Pull the adjoint of the state after update ``state.step`` back through that update.

    Returns (the adjoint of ``state``, d target / d w [B] for the step's rows)."""
    theta, m, v, w = leaves(state, tokens.shape[0])
    out_p, out_m, out_v = update(model, state, theta, m, v, w, tokens, lr, optim, micro_batch, groups)
    outs, cots = [], []
    for o, c in zip(out_p + out_m + out_v, after.theta + after.m + after.v):
        if o.requires_grad and bool(c.any()):             # zero cotangents (m, v at the end) add nothing
            outs.append(o), cots.append(c)
    ins = theta + m + v + [w]
    got = torch.autograd.grad(outs, ins, cots, allow_unused=True) if outs else [None] * len(ins)
    got = [torch.zeros_like(x) if g is None else g.detach() for x, g in zip(ins, got)]
    k = len(theta)
    return Adjoint(state.step, got[:k], got[k:2 * k], got[2 * k:3 * k]), got[-1]
