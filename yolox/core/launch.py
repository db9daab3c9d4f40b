"""launch: run a main function in one process, in one process per device, on several machines, or under torchrun.

Every process joins one torch.distributed group: NCCL for CUDA devices, gloo for CPU processes (which then share
the machine's cores). Under `torchrun` the processes already exist; launch only joins the group from the
environment variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT).

Faults: the launcher watches its processes; when one dies, the others are given a few seconds to stop by themselves
(their collectives fail, or their watchdog names the lost process), then stopped, and one line names the process,
its machine, and the iteration and stage it was at. SIGTERM or SIGINT to the launcher reaches every process, which
finish their iteration; rank 0 saves latest_ckpt.pth, and all exit with the signal's status (143, 130).
Collectives time out after TRAIN_TIMEOUT (15 minutes, not torch's 30: tools/train.py passes it; launch()'s own
default stays the official 30 minutes) during training, and after SLOW_TIMEOUT
around evaluation and cache building (yolox.utils.dist's slow group); on CUDA, NCCL's asynchronous error handling and
heartbeat monitor are on (nccl_fault_settings), so that a lost peer ends in an error, not a wait.
"""
import contextlib
import multiprocessing.connection
import os
import pickle
import signal
import socket
import sys
import threading
import time
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from loguru import logger

import yolox.utils.dist as comm
from yolox.utils.setup_env import set_cpu_threads

from .watchdog import EXIT_PEER_LOST, attach_board, board_where, describe_where, new_board

__all__ = ["launch", "launched_by_torchrun", "resolve_backend", "nccl_fault_settings", "configure_nccl_faults",
           "ProcessLost", "DEFAULT_TIMEOUT", "TRAIN_TIMEOUT", "SLOW_TIMEOUT", "STOP_GRACE_S"]

TRAIN_TIMEOUT = timedelta(minutes=15)  # a collective of training: well over stall_timeout (600 s), under torch's 30
SLOW_TIMEOUT = timedelta(minutes=60)  # barriers around evaluation and cache building, which one rank may do alone
DEFAULT_TIMEOUT = timedelta(minutes=30)  # the official launch()'s default (tools/train.py passes TRAIN_TIMEOUT)
STOP_GRACE_S = 10.0  # after a process died: seconds the others have to stop by themselves before SIGTERM / SIGKILL


class ProcessLost(RuntimeError):
    """A process of the run died or was stopped by a fault; the message is the one line naming it. exit_code: the
    status the launcher exits with."""

    def __init__(self, message, exit_code):
        super().__init__(message)
        self.exit_code = exit_code


def nccl_fault_settings():
    """The environment that makes NCCL end in an error, not a wait, when a peer dies or a collective hangs (set only
    where the user has not set them): asynchronous error handling aborts the communicator and ends the process on an
    error or a timeout; the heartbeat monitor ends a process whose NCCL watchdog itself hangs; blocking wait stays off
    (it would make every collective wait on the host)."""
    return {
        "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
        "TORCH_NCCL_ENABLE_MONITORING": "1",
        "TORCH_NCCL_HEARTBEAT_TIMEOUT_SEC": "600",
        "TORCH_NCCL_BLOCKING_WAIT": "0",
    }


def configure_nccl_faults(environ=None):
    """Apply nccl_fault_settings() to `environ` (default os.environ) where unset; returns what it set."""
    environ = os.environ if environ is None else environ
    applied = {}
    for key, value in nccl_fault_settings().items():
        if key not in environ:
            environ[key] = applied[key] = value
    return applied


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
    board = new_board(mp.get_context(start_method), num_gpus_per_machine)
    context = mp.start_processes(
        _distributed_worker,
        nprocs=num_gpus_per_machine,
        args=(main_func, world_size, num_gpus_per_machine, machine_rank, backend, dist_url, args, timeout, board),
        daemon=False,
        start_method=start_method,
        join=False,
    )
    supervise(context.processes, board, machine_rank, num_gpus_per_machine, error_files=context.error_files)


def _exit_status(code):
    """A process's exit code as a shell shows it: 128 + the signal for a process killed by one."""
    return 128 - code if code is not None and code < 0 else code


def _describe_exit(code):
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"ended with exit status {code}"


def signal_safe_warning(message):
    """A warning line written from a signal handler: straight to file descriptor 2, in the log's format. (The logger
    takes a lock that the interrupted main thread may hold: loguru then prints a "Logging error" traceback.)"""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    try:
        os.write(2, f"{stamp} | WARNING  | {__name__} - {message}\n".encode())
    except OSError:
        pass


def supervise(processes, board, machine_rank, per_machine, grace_s=STOP_GRACE_S, error_files=()):
    """Wait for this machine's processes. SIGINT / SIGTERM here are passed to them (a clean stop at the end of their
    iteration; they exit with the signal's status). When one ends with an error, the others get grace_s seconds to
    stop by themselves, then SIGTERM, then SIGKILL; ProcessLost names the first one that failed, with the iteration
    and stage it was at (the board its watchdog writes). error_files: torch's per-process files that hold the
    traceback of a process that raised (logged here once; all removed at the end)."""
    try:
        _supervise(processes, board, machine_rank, per_machine, grace_s, error_files)
    finally:
        for path in error_files:
            with contextlib.suppress(OSError):
                os.remove(path)


