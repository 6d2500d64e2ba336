"""The training loop shared by the demo and the causal-intervention retraining.

Rows of step ``s`` (0-based batch index) are source positions ``[rps*s, rps*(s+1))`` — Pythia's
training order — and checkpoint ``step{N}`` holds the state after N updates (rows ``[0, rps*N)``).

Loss normalization (documented contract): for a batch of B rows of L tokens (L-1 predictions each),

    loss = sum_b w_b * sum_t CE(b, t)  /  (B * (L - 1))

i.e. the mean next-token cross-entropy over all tokens of the batch, with each row's summed CE
multiplied by its weight ``w_b`` (default 1). The denominator does not depend on the weights, so a
row with weight 0 is exactly "masked out": the other rows' gradients are unchanged and the batch
shape stays the same (as the paper deletes rows). Micro-batching splits the same sum.
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from mda_fast.errors import ConfigError, DataError
from mda_fast.models.fingerprint import forget_files
from mda_fast.models.loss import model_row_losses
from mda_fast.training.checkpoints import list_checkpoints, read_state, restore, save_checkpoint
from mda_fast.training.optim import OptimConfig, build_optimizer, lr_at, set_lr

RowWeights = Callable[[torch.Tensor], torch.Tensor]          # row_ids[B] -> weights[B]
BatchTransform = Callable[[int, torch.Tensor, torch.Tensor], tuple]  # (step, ids[B], tok[B,L])


@dataclass
class TrainResult:
    start_step: int                      # step the loop actually started from (after any resume)
    end_step: int
    history: list[dict] = field(default_factory=list)   # one metrics dict per update done here
    saved: list[int] = field(default_factory=list)      # checkpoint steps written by this call


def _iter_batches(source, rps: int, a: int, b: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(row_ids [rps], tokens [rps, L]) for steps a..b-1 from a RowSource (or an array of rows)."""
    n = len(source)
    if rps * b > n:
        raise DataError(f"training source has {n} rows but steps up to {b} need {rps * b} "
                        f"({rps} rows per step).")
    if hasattr(source, "batches"):
        it = source.batches(rps, start=rps * a)
        for _ in range(a, b):
            bt = next(it)
            yield torch.as_tensor(np.asarray(bt.row_ids), dtype=torch.long), \
                torch.as_tensor(np.asarray(bt.tokens), dtype=torch.long)
        return
    ids_all = source.row_ids() if hasattr(source, "row_ids") else None
    for s in range(a, b):
        pos = np.arange(rps * s, rps * (s + 1))
        if hasattr(source, "read"):
            tok = source.read(pos)
        else:                                               # plain array / tensor of rows
            tok = np.asarray(source[rps * s: rps * (s + 1)])
        ids = ids_all[pos] if ids_all is not None else pos
        yield torch.as_tensor(np.asarray(ids), dtype=torch.long), torch.as_tensor(np.asarray(tok), dtype=torch.long)


def _call(cb, name: str, *args) -> None:
    fn = getattr(cb, name, None)
    if fn is None and name == "on_step_end" and callable(cb):
        fn = cb                                             # a bare function is an on_step_end
    if fn is not None:
        fn(*args)


def train(model, source, steps: tuple[int, int], rows_per_step: int, optim: OptimConfig,
          out_dir: str | Path | None = None, save_steps: Iterable[int] = (),
          row_weights: RowWeights | None = None, callbacks: Iterable = (), resume: bool = True,
          seed: int = 0, batch_transform: BatchTransform | None = None,
          init_from: str | Path | None = None, tokenizer=None, micro_batch: int | None = None,
          autocast_dtype: torch.dtype | None = None, progress: bool = False,
          extra_state: dict | None = None) -> TrainResult:
    """Train ``model`` in place over steps ``[a, b)`` of ``source``; returns a :class:`TrainResult`.

    - ``model`` is the state at step ``a`` (fresh init for a = 0). With ``init_from`` (a checkpoint
      dir written by this module, at step ``a``) its weights, Adam moments and RNG are loaded first.
    - ``resume``: if ``out_dir`` already holds a checkpoint with a <= N <= b, continue from the last.
    - ``save_steps``: steps N (a <= N <= b) at which ``out_dir/step{N}`` is written.
    - ``row_weights(row_ids[B]) -> [B]`` multiplies each row's summed CE (0 = deleted row).
    - ``batch_transform(step, row_ids[B], tokens[B, L]) -> (row_ids[B'], tokens[B', L])`` substitutes
      rows (duplicate / insert plans) before ``row_weights`` sees them.
    - ``callbacks``: objects with ``on_train_start(step, model)`` and/or
      ``on_step_end(step, model, metrics)`` (or bare functions = on_step_end); ``step`` there is the
      number of updates done, matching checkpoint names. A callback whose ``stop_requested`` is
      true after a step ends the run there (the step is saved when it is in ``save_steps``, and
      ``TrainResult.end_step`` is that step).
    Metrics per update: step, lr, loss (plain mean CE), loss_weighted (the objective), grad_norm
    (before clipping), rows, rows_zero_weight, sec. They are appended to ``out_dir/metrics.jsonl``.
    """
    a, b = int(steps[0]), int(steps[1])
    _check_args(a, b, rows_per_step, micro_batch)
    save_set = {int(s) for s in save_steps if a <= int(s) <= b}
    if save_set and out_dir is None:
        raise ConfigError("save_steps were given but out_dir is None.")
    callbacks = list(callbacks)
    forget_files(model)  # its weights are about to differ from any checkpoint it was loaded from
    optimizer = build_optimizer(model, optim)
    existing = list_checkpoints(out_dir) if (resume and out_dir is not None) else {}
    start = _restore_start(model, optimizer, (a, b), rows_per_step, existing, init_from, seed)

    def save(step: int) -> None:
        state = {"rows_per_step": rows_per_step, "lr": lr_at(optim, step), "optim": optim.to_dict(),
                 "seed": seed, "window": [a, b], **(extra_state or {})}
        save_checkpoint(out_dir, step, model, optimizer, state, tokenizer)
        result.saved.append(step)

    result = TrainResult(start_step=start, end_step=b)
    if start in save_set and start not in existing:
        save(start)
    for cb in callbacks:
        _call(cb, "on_train_start", start, model)
    step_fn = functools.partial(_update, model, optimizer, optim, row_weights=row_weights, micro_batch=micro_batch,
                                device=next(model.parameters()).device, autocast_dtype=autocast_dtype)
    with contextlib.ExitStack() as stack:
        log = stack.enter_context(_open_log(out_dir)) if out_dir is not None else None
        bar = _progress_bar(stack, b - start) if progress else None
        for s, (row_ids, tokens) in zip(range(start, b), _iter_batches(source, rows_per_step, start, b)):
            t0 = time.perf_counter()
            if batch_transform is not None:
                row_ids, tokens = batch_transform(s, row_ids, tokens)
            metrics = step_fn(s, row_ids, tokens)
            metrics["sec"] = time.perf_counter() - t0
            done = s + 1
            for cb in callbacks:
                _call(cb, "on_step_end", done, model, metrics)
            if done in save_set:
                save(done)
            result.history.append(metrics)
            if log is not None:
                log.write(json.dumps(metrics) + "\n")
                log.flush()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['loss']:.3f}")
            if any(getattr(cb, "stop_requested", False) for cb in callbacks):
                result.end_step = done
                break
    return result


