"""Process-group helpers (official YOLOX names) that also work with no torch.distributed at all.

Everything degrades to the single-process answer when the default group is not initialised.
"""
import contextlib
import functools
import time

import torch
import torch.distributed as dist

__all__ = [
    "is_dist_avail_and_initialized",
    "get_world_size",
    "get_rank",
    "get_local_rank",
    "get_local_size",
    "is_main_process",
    "synchronize",
    "all_gather",
    "gather",
    "time_synchronized",
    "get_num_devices",
    "wait_for_the_master",
    "make_slow_group",
]

# Set by the launcher when it spawns one process per device; None means "not launched".
_LOCAL_PROCESS_GROUP = None
# A gloo group with a long timeout, set by the launcher: barriers and object gathers around evaluation and cache
# building, where one rank may work alone for long (training's collectives keep the default group's shorter timeout)
_SLOW_GROUP = None


def make_slow_group(timeout):
    """Create the slow group (every rank calls this, in the same order as its other new_group calls)."""
    global _SLOW_GROUP
    _SLOW_GROUP = dist.new_group(backend="gloo", timeout=timeout)
    return _SLOW_GROUP


def is_dist_avail_and_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_dist_avail_and_initialized() else 1


def get_rank() -> int:
    return dist.get_rank() if is_dist_avail_and_initialized() else 0


def get_local_rank() -> int:
    """Rank within this machine (the launcher sets the local group); the global rank otherwise."""
    if _LOCAL_PROCESS_GROUP is None or not is_dist_avail_and_initialized():
        return get_rank()
    return dist.get_rank(group=_LOCAL_PROCESS_GROUP)


def get_local_size() -> int:
    if _LOCAL_PROCESS_GROUP is None or not is_dist_avail_and_initialized():
        return get_world_size()
    return dist.get_world_size(group=_LOCAL_PROCESS_GROUP)


def get_num_devices() -> int:
    """Number of CUDA devices this process can use (0 without CUDA; CUDA_VISIBLE_DEVICES is respected by torch)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@contextlib.contextmanager
def wait_for_the_master(local_rank: int = None):
    """The local master (local rank 0) runs the block first, the other processes after it (e.g. building a cache).

    Outside a process group it simply runs the block.
    """
    if local_rank is None:
        local_rank = get_local_rank()
    initialised = is_dist_avail_and_initialized()
    if initialised and local_rank > 0:
        dist.barrier(group=_SLOW_GROUP)
    yield
    if initialised and local_rank == 0:
        dist.barrier(group=_SLOW_GROUP)


def is_main_process() -> bool:
    return get_rank() == 0


def synchronize() -> None:
    """Barrier across all processes; a no-op for a single process."""
    if get_world_size() > 1:
        dist.barrier(group=_SLOW_GROUP)


@functools.lru_cache()
def _cpu_group():
    """A gloo group for pickled objects: NCCL cannot move CPU byte tensors (the slow group when the launcher made
    one: gathers of evaluation results wait for the slowest rank)."""
    if _SLOW_GROUP is not None:
        return _SLOW_GROUP
    if dist.get_backend() == "nccl":
        return dist.new_group(backend="gloo")
    return dist.group.WORLD


def all_gather(data, group=None) -> list:
    """Every process gets the list of every process's picklable `data`, ordered by rank."""
    if get_world_size() == 1:
        return [data]
    group = group if group is not None else _cpu_group()
    if dist.get_world_size(group) == 1:
        return [data]
    out = [None] * dist.get_world_size(group)
    dist.all_gather_object(out, data, group=group)
    return out


def gather(data, dst: int = 0, group=None) -> list:
    """Rank `dst` gets the list of every process's picklable `data`; the other ranks get []."""
    if get_world_size() == 1:
        return [data]
    group = group if group is not None else _cpu_group()
    if dist.get_world_size(group) == 1:
        return [data]
    # dst is a global rank; the gloo group spans every rank, so it is also the rank within the group.
    rank = dist.get_rank(group=group)
    out = [None] * dist.get_world_size(group) if rank == dst else None
    dist.gather_object(data, out, dst=dst, group=group)
    return out if rank == dst else []


def time_synchronized() -> float:
    """Wall time after the pending CUDA work is done, so that timings measure the kernels, not the launches."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.time()