def _raised_traceback(error_files, index):
    """The traceback text torch's process wrapper saved for process `index`, or None."""
    if index >= len(error_files) or not os.path.isfile(error_files[index]):
        return None
    try:
        with open(error_files[index], "rb") as f:
            return str(pickle.load(f)).rstrip()
    except Exception:  # noqa: BLE001 - the exit status is still reported
        return None


def _supervise(processes, board, machine_rank, per_machine, grace_s, error_files):
    failed = None  # (index, exit code)
    signalled = []
    deadline = None

    def forward(signum, frame):
        signalled.append(signum)
        name = signal.Signals(signum).name
        signal_safe_warning(f"{name}: every process stops after its current iteration and rank 0 saves "
                            f"latest_ckpt.pth{' (again to stop them at once)' if len(signalled) == 1 else ''}")
        for p in processes:
            if p.is_alive():
                try:
                    os.kill(p.pid, signal.SIGKILL if len(signalled) > 2 else signum)
                except ProcessLookupError:  # it ended since: its exit status tells
                    pass

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, forward)
    try:
        pending = {p.sentinel: i for i, p in enumerate(processes)}
        while pending:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready = multiprocessing.connection.wait(list(pending), timeout=timeout)
            for sentinel in ready:
                index = pending.pop(sentinel)
                processes[index].join()
                code = processes[index].exitcode
                if code != 0 and failed is None:
                    failed = (index, code)
                    if not signalled and code not in _COORDINATED_STOPS:
                        deadline = time.monotonic() + grace_s  # the others stop by themselves, or are stopped
            if deadline is not None and time.monotonic() >= deadline and pending:
                _stop_all([processes[i] for i in pending.values()], grace_s)
                for sentinel, index in list(pending.items()):
                    processes[index].join()
                    pending.pop(sentinel)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failed is None:
        if signalled:  # every process stopped on the signal at once (a second one: no checkpoint was saved)
            raise ProcessLost("", 128 + int(signalled[0]))
        return
    index, code = failed
    if code in _CLEAN_STOPS or signalled:
        status = _exit_status(code)
        raise ProcessLost("", status)  # each process said why (a user error, a stop): nothing to add
    rank = machine_rank * per_machine + index
    where = board_where(board, index)
    at = f" at {describe_where(where)}" if where["counter"] else ""  # a training process writes where it is
    if code == EXIT_PEER_LOST:
        raise ProcessLost("", EXIT_PEER_LOST)  # it named the lost process of another machine itself
    resume = " Resume with --resume" if where["counter"] else ""
    trace = _raised_traceback(error_files, index)
    if trace is not None:  # a failure that is no user error: the traceback is what it needs
        logger.error(f"rank {rank} (machine {machine_rank}) raised:\n{trace}")
    raise ProcessLost(f"rank {rank} (machine {machine_rank}, pid {processes[index].pid}) {_describe_exit(code)}{at}; "
                      f"the other processes of this machine were stopped.{resume}", _exit_status(code) or 1)


_CLEAN_STOPS = (2, 130, 143)  # a user error, a stop on SIGINT / SIGTERM: the process logged its own line
_COORDINATED_STOPS = (130, 143)  # every process stops at the same iteration: no need to stop the others


def _stop_all(processes, grace_s):
    """SIGTERM to the processes still running, SIGKILL to those still running grace_s seconds later."""
    for p in processes:
        if p.is_alive():
            p.terminate()
    end = time.monotonic() + grace_s
    for p in processes:
        p.join(max(0.0, end - time.monotonic()))
    for p in processes:
        if p.is_alive():
            p.kill()


def _set_local_group(num_per_machine, machine_rank, world_size):
    """Create one group per machine (every rank must create all of them) and keep this machine's."""
    num_machines = world_size // num_per_machine
    for i in range(num_machines):
        group = dist.new_group(list(range(i * num_per_machine, (i + 1) * num_per_machine)))
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group


def _init_group(backend, timeout, **kwargs):
    """Join the default group (NCCL set up to fail rather than wait) and make the slow group beside it."""
    if backend == "nccl":
        configure_nccl_faults()
    dist.init_process_group(backend=backend, timeout=timeout, **kwargs)
    comm.make_slow_group(SLOW_TIMEOUT if timeout < SLOW_TIMEOUT else timeout)


def _distributed_worker(local_rank, main_func, world_size, num_gpus_per_machine, machine_rank, backend, dist_url,
                        args, timeout=DEFAULT_TIMEOUT, board=None):
    global_rank = machine_rank * num_gpus_per_machine + local_rank
    if board is not None:
        attach_board(board, local_rank)
    if torch.cuda.is_available():
        if num_gpus_per_machine > torch.cuda.device_count():
            raise ValueError(f"{num_gpus_per_machine} processes asked, but {torch.cuda.device_count()} GPUs visible")
        torch.cuda.set_device(local_rank)
    else:
        set_cpu_threads(num_gpus_per_machine)
    try:
        _init_group(backend, timeout, init_method=dist_url, world_size=world_size, rank=global_rank)
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
    _init_group(backend, timeout, init_method="env://")
    try:
        machine_rank = dist.get_rank() // local_size
        _set_local_group(local_size, machine_rank, world_size)
        comm.synchronize()
        main_func(*args)
    finally:
        _leave_group()


def _leave_group():
    comm._LOCAL_PROCESS_GROUP = None
    comm._SLOW_GROUP = None
    comm._cpu_group.cache_clear()
    if dist.is_initialized():
        dist.destroy_process_group()
