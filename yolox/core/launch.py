"""launch: run a main function in one process, in one process per device, on several machines, or under torchrun.

Every process joins one torch.distributed group: NCCL for CUDA devices, gloo for CPU processes (which then share
the machine's cores). Under `torchrun` the processes already exist; launch only joins the group from the
environment variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT).
"""
import os
import signal
import socket
import sys
import threading
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from loguru import logger

import yolox.utils.dist as comm
from yolox.utils.setup_env import set_cpu_threads

__all__ = ["launch", "launched_by_torchrun", "resolve_backend", "DEFAULT_TIMEOUT"]

DEFAULT_TIMEOUT = timedelta(minutes=30)


def _find_free_port():
    """A TCP port that was free on this machine a moment ago (another process may still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def launched_by_torchrun():
    """True when the environment of torchrun (or torch.distributed.launch --use-env) describes this process."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"))


def resolve_backend(backend):
    """The backend to use here: NCCL needs CUDA, so CPU processes use gloo whatever was asked."""
    if backend == "nccl" and not torch.cuda.is_available():
        return "gloo"
    return backend


def launch(
    main_func,
    num_gpus_per_machine,
    num_machines=1,
    machine_rank=0,
    backend="nccl",
    dist_url=None,
    args=(),
    timeout=DEFAULT_TIMEOUT,
):
    """Run main_func(*args) in every process of the job.

    num_gpus_per_machine: processes on this machine (one per GPU, or CPU processes without CUDA).
    num_machines, machine_rank: this machine's place; global rank = machine_rank * num_gpus_per_machine + local rank.
    dist_url: "tcp://host:port" of machine 0, or "auto" (a free local port; one machine only).
    A job of one process calls main_func directly. Under torchrun this process is one rank: it joins the group
    from the environment and calls main_func.
    """
    backend = resolve_backend(backend)
    if launched_by_torchrun():
        _torchrun_worker(main_func, backend, args, timeout)
        return
    world_size = num_machines * num_gpus_per_machine
    if world_size <= 1:
        main_func(*args)
        return
    if dist_url in (None, "auto"):
        if num_machines != 1:
            raise ValueError(
                f"--num_machines {num_machines} needs --dist-url tcp://<host of machine 0>:<port>, the same on every "
                "machine; 'auto' only works on one machine"
            )
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    # a RAM cache built before launch is shared with the children only if they are forked (the official choice)
    cache = bool(len(args) > 1 and getattr(args[1], "cache", None))
    start_method = "fork" if cache and sys.platform != "win32" else "spawn"
    context = mp.start_processes(
        _distributed_worker,
        nprocs=num_gpus_per_machine,
        args=(main_func, world_size, num_gpus_per_machine, machine_rank, backend, dist_url, args, timeout),
        daemon=False,
        start_method=start_method,
        join=False,
    )
    _join_through_ctrl_c(context)


def _join_through_ctrl_c(context):
    """Wait for the processes; Ctrl-C reaches them too (same terminal), so this process keeps waiting while they
    stop cleanly instead of abandoning them."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, lambda *_: logger.warning(
            "Ctrl-C: each process stops after its current iteration (Ctrl-C again in a process stops it at once)"))
    try:
        while not context.join():
            pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _set_local_group(num_per_machine, machine_rank, world_size):
    """Create one group per machine (every rank must create all of them) and keep this machine's."""
    num_machines = world_size // num_per_machine
    for i in range(num_machines):
        group = dist.new_group(list(range(i * num_per_machine, (i + 1) * num_per_machine)))
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group


def _distributed_worker(local_rank, main_func, world_size, num_gpus_per_machine, machine_rank, backend, dist_url,
                        args, timeout=DEFAULT_TIMEOUT):
    global_rank = machine_rank * num_gpus_per_machine + local_rank
    if torch.cuda.is_available():
        if num_gpus_per_machine > torch.cuda.device_count():
            raise ValueError(f"{num_gpus_per_machine} processes asked, but {torch.cuda.device_count()} GPUs visible")
        torch.cuda.set_device(local_rank)
    else:
        set_cpu_threads(num_gpus_per_machine)
    try:
        dist.init_process_group(backend=backend, init_method=dist_url, world_size=world_size, rank=global_rank,
                                timeout=timeout)
    except Exception:
        logger.error(f"rank {global_rank} could not join the process group at {dist_url} ({backend})")
        raise
    try:
        _set_local_group(num_gpus_per_machine, machine_rank, world_size)
        comm.synchronize()
        main_func(*args)
    finally:
        _leave_group()


def _torchrun_worker(main_func, backend, args, timeout):
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    local_size = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    else:
        set_cpu_threads(local_size)
    if world_size <= 1:
        main_func(*args)
        return
    dist.init_process_group(backend=backend, init_method="env://", timeout=timeout)
    try:
        machine_rank = dist.get_rank() // local_size
        _set_local_group(local_size, machine_rank, world_size)
        comm.synchronize()
        main_func(*args)
    finally:
        _leave_group()


def _leave_group():
    comm._LOCAL_PROCESS_GROUP = None
    comm._cpu_group.cache_clear()
    if dist.is_initialized():
        dist.destroy_process_group()
