"""The oracle's output folder: resumable progress of the reverse sweep and the final metagradient.

    out/progress.pt     {"fingerprint", "step", "adjoint": (theta, m, v), "weight_grad", "row_ids",
                         "target"}: the adjoint of the state at ``step`` (updates >= step done) and the
                         weight gradients of those updates' rows; rewritten every few steps
    out/metagrad.npz    row_ids int64 [N], weight_grad float64 [N], target float64 []
    out/manifest.json   identity, fingerprint, steps, rows_per_step, complete: true (written last)

Every file is written to a temporary sibling and renamed (``io.atomic_path``), so a kill leaves the
last complete progress file; a resumed sweep continues from it and gives bitwise the same result
(the forward replay and each step's VJP are deterministic). Progress or results of other inputs
(another fingerprint) are ignored and overwritten.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from mda_fast.digest import array_digest, blob_key
from mda_fast.io import atomic_path, read_json, write_json
from mda_fast.oracle.step_vjp import Adjoint
from mda_fast.oracle.train_state import TrainState

PROGRESS, RESULT, MANIFEST = "progress.pt", "metagrad.npz", "manifest.json"


def state_digest(state: TrainState) -> str:
    """sha1 of the start state's tensors (weights, Adam moments, update counts) in order."""
    h = hashlib.sha1()
    for group in (state.params, state.exp_avg, state.exp_avg_sq, state.count):
        for t in group:
            h.update(b"none" if t is None else f"{t.dtype}{tuple(t.shape)}".encode())
            if t is not None and t.numel():
                h.update(t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def sweep_identity(start: TrainState, window_tokens: np.ndarray, window_ids: np.ndarray, optim_dict: dict,
                   rows_per_step: int, steps: tuple[int, int], micro_batch, target_key: str) -> dict:
    """What the metagradient is computed from (content, never paths)."""
    return {"format": "mda-fast-exact/1", "start_state": state_digest(start),
            "window_tokens": array_digest(window_tokens), "window_row_ids": array_digest(window_ids),
            "optim": optim_dict, "rows_per_step": int(rows_per_step), "steps": [int(s) for s in steps],
            "micro_batch": micro_batch, "target": target_key}


class SweepStore:
    def __init__(self, out_dir, identity: dict):
        self.out = Path(out_dir)
        self.identity = identity
        self.fingerprint = blob_key(identity)

    def finished(self) -> dict | None:
        """The stored result {row_ids, weight_grad, target} when complete for these inputs."""
        man = self.out / MANIFEST
        if not man.is_file() or not (self.out / RESULT).is_file():
            return None
        m = read_json(man)
        if not m.get("complete") or m.get("fingerprint") != self.fingerprint:
            return None
        with np.load(self.out / RESULT) as z:
            return {"row_ids": z["row_ids"], "weight_grad": z["weight_grad"], "target": float(z["target"])}

    def load_progress(self) -> dict | None:
        p = self.out / PROGRESS
        if not p.is_file():
            return None
        d = torch.load(p, map_location="cpu", weights_only=False)
        if d.get("fingerprint") != self.fingerprint:
            return None
        theta, m, v = d["adjoint"]
        d["adjoint"] = Adjoint(int(d["step"]), theta, m, v)
        return d

    def save_progress(self, adj: Adjoint, weight_grad: np.ndarray, row_ids: np.ndarray, target: float) -> None:
        d = {"fingerprint": self.fingerprint, "step": adj.step, "adjoint": (adj.theta, adj.m, adj.v),
             "weight_grad": weight_grad, "row_ids": row_ids, "target": target}
        with atomic_path(self.out / PROGRESS) as tmp:
            torch.save(d, tmp)

    def save_result(self, row_ids: np.ndarray, weight_grad: np.ndarray, target: float, info: dict) -> None:
        with atomic_path(self.out / RESULT) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, row_ids=row_ids, weight_grad=weight_grad, target=np.float64(target))
        write_json(self.out / MANIFEST, {"identity": self.identity, "fingerprint": self.fingerprint,
                                         **info, "complete": True})
        (self.out / PROGRESS).unlink(missing_ok=True)
