"""Research variants measured in issue 20's table that are not (yet) product features: each asks
why single-checkpoint MDA is far from the exact oracle on the demo's window.

- ``wide_scores``: MDA on a wider subspace (the head's Q, K, V and O: ``L1.H1.qkvo``; or every
  Linear of the model), the score summed over the blocks: is the head restriction what loses it?
- ``adam_scores``: gradient dot product with Adam's preconditioner, q = D^-1 grad f, D = sqrt(v_hat)
  + eps of the checkpoint's Adam state (LESS-style features): does Adam's geometry matter?
- ``tracin_steps``: TracIn at every step of the window with the exact replayed states (the oracle's
  own replay): -lr_s c_s / (B T) grad f(theta_end)^T D_s^-1 grad L_z(theta_s), c_s the clipping
  factor: the first-order effect of the row on the next state, carried to the end unchanged. Is
  the row's own state what single-checkpoint methods miss, or what training does afterwards?
"""

from __future__ import annotations

import numpy as np
import torch

from mda_fast.attribution.score.queries import build_queries
from mda_fast.attribution.unrolled import adam_denominators
from mda_fast.demo.train_demo import new_model
from mda_fast.models.loss import model_row_losses
from mda_fast.oracle import ProbeTarget
from mda_fast.oracle.train_state import Replayer
from mda_fast.probes import parse_probe
from mda_fast.training import load_weights, read_state
from mda_fast.training.checkpoints import restore
from mda_fast.training.optim import OptimConfig, lr_at

LINEARS = [f"L{layer}.{m}" for layer in (0, 1)
           for m in ("attention.query_key_value", "attention.dense", "mlp.dense_h_to_4h", "mlp.dense_4h_to_h")]


def wide_scores(st, name: str, units) -> np.ndarray:
    """MDA (whole-window EK-FAC) over ``units``, each row's scores summed over the blocks."""
    return st.pipeline(name, units).run(top_k=None).scores.sum(1).astype(np.float64)


def adam_scores(st, name: str, units) -> np.ndarray:
    """grad f^T D^-1 grad L_z at the window's end (no curvature), summed over ``units``' blocks."""
    p = st.pipeline(name, units, preconditioner="identity")
    m = p.mda
    raw = build_queries(m.model, m.adapter, m.blocks, m.probes, m.probe_data, None, 16, "torch", precondition=False)
    D = adam_denominators(st.ckpts[st.window[1]], m.model, m.adapter, m.blocks)
    m.use_queries({n: v / D[n][None] for n, v in raw.items()}, f"adam-preconditioned:{name}")
    return p.run(top_k=None).scores.sum(1).astype(np.float64)


def _row_grads(model, params, tokens) -> list[list[torch.Tensor]]:
    out = []
    for i in range(tokens.shape[0]):
        loss = model_row_losses(model, tokens[i:i + 1]).sum()
        out.append([g.detach().clone() for g in torch.autograd.grad(loss, params)])
    return out


def tracin_steps(st) -> np.ndarray:
    """TracIn at every step with the replayed states (see the module doc), over every parameter."""
    a, b = st.window
    ck = st.ckpts[a]
    optim = OptimConfig.from_dict(read_state(ck)["optim"])
    model = new_model(st.cfg)
    load_weights(ck, model)
    rep = Replayer(model, st.source, st.window, st.rps, optim)
    restore(ck, model, rep.optimizer, restore_rng=False)
    start = rep.snapshot(a)
    rep.run_to(start, b)
    params = [p for p in model.parameters() if p.requires_grad]
    model.eval()
    gf = [g.detach().clone() for g in
          torch.autograd.grad(ProbeTarget(parse_probe(st.probe), st.probe_tokens())(model), params)]
    rep.load(start)
    scores = np.zeros((b - a) * st.rps)
    beta2, eps = optim.betas[1], rep.optimizer.param_groups[0]["eps"]
    for s in range(a, b):
        _, tokens = rep.batch(s)
        B, L = tokens.shape
        model.train()
        rowg = _row_grads(model, params, tokens)
        total = [sum(r[k] for r in rowg) / (B * (L - 1)) for k in range(len(params))]
        norm = float(torch.linalg.vector_norm(torch.stack([t.norm() for t in total])))
        clip = min(1.0, optim.clip / (norm + 1e-6)) if optim.clip is not None else 1.0
        rep.advance(s)                 # Adam's v after this step's gradient: the update's denominator
        q = []
        for p, g in zip(params, gf):
            state = rep.optimizer.state[p]
            q.append(g / ((state["exp_avg_sq"] / (1 - beta2 ** float(state["step"]))).sqrt() + eps))
        for i, rg in enumerate(rowg):
            dot = sum(float((qq * gg).sum()) for qq, gg in zip(q, rg))
            scores[(s - a) * st.rps + i] = -lr_at(optim, s) * clip * dot / (B * (L - 1))
    return scores
