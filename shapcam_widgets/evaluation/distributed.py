"""Sharding over processes with torch.distributed (torchrun), gloo for coordination.

Launched by ``torchrun --nproc_per_node K ...``, each process reads RANK, WORLD_SIZE and
LOCAL_RANK from the environment. Processes only need to wait for one another (nothing
is exchanged but barriers and rank 0's refusal to start; records travel through files),
so the process group always uses gloo, on CPUs and GPUs alike, on one machine or several
(the output folder must then be shared). With CUDA, rank r uses GPU LOCAL_RANK.
"""

import os
from datetime import timedelta

import torch
import torch.distributed as dist

#: How long a process waits at a barrier for the slowest shard.
BARRIER_TIMEOUT = timedelta(days=3)


def init_from_env() -> tuple[int, int]:
    """(rank, world size); starts a gloo process group when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)
    return rank_and_world()


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def local_device(device: torch.device) -> torch.device:
    """With several processes on CUDA, one GPU per local rank."""
    if device.type == "cuda" and device.index is None and torch.cuda.device_count() > 1:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return device


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def from_rank0(value):
    """Rank 0's ``value`` (a picklable object), in every process; a barrier too."""
    if dist.is_available() and dist.is_initialized():
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return value


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
