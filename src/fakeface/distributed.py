"""Several processes, one job: the few process-group helpers that training and ``predict`` need under torchrun.

``torchrun --nproc_per_node N -m fakeface train ...`` starts N copies of the command and tells each who it is in
environment variables: ``WORLD_SIZE`` (processes in all), ``RANK`` (this one, 0..WORLD_SIZE-1) and
``LOCAL_RANK`` (this one on its node: its GPU). Without them (plain ``python -m fakeface``) everything here is a
no-op for a world of one, so the same code runs single-process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import nn


def world_size() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", 1))


def rank() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", 0))


def is_main() -> bool:
    """Rank 0: the one process that writes files and prints."""
    return rank() == 0


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def init_from_env(device: torch.device) -> torch.device:
    """Join torchrun's process group when ``WORLD_SIZE`` > 1; return the device this process should use.

    CUDA: one GPU per process, ``cuda:LOCAL_RANK``, with the ``nccl`` backend. CPU: ``gloo``. A process group
    that is already initialised (a caller's own) is joined as it is.
    """
    if int(os.environ.get("WORLD_SIZE", 1)) <= 1:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise ValueError(f"distributed runs use CUDA (nccl) or the CPU (gloo), not {device.type}")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


@contextmanager
def process_group(device: torch.device) -> Iterator[torch.device]:
    """``with process_group(device) as device:`` - :func:`init_from_env` for the block, :func:`cleanup` after it
    (a process group the caller had already initialised is left to the caller)."""
    ours = int(os.environ.get("WORLD_SIZE", 1)) > 1 and not dist.is_initialized()
    device = init_from_env(device)
    try:
        yield device
    finally:
        if ours:
            cleanup()


def cleanup() -> None:
    """Leave the process group (after the last collective call)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def shard(n: int, rank_: int | None = None, world: int | None = None) -> slice:
    """This process's contiguous part of ``n`` items; parts differ in size by at most one and, taken in rank
    order, are ``0..n-1`` exactly once."""
    rank_ = rank() if rank_ is None else rank_
    world = world_size() if world is None else world
    return slice(rank_ * n // world, (rank_ + 1) * n // world)


def all_gather_object(obj) -> list:
    """Every rank's ``obj`` (any picklable object, any size per rank), in rank order, on every rank."""
    if not is_distributed():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_to_main(obj) -> list | None:
    """Every rank's ``obj`` in rank order on rank 0; ``None`` on the others."""
    if not is_distributed():
        return [obj]
    out = [None] * dist.get_world_size() if is_main() else None
    dist.gather_object(obj, out, dst=0)
    return out


def broadcast_buffers(module: nn.Module) -> None:
    """Make every rank's buffers (BatchNorm running statistics) rank 0's.

    DDP broadcasts rank 0's buffers before each training forward, so after an epoch's last step every process
    holds its own last batch's update; scoring with those would not score the model rank 0 saves.
    """
    if is_distributed():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on at least one (``device``: where the backend communicates)."""
    if not is_distributed():
        return flag
    t = torch.tensor(float(flag), device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
