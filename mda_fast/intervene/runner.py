"""Running retraining conditions: one task per (condition, seed), in parallel worker processes.

A task retrains the window's first checkpoint under its resolved plan (``retrain.retrain``) with a
:class:`~mda_fast.intervene.track.Tracker`, and writes ``<run_dir>/curve.json`` atomically when it
ends. A finished task whose fingerprint (content of the plan, the synthetic rows and the settings:
``fingerprint.run_fingerprint``) matches is reused, so a killed experiment resumes where it
stopped and never reruns a finished run; a task cut short leaves no ``curve.json``.

Parallelism. The retrained models are tiny, so one process per core with one thread each beats
one process with all threads (the matrices are too small to split). Workers are spawned (a fork of
a process that already ran OpenMP regions is not safe) and receive the shared settings once; the
row source travels by reopening its files (``MMIdxSource.__reduce__``), never as a copy of its rows.
As with any spawned worker, a script that calls this with ``jobs > 1`` must do so under
``if __name__ == "__main__":`` (the ``mda`` command does).
"""

from __future__ import annotations

import multiprocessing
import pickle
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mda_fast.errors import ConfigError
from mda_fast.intervene.plans import Plan
from mda_fast.intervene.retrain import retrain
from mda_fast.intervene.track import StopRule, Tracker
from mda_fast.io import read_json, write_json
from mda_fast.probes import probe_forward


@dataclass
class RunShared:
    """What every task of an experiment shares (sent once to each worker)."""

    checkpoint: str                  # checkpoint directory at the window's start step
    source: object                   # RowSource of the training data (training order)
    end_step: int
    optim: object                    # OptimConfig
    cadence: int
    shuffle_block: int
    probe_tokens: torch.Tensor       # [n, 2S] tracking sequences
    heldout: torch.Tensor | None     # [m, L] rows for the ICL score
    stop: StopRule | None
    device: str = "cpu"
    threads: int = 1                 # torch threads per worker process
    end_probes: dict | None = None   # {name: (Probe, tokens [n, L])} measured on the final model (LDS)


@dataclass
class RunTask:
    name: str                        # condition label
    seed: int
    plan: Plan
    synthetic: np.ndarray | None     # [n_syn, L] rows of insert-synthetic, else None
    run_dir: Path
    key: str                         # content fingerprint; a finished run with this key is reused

    def finished(self) -> dict | None:
        done = self.run_dir / "curve.json"
        if not done.is_file():
            return None
        prev = read_json(done)
        return prev if prev.get("fingerprint") == self.key else None


def run_one(task: RunTask, shared: RunShared) -> dict:
    """Retrain one task and write its curve; returns the curve dict."""
    tracker = Tracker(shared.probe_tokens, shared.heldout, shared.cadence, end_step=shared.end_step,
                      stop=shared.stop)
    t0 = time.perf_counter()
    model, _ = retrain(shared.checkpoint, shared.source, task.plan, shared.end_step, shared.optim,
                       task.run_dir / "train", callbacks=[tracker], seed=task.seed, shuffle_block=shared.shuffle_block,
                       synthetic=task.synthetic, device=shared.device)
    curve = tracker.curve()
    curve.update({"sec": time.perf_counter() - t0, "fingerprint": task.key, "stopped_early": tracker.stop_requested})
    if shared.end_probes:
        curve["end_probes"] = {name: probe_mean(model, probe, tokens) for name, (probe, tokens) in shared.end_probes.items()}
    write_json(task.run_dir / "curve.json", curve)
    return curve


def probe_mean(model, probe, tokens: torch.Tensor, batch: int = 64) -> float:
    """The probe averaged over its probe set (as the attribution's grad f is), eval mode, no grad."""
    model.eval()
    dev = next(model.parameters()).device
    with torch.no_grad():
        total = sum(float(probe_forward(model, probe, tokens[i:i + batch].to(dev))) for i in range(0, len(tokens), batch))
    return total / len(tokens)


_SHARED: RunShared | None = None


def _init_worker(shared_bytes: bytes) -> None:
    global _SHARED
    _SHARED = pickle.loads(shared_bytes)
    torch.set_num_threads(_SHARED.threads)


def _worker(task: RunTask) -> dict:
    return run_one(task, _SHARED)


def run_tasks(tasks: list[RunTask], shared: RunShared, jobs: int = 1, log=print) -> dict[tuple[str, int], dict]:
    """Run (or reuse) every task; returns {(name, seed): curve}. ``jobs`` worker processes
    (1: in this process, with its threads)."""
    if jobs < 1:
        raise ConfigError(f"jobs must be >= 1, got {jobs}")
    curves, todo = {}, []
    for t in tasks:
        prev = t.finished()
        if prev is not None:
            curves[(t.name, t.seed)] = prev
        else:
            todo.append(t)
    if log and len(curves):
        log(f"[intervene] reusing {len(curves)} finished runs, {len(todo)} to train")
    t_start = time.perf_counter()

    def report(i, t, curve):
        if log:
            eta = (time.perf_counter() - t_start) / i * (len(todo) - i)
            log(f"[intervene] {i}/{len(todo)} {t.name} seed {t.seed}: {curve['steps'][-1] - curve['steps'][0]} "
                f"steps in {curve['sec']:.0f}s (about {eta / 60:.1f} min left)")

    if jobs == 1 or len(todo) <= 1:
        for i, t in enumerate(todo, 1):
            curves[(t.name, t.seed)] = c = run_one(t, shared)
            report(i, t, c)
        return curves
    try:
        blob = pickle.dumps(shared)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise ConfigError(f"the experiment's inputs cannot be sent to worker processes ({exc}); "
                          "run with jobs=1") from None
    ctx = multiprocessing.get_context("spawn")
    try:
        with ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=ctx, initializer=_init_worker,
                                 initargs=(blob,)) as pool:
            futures = {pool.submit(_worker, t): t for t in todo}
            for i, fut in enumerate(as_completed(futures), 1):
                t = futures[fut]
                curves[(t.name, t.seed)] = c = fut.result()
                report(i, t, c)
    except BrokenProcessPool:
        raise RuntimeError("a retraining worker process died (finished runs are kept; re-run to resume). "
                           "From a script, call this under `if __name__ == \"__main__\":` (workers are spawned "
                           "and re-import the main module); otherwise see the worker's error above, or use jobs=1") from None
    return curves
