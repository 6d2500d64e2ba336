"""The exact metagradient: d target(theta_T) / d w_i for every row i of a training window.

Each row's summed CE enters its step's loss multiplied by a weight w_i (``training.loop``); at
w = 1 (the run as trained) the oracle returns the derivative of a scalar target of the final
weights with respect to every w_i, through every real update of the window (REPLAY/MAGIC-style
reverse-mode differentiation of the optimizer):

1. forward replay from the start state, keeping a snapshot every ``every`` steps (default
   ceil(sqrt(T)): memory ~ (T/every + every) training states);
2. target value and its gradient at theta_T: the adjoint (theta_bar, m_bar = 0, v_bar = 0);
3. reverse sweep, segment by segment from the last: re-run the segment forward from its snapshot
   keeping every state, then for t from the segment's end down, pull the adjoint back through
   update t (``step_vjp``) and record d target / d w of step t's rows.

Cost: ~2 forward replays of training + T VJPs of an update (each a double backward, ~3-5 training
steps). With ``out_dir`` the sweep saves its progress every ``save_every`` steps and resumes from it.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from mda_fast.errors import ConfigError
from mda_fast.lock import claim
from mda_fast.oracle.step_vjp import Adjoint, group_settings, step_vjp
from mda_fast.oracle.sweep_store import SweepStore, sweep_identity
from mda_fast.oracle.train_state import Replayer, TrainState, trainable
from mda_fast.training.checkpoints import read_state, restore
from mda_fast.training.optim import OptimConfig, lr_at

Target = Callable[[torch.nn.Module], torch.Tensor]      # model at theta_T -> scalar (differentiable)


@dataclass
class MetaGradient:
    """row_ids int64 [N] (the window's rows in training order), weight_grad float64 [N] =
    d target / d w_i at w = 1, target = the target's value at the window's end."""

    row_ids: np.ndarray
    weight_grad: np.ndarray
    target: float
    steps: tuple[int, int]
    info: dict = field(default_factory=dict)


def target_adjoint(model, target: Target, step: int) -> tuple[float, Adjoint]:
    """(target value, its adjoint: theta_bar = grad target, m_bar = v_bar = 0) at the live model."""
    params = [p for _, p in trainable(model)]
    value = target(model)
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        raise ConfigError("the oracle's target must return a scalar tensor.")
    grads = torch.autograd.grad(value.reshape(()), params, allow_unused=True)
    theta = [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(params, grads)]
    zeros = [torch.zeros_like(p) for p in params]
    return float(value.detach()), Adjoint(step, theta, zeros, [z.clone() for z in zeros])


def _window(rep: Replayer) -> tuple[np.ndarray, np.ndarray]:
    """(row ids [T*rps], tokens [T*rps, L]) of the window, in training order."""
    ids, toks = zip(*(rep.batch(s) for s in range(*rep.steps)))
    return torch.cat(ids).numpy(), torch.cat(toks).numpy()


def _start(rep: Replayer, init_from) -> TrainState:
    """The state at the window's start: the live model (fresh optimizer) or checkpoint ``init_from``."""
    a = rep.steps[0]
    if init_from is not None:
        st = read_state(init_from)
        if st.get("step") != a:
            raise ConfigError(f"init_from checkpoint {init_from} is at step {st.get('step')}, "
                              f"but the window starts at step {a}.")
        restore(init_from, rep.model, rep.optimizer, restore_rng=False)
    return rep.snapshot(a)


def exact_metagradient(model, source, steps: tuple[int, int], rows_per_step: int, optim: OptimConfig,
                       target: Target, *, init_from=None, micro_batch: int | None = None,
                       every: int | None = None, out_dir=None, save_every: int = 25,
                       target_key: str | None = None, on_step: Callable[[int], None] | None = None
                       ) -> MetaGradient:
    """d target / d w_i over steps ``[a, b)`` of ``source`` (see the module doc).

    ``model`` holds the state at step a (or give ``init_from``, a checkpoint of ``training.train`` at
    step a: weights + Adam moments); it ends at theta_b (unless a stored result is reused). ``target(model) -> scalar``. ``every``: the
    snapshot interval. ``out_dir``: resumable outputs (``sweep_store``); ``target_key`` names the
    target in their identity (default: the callable's ``key`` or qualified name).
    ``on_step(t)`` is called after each step's VJP (an exception there stops the sweep)."""
    rep = Replayer(model, source, steps, rows_per_step, optim, micro_batch)
    a, b = rep.steps
    if b <= a:
        raise ConfigError(f"the oracle's window [{a}, {b}) is empty.")
    every = int(every or math.ceil(math.sqrt(b - a)))
    start = _start(rep, init_from)
    key = target_key or getattr(target, "key", None) or getattr(target, "__qualname__", repr(target))
    store = None
    if out_dir is not None:
        ids, toks = _window(rep)
        store = SweepStore(out_dir, sweep_identity(start, toks, ids, optim.to_dict(), rows_per_step, (a, b),
                                                   micro_batch, key))
    with claim(out_dir) if store else contextlib.nullcontext():
        done = store.finished() if store else None
        if done is not None:
            return MetaGradient(done["row_ids"], done["weight_grad"], done["target"], (a, b), {"reused": True})
        return _sweep(rep, start, target, every, store, save_every, on_step)


def _sweep(rep: Replayer, start: TrainState, target: Target, every: int, store, save_every: int,
           on_step) -> MetaGradient:
    a, b = rep.steps
    rps = rep.rps
    t0 = time.perf_counter()
    snaps = rep.run_to(start, b, keep_every=every)
    final = rep.snapshot(b)
    t_forward = time.perf_counter() - t0
    value, adj = target_adjoint(rep.model, target, b)
    groups = group_settings(rep.model, rep.optimizer)
    grad, row_ids = np.zeros((b - a) * rps), np.zeros((b - a) * rps, np.int64)
    prog = store.load_progress() if store else None
    if prog is not None:
        adj, grad, row_ids, value = prog["adjoint"], prog["weight_grad"], prog["row_ids"], prog["target"]
    for snap in reversed(snaps):
        end = min(snap.step + every, adj.step)
        for st in reversed(rep.run_to(snap, end, keep_every=1) if end > snap.step else []):
            row, tokens = rep.batch(st.step)
            adj, wg = step_vjp(rep.model, st, tokens, lr_at(rep.optim, st.step), rep.optim, adj, rep.micro_batch,
                               groups)
            i = (st.step - a) * rps
            grad[i:i + rps], row_ids[i:i + rps] = wg.double().numpy(), row.numpy()
            if on_step is not None:
                on_step(st.step)
            if store and st.step > a and (b - st.step) % save_every == 0:
                store.save_progress(adj, grad, row_ids, value)
    info = {"every": every, "forward_seconds": t_forward, "total_seconds": time.perf_counter() - t0,
            "resumed_from": None if prog is None else int(prog["step"])}
    rep.load(final)                                     # the model ends at theta_b, as training left it
    if store:
        store.save_result(row_ids, grad, value, {"steps": [a, b], "rows_per_step": rps, **info})
    return MetaGradient(row_ids, grad, value, (a, b), info)