def _check_args(a: int, b: int, rows_per_step: int, micro_batch: int | None) -> None:
    if not 0 <= a <= b:
        raise ConfigError(f"training steps ({a}, {b}) must satisfy 0 <= start <= end.")
    if rows_per_step <= 0:
        raise ConfigError(f"rows_per_step must be positive, got {rows_per_step}.")
    if micro_batch is not None and micro_batch <= 0:
        raise ConfigError(f"micro_batch must be positive, got {micro_batch}.")


def _restore_start(model, optimizer, window: tuple[int, int], rows_per_step: int, existing: dict,
                   init_from, seed: int) -> int:
    """Load the state training continues from (the last checkpoint inside the window, else
    ``init_from``, else a fresh seeded start) and return its step."""
    a, b = window
    inside = [s for s in existing if a <= s <= b]
    resumed, from_init = (existing[max(inside)], False) if inside else \
        ((Path(init_from), True) if init_from is not None else (None, False))
    if resumed is None:
        torch.manual_seed(seed)
        return a
    st = read_state(resumed)
    if from_init and st.get("step") != a:
        raise ConfigError(f"init_from checkpoint {init_from} is at step {st.get('step')} "
                          f"but the training window starts at step {a}.")
    if st.get("rows_per_step") not in (None, rows_per_step):
        raise ConfigError(f"checkpoint {resumed} was trained with {st['rows_per_step']} rows per "
                          f"step, not {rows_per_step}.")
    restore(resumed, model, optimizer)
    return int(st["step"])


def _open_log(out_dir):
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return open(Path(out_dir) / "metrics.jsonl", "a")


def _progress_bar(stack: contextlib.ExitStack, total: int):
    return stack.enter_context(tqdm(total=total, desc="train", unit="step"))


def _update(model, optimizer, optim: OptimConfig, s: int, row_ids, tokens, *, row_weights, micro_batch,
            device, autocast_dtype) -> dict:
    """One optimizer update on batch ``s``; returns its metrics."""
    model.train()
    B, L = tokens.shape
    if L < 2:
        raise DataError(f"rows of step {s} have {L} tokens; at least 2 are needed (input + label).")
    if row_weights is not None:
        w = torch.as_tensor(row_weights(row_ids), dtype=torch.float32).reshape(-1)
        if w.shape[0] != B:
            raise ConfigError(f"row_weights returned {w.shape[0]} weights for a batch of {B} rows.")
    else:
        w = torch.ones(B)
    lr = lr_at(optim, s)
    set_lr(optimizer, lr)
    optimizer.zero_grad(set_to_none=True)
    denom = B * (L - 1)
    mb = micro_batch or B
    tot_plain = tot_weighted = 0.0
    for i in range(0, B, mb):
        tok = tokens[i:i + mb].to(device, non_blocking=True)
        wi = w[i:i + mb].to(device)
        ctx = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None
               else torch.autocast(device.type, enabled=False))
        with ctx:
            rl = model_row_losses(model, tok)                                      # [mb]
        loss = (wi * rl).sum() / denom
        loss.backward()
        tot_plain += rl.detach().sum().item()
        tot_weighted += loss.detach().item()
    params = [p for p in model.parameters() if p.grad is not None]
    if optim.clip is not None:
        gn = torch.nn.utils.clip_grad_norm_(params, optim.clip)
    else:
        gn = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
    optimizer.step()
    return {"step": s + 1, "lr": lr, "loss": tot_plain / denom, "loss_weighted": tot_weighted,
            "grad_norm": float(gn), "rows": B, "rows_zero_weight": int((w == 0).sum())}
