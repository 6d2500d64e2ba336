"""torch.distributed in one place: rank/world size, sum-reductions, barriers (no-ops alone).

Under ``torchrun`` (NCCL on GPUs, gloo on CPUs) each rank scores its own contiguous chunk of the
window; EK-FAC statistics are summed over ranks so every rank holds the same factors.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def init_from_env() -> bool:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); returns True if joined."""
    if active() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return active()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend=backend)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return True


def all_reduce_sum(tensors: list[torch.Tensor]) -> None:
    """In place: every tensor becomes its sum over ranks (fp64 stays fp64)."""
    if not active():
        return
    for t in tensors:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)


def broadcast(tensors: list[torch.Tensor], src: int = 0) -> None:
    """In place: every rank gets rank ``src``'s values (eigenvectors must agree bit for bit)."""
    if not active():
        return
    for t in tensors:
        dist.broadcast(t, src=src)


def barrier() -> None:
    if active():
        dist.barrier()
