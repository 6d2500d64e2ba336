"""Snapshots of the training state (weights + Adam moments + update counts) and the forward replay.

The forward replay runs the training loop's own update (``training.loop._update``: same loss
normalization, row weights, micro-batching, lr schedule, clipping, torch AdamW or SmoothAdamW),
so every state the oracle differentiates at is bitwise the state ``training.train`` reaches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mda_fast.errors import ConfigError
from mda_fast.training.loop import _iter_batches, _update
from mda_fast.training.optim import OptimConfig, build_optimizer


@dataclass
class TrainState:
    """The state before update ``step``: one entry per trainable parameter (``model.parameters()``
    order); ``exp_avg``/``exp_avg_sq``/``count`` are None for a parameter never updated yet."""

    step: int
    params: list[torch.Tensor]
    exp_avg: list[torch.Tensor | None]
    exp_avg_sq: list[torch.Tensor | None]
    count: list[torch.Tensor | None]        # Adam's per-parameter update count (float tensor)


def trainable(model) -> list[tuple[str, torch.nn.Parameter]]:
    """(name, parameter) of the parameters training updates, in ``model.parameters()`` order."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def _clone(t):
    return None if t is None else t.detach().clone()


def capture(model, optimizer, step: int) -> TrainState:
    """A copy of the model's and optimizer's state (nothing shared with the live tensors)."""
    params = [p for _, p in trainable(model)]
    st = [optimizer.state.get(p, {}) for p in params]
    return TrainState(step, [p.detach().clone() for p in params],
                      [_clone(s.get("exp_avg")) for s in st], [_clone(s.get("exp_avg_sq")) for s in st],
                      [_clone(s.get("step")) for s in st])


@torch.no_grad()
def restore_into(state: TrainState, model, optimizer) -> None:
    """Load ``state`` into the live model and optimizer (copies, so the snapshot stays intact)."""
    for (_, p), val, m, v, n in zip(trainable(model), state.params, state.exp_avg, state.exp_avg_sq,
                                    state.count):
        p.copy_(val)
        if m is None:
            optimizer.state.pop(p, None)
        else:
            optimizer.state[p] = {"step": n.clone(), "exp_avg": m.clone(), "exp_avg_sq": v.clone()}


class Replayer:
    """Re-runs training steps of one window: ``advance(s)`` applies update ``s`` to the live model.

    ``batch(s)`` -> (row_ids [rps], tokens [rps, L]): the rows of step s, as the loop reads them.
    """

    def __init__(self, model, source, steps: tuple[int, int], rows_per_step: int, optim: OptimConfig,
                 micro_batch: int | None = None):
        if any(getattr(model.config, k, 0) for k in ("attention_dropout", "hidden_dropout", "dropout")):
            raise ConfigError("the exact oracle needs deterministic training: the model has dropout.")
        self.model, self.source, self.steps = model, source, (int(steps[0]), int(steps[1]))
        self.rps, self.optim, self.micro_batch = int(rows_per_step), optim, micro_batch
        self.optimizer = build_optimizer(model, optim)
        self.device = next(model.parameters()).device

    def batch(self, s: int) -> tuple[torch.Tensor, torch.Tensor]:
        return next(_iter_batches(self.source, self.rps, s, s + 1))

    def advance(self, s: int) -> None:
        row_ids, tokens = self.batch(s)
        _update(self.model, self.optimizer, self.optim, s, row_ids, tokens, row_weights=None,
                micro_batch=self.micro_batch, device=self.device, autocast_dtype=None)

    def snapshot(self, step: int) -> TrainState:
        return capture(self.model, self.optimizer, step)

    def load(self, state: TrainState) -> None:
        restore_into(state, self.model, self.optimizer)

    def run_to(self, state: TrainState, end: int, keep_every: int = 0) -> list[TrainState]:
        """From ``state``, apply updates up to step ``end``; returns the snapshots taken every
        ``keep_every`` steps, the start's own first (0: none); the model ends at step ``end``."""
        self.load(state)
        kept = [state] if keep_every else []
        for s in range(state.step, end):
            self.advance(s)
            if keep_every and (s + 1 - state.step) % keep_every == 0 and s + 1 < end:
                kept.append(self.snapshot(s + 1))
        return kept
