"""AdamW's update as a pure function of tensors, and the smoothed-Adam optimizer built on it.

One update of one parameter tensor (torch.optim.AdamW's single-tensor arithmetic, same order):

    p'  = p * (1 - lr * wd)
    m'  = m + (g - m) * (1 - beta1)                 (lerp, as torch)
    v'  = v * beta2 + (1 - beta2) * g * g
    den = sqrt(v') / sqrt(1 - beta2^n) + eps        (plain Adam)
    den = sqrt(v' / (1 - beta2^n) + eps^2)          (smooth Adam: eps inside the square root)
    p'  = p' - lr / (1 - beta1^n) * m' / den

``n`` is the update count including this one. The function is differentiable in (p, g, m, v) so
the exact oracle (``mda_fast.oracle``) differentiates the same arithmetic the training ran. Plain
Adam's sqrt(v') has an infinite derivative at v' = 0 (a coordinate whose gradient has always been
0, e.g. an unused embedding row); there m' is 0 too and the true derivative of the update through
v' is 0, so the square root's gradient is masked to 0 where v' == 0 instead of giving 0 * inf = NaN.
"""

from __future__ import annotations

import torch


def safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """sqrt(x) for x >= 0 whose derivative is 0 (not inf) where x == 0."""
    pos = x > 0
    return torch.where(pos, torch.where(pos, x, torch.ones_like(x)).sqrt(), torch.zeros_like(x))


def adamw_update(p, g, m, v, n: int, *, lr: float, weight_decay: float, betas: tuple[float, float],
                 eps: float, smooth: bool = False):
    """One AdamW update of one tensor: (p, g, m, v) [same shape], update count n -> (p', m', v')."""
    beta1, beta2 = betas
    if weight_decay != 0:
        p = p * (1 - lr * weight_decay)
    m = m + (g - m) * (1 - beta1)
    v = v * beta2 + (1 - beta2) * (g * g)
    bc1, bc2 = 1 - beta1 ** n, 1 - beta2 ** n
    if smooth:
        den = (v / bc2 + eps * eps).sqrt()
    else:
        den = safe_sqrt(v) / (bc2 ** 0.5) + eps
    return p - (lr / bc1) * (m / den), m, v


class SmoothAdamW(torch.optim.Optimizer):
    """AdamW with eps inside the square root (:func:`adamw_update` with ``smooth=True``).

    Its state per parameter has torch.optim.AdamW's keys (``step`` float tensor, ``exp_avg``,
    ``exp_avg_sq``), so checkpoints (``optimizer.pt``) read and write the same way.
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["step"] = torch.tensor(0.0)
                    st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                st["step"] += 1
                new_p, m, v = adamw_update(p, p.grad, st["exp_avg"], st["exp_avg_sq"], int(st["step"].item()),
                                           lr=group["lr"], weight_decay=group["weight_decay"],
                                           betas=group["betas"], eps=group["eps"], smooth=True)
                p.copy_(new_p)
                st["exp_avg"].copy_(m)
                st["exp_avg_sq"].copy_(v)
        return loss
