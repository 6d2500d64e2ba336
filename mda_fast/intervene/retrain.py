"""Retraining a checkpoint through a window with the rows modified by a :class:`Plan`.

- delete: ``row_weights`` gives the plan's rows weight 0 (masked loss; batch shape unchanged;
  the loss denominator stays B * (L - 1), see ``mda_fast.training.loop``).
- duplicate / insert: :class:`PlanTransform` fills the slot of each target row with the tokens
  of its source row (a real row, or a synthetic row ``SYNTH_BASE + j``).

Seeds. Training itself has no randomness here (no dropout; the continuation starts from fixed
weights and Adam state), so a "seed" must be defined. We define seed k > 0 as a *local data-order
perturbation*: the window's rows are permuted within consecutive blocks of ``shuffle_block``
steps (seeded by k), as a different shuffle of the same data would. Seed 0 is the original
training order. The same seed gives the same order under every condition (paired comparison),
and plan targets follow their row wherever it moves. Random controls are additionally drawn
with the seed (see ``plans.build_plan``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from mda_fast.errors import ConfigError
from mda_fast.intervene.plans import SYNTH_BASE, Plan
from mda_fast.training import OptimConfig, read_state, train


class PlanTransform:
    """``batch_transform(step, row_ids[B], tokens[B, L]) -> (row_ids[B], tokens[B, L])``.

    source: the full training RowSource (positions = training order); synthetic: int array
    [n_syn, L] or None; order: optional int64[rps * (b - a)] permutation of the window's positions.
    """

    def __init__(self, source, plan: Plan, synthetic=None, order: np.ndarray | None = None):
        self.source = source
        self.plan = plan
        self.rps = plan.rows_per_step
        self.a, self.b = plan.window
        self.order = order
        self.sub = dict(zip(plan.targets.tolist(), plan.sources.tolist()))
        self.synthetic = None if synthetic is None else np.asarray(synthetic)
        real = [r for r in self.sub.values() if r < SYNTH_BASE]
        # positions of the rows to copy, resolved once (a big source's id array is never built)
        self._pos = dict(zip(real, source.positions_of(real).tolist())) if real else {}

    def _rows(self, ids: list[int]) -> np.ndarray:
        out = []
        for r in ids:
            if r >= SYNTH_BASE:
                out.append(self.synthetic[r - SYNTH_BASE])
            else:
                out.append(self.source.read(np.array([self._pos[r]]))[0])
        return np.stack(out)

    def __call__(self, step: int, row_ids: torch.Tensor, tokens: torch.Tensor):
        if not self.a <= step < self.b:
            return row_ids, tokens
        ids = row_ids.tolist()
        tok = tokens
        if self.order is not None:
            lo = (step - self.a) * self.rps
            pos = self.order[lo:lo + self.rps] + self.rps * self.a
            ids = self.source.row_ids_at(pos).tolist()
            tok = torch.as_tensor(self.source.read(pos), dtype=torch.long)
        slots = [i for i, r in enumerate(ids) if r in self.sub]
        if slots:
            tok = tok.clone()
            new = [self.sub[ids[i]] for i in slots]
            tok[slots] = torch.as_tensor(self._rows(new), dtype=torch.long)
            for i, r in zip(slots, new):
                ids[i] = r
        return torch.as_tensor(ids, dtype=torch.long), tok


def delete_weights(plan: Plan):
    """``row_weights`` for a plan: 0 for deleted row ids, 1 elsewhere (None when nothing is deleted)."""
    if plan.delete.size == 0:
        return None
    deleted = np.sort(plan.delete)

    def weights(row_ids: torch.Tensor) -> torch.Tensor:
        r = np.asarray(row_ids, dtype=np.int64)
        return torch.as_tensor(~np.isin(r, deleted), dtype=torch.float32)

    return weights


def local_shuffle(n_steps: int, rows_per_step: int, block: int, seed: int) -> np.ndarray | None:
    """Permutation of the window's positions within blocks of ``block`` steps; None for seed 0."""
    if seed == 0 or block <= 1:
        return None
    rng = np.random.default_rng([seed, 0xD47A])
    n = n_steps * rows_per_step
    order = np.arange(n, dtype=np.int64)
    for lo in range(0, n, block * rows_per_step):
        hi = min(n, lo + block * rows_per_step)
        order[lo:hi] = lo + rng.permutation(hi - lo)
    return order


def load_checkpoint_model(path, device="cpu"):
    """The HF model of a checkpoint directory, eager attention (needed for attention weights)."""
    from transformers import AutoModelForCausalLM  # imported on use: transformers takes seconds to import and most commands never need it

    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), attn_implementation="eager",
                                                     dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"checkpoint {path} cannot be loaded as a model ({exc.__class__.__name__})") from None
    return model.to(device)


def optim_from_checkpoint(ckpt_dir, overrides: dict | None = None):
    """OptimConfig saved in the checkpoint's trainer_state (+ overrides), else Pythia-like defaults."""
    st = read_state(ckpt_dir)
    d = dict(st.get("optim") or {})
    d.update(overrides or {})
    return OptimConfig.from_dict(d) if d else OptimConfig()


def retrain(ckpt_dir, source, plan: Plan, end_step: int, optim, run_dir, callbacks=(), seed: int = 0,
            shuffle_block: int = 8, synthetic=None, save_steps=(), device="cpu"):
    """Continue checkpoint ``ckpt_dir`` (at step ``plan.window[0]``) to ``end_step`` under ``plan``.

    Returns the trained model and the :class:`~mda_fast.training.TrainResult`. ``run_dir`` gets
    ``metrics.jsonl`` (and ``step{N}`` checkpoints at ``save_steps``).
    """
    a, b = plan.window
    run_dir = Path(run_dir)
    if run_dir.exists():                       # a partial earlier attempt: start clean
        shutil.rmtree(run_dir)
    model = load_checkpoint_model(ckpt_dir, device)
    order = local_shuffle(b - a, plan.rows_per_step, shuffle_block, seed)
    needs_transform = order is not None or plan.sources.size > 0
    transform = PlanTransform(source, plan, synthetic, order) if needs_transform else None
    result = train(model, source, steps=(a, end_step), rows_per_step=plan.rows_per_step, optim=optim,
                   out_dir=run_dir, save_steps=save_steps, row_weights=delete_weights(plan),
                   callbacks=callbacks, resume=False, seed=seed, batch_transform=transform,
                   init_from=ckpt_dir, extra_state={"plan": plan.name, "intervene_seed": seed})
    return model, result
