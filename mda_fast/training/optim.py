"""Optimizer settings and the GPT-NeoX (Pythia) learning-rate schedule.

The schedule follows GPT-NeoX's ``AnnealingLR`` so retraining a Pythia window reproduces the
rates the original run used: the update that consumes batch ``s`` (0-based) uses

    warmup (s <= warmup_steps):  lr * s / warmup_steps
    cosine (after warmup):       min_lr + (lr - min_lr) / 2 * (1 + cos(pi * (s - w) / (total - w)))
    constant:                    lr

with ``min_lr = min_lr_ratio * lr`` and ``s`` clamped to ``total_steps``. Note the NeoX quirk
kept on purpose: with warmup the very first update (s = 0) has lr 0.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

import torch

from mda_fast.errors import ConfigError
from mda_fast.training.adam_math import SmoothAdamW

# Pythia's published configs (EleutherAI/pythia models/*/pythia-*.yml): Adam(0.9, 0.95), eps 1e-8,
# weight decay 0.1, clip 1.0, warmup 1% of 143k steps, cosine to 0.1 * lr over 143k steps.
PYTHIA_LR = {
    "14m": 1e-3, "31m": 1e-3, "70m": 1e-3, "160m": 6e-4, "410m": 3e-4,
    "1b": 3e-4, "1.4b": 2e-4, "2.8b": 1.6e-4, "6.9b": 1.2e-4, "12b": 1.2e-4,
}
PYTHIA_TOTAL_STEPS = 143_000


@dataclass
class OptimConfig:
    """AdamW + clipping + schedule. ``schedule`` is "cosine" or "constant"."""

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1
    clip: float | None = 1.0
    warmup_steps: int = 0
    total_steps: int = PYTHIA_TOTAL_STEPS
    min_lr_ratio: float = 0.1
    schedule: str = "cosine"
    extra: dict = field(default_factory=dict)  # free-form notes saved with checkpoints
    # eps inside the square root (training.adam_math.SmoothAdamW): differentiable enough for the
    # exact oracle (mda_fast.oracle). Left out of to_dict() when False, so the identity of every
    # existing run and checkpoint (which fingerprints to_dict()) is unchanged.
    smooth_adam: bool = False

    def __post_init__(self):
        self.betas = tuple(float(b) for b in self.betas)
        if self.schedule not in ("cosine", "constant"):
            raise ConfigError(f"optim.schedule {self.schedule!r} is not one of 'cosine', 'constant'.")
        if not self.lr > 0:
            raise ConfigError(f"optim.lr must be positive, got {self.lr}.")
        if self.warmup_steps < 0 or self.total_steps <= 0:
            raise ConfigError(
                f"optim.warmup_steps ({self.warmup_steps}) must be >= 0 and "
                f"optim.total_steps ({self.total_steps}) > 0.")
        if self.schedule == "cosine" and self.warmup_steps >= self.total_steps:
            raise ConfigError(
                f"optim.warmup_steps ({self.warmup_steps}) must be below total_steps ({self.total_steps}).")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(self.betas)
        if not self.smooth_adam:
            del d["smooth_adam"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "OptimConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"optim settings have unknown keys {unknown}; known: {sorted(known)}.")
        return cls(**d)

    @classmethod
    def pythia(cls, size: str) -> "OptimConfig":
        """The settings Pythia ``size`` ("14m", "70m", "160m", ...) was trained with."""
        key = size.lower().removeprefix("pythia-").removesuffix("-deduped")
        if key not in PYTHIA_LR:
            raise ConfigError(f"no Pythia preset for size {size!r}; known: {sorted(PYTHIA_LR)}.")
        return cls(lr=PYTHIA_LR[key], betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, clip=1.0,
                   warmup_steps=PYTHIA_TOTAL_STEPS // 100, total_steps=PYTHIA_TOTAL_STEPS,
                   min_lr_ratio=0.1, schedule="cosine")


def lr_at(cfg: OptimConfig, step: int) -> float:
    """Learning rate of the update that consumes batch ``step`` (0-based); see module doc."""
    if cfg.schedule == "constant" and cfg.warmup_steps == 0:
        return cfg.lr
    s = min(step, cfg.total_steps)
    if cfg.warmup_steps > 0 and s <= cfg.warmup_steps:
        return cfg.lr * s / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    min_lr = cfg.min_lr_ratio * cfg.lr
    frac = (s - cfg.warmup_steps) / (cfg.total_steps - cfg.warmup_steps)
    return min_lr + (cfg.lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * frac))


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW with GPT-NeoX's grouping: no weight decay on biases and norm weights (ndim < 2);
    ``SmoothAdamW`` (same state, eps inside the square root) when ``cfg.smooth_adam``."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if cfg.smooth_adam:
        return SmoothAdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr
