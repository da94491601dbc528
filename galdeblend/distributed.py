"""Several processes (ranks) for one EM run, under ``torchrun``.

``torchrun`` starts one process per rank and describes the group in the environment
(``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``);
:func:`init_from_env` joins it. :func:`galdeblend.em.em` then shares the E-step's chunks
of observations among the ranks and gathers the samples on every rank, and
:func:`~galdeblend.diffusion.training.train_denoiser` splits each minibatch among the
ranks and sums their gradients.

In a single process (no process group) every function here is a no-op or the identity,
so the same code runs with and without ``torchrun``.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "init_from_env",
    "rank",
    "world_size",
    "is_main",
    "shard",
    "all_gather",
    "all_reduce_sum_",
    "broadcast_",
    "barrier",
]


def init_from_env() -> torch.device:
    """Join the process group described by ``torchrun``'s environment; returns this rank's device.

    With ``WORLD_SIZE > 1`` and no process group yet, it starts one whose collectives use
    gloo for CPU tensors and, when CUDA is available, NCCL for CUDA tensors. The device is
    GPU ``LOCAL_RANK`` (made the current one) when the node has that many GPUs, else the
    CPU. The group is closed when the process exits.
    """
    cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cpu")
    if cuda and local_rank < torch.cuda.device_count():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and not dist.is_initialized():
        dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo")
        atexit.register(_close)
    return device


def _close() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    """Number of ranks (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank, in ``0 .. world_size() - 1``."""
    return dist.get_rank() if world_size() > 1 else 0


def is_main() -> bool:
    """Whether this is rank 0, the one that writes files and shows progress."""
    return rank() == 0


def shard(n: int) -> range:
    """This rank's contiguous share of ``range(n)``; the shares of ranks ``0, 1, ...``
    follow each other and differ in length by at most one."""
    r, w = rank(), world_size()
    return range(n * r // w, n * (r + 1) // w)


def all_gather(obj) -> list:
    """Every rank's ``obj`` (picklable; tensors on the CPU), in rank order, on every rank."""
    if world_size() == 1:
        return [obj]
    gathered = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def all_reduce_sum_(tensors: Sequence[Tensor]) -> None:
    """Replace each tensor, in place, by its sum over the ranks (one message for all)."""
    if world_size() == 1 or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    summed = flat.split([t.numel() for t in tensors])
    torch._foreach_copy_(list(tensors), [s.view_as(t) for s, t in zip(summed, tensors)])


@torch.no_grad()
def broadcast_(tensors: Sequence[Tensor]) -> None:
    """Overwrite each tensor, in place, with rank 0's."""
    if world_size() == 1:
        return
    for t in tensors:
        dist.broadcast(t, src=0)


def barrier() -> None:
    """Wait until every rank gets here."""
    if world_size() > 1:
        dist.barrier()
