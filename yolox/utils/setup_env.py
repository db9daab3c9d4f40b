"""Process environment for training: open-file limit, OpenCV threads, NCCL variables, and CPU thread shares."""
import os

import cv2
import torch
from loguru import logger

__all__ = ["configure_nccl", "configure_module", "configure_omp", "usable_cpu_count", "cpu_threads_per_process",
           "set_cpu_threads"]


def configure_nccl():
    """NCCL settings of the official release for multi-machine runs (only where the variables are not set)."""
    os.environ.setdefault("NCCL_LAUNCH_MODE", "PARALLEL")
    ib_dir = "/sys/class/infiniband"
    if "NCCL_IB_HCA" not in os.environ and os.path.isdir(ib_dir):
        hcas = sorted(d for d in os.listdir(ib_dir) if d.startswith("mlx5_"))
        if hcas:
            os.environ["NCCL_IB_HCA"] = ",".join(hcas)
            os.environ.setdefault("NCCL_IB_GID_INDEX", "3")
            os.environ.setdefault("NCCL_IB_TC", "106")


def configure_omp(num_threads=1):
    """Set OMP_NUM_THREADS to num_threads for a multi-process run when the user has not set it (official)."""
    from .dist import get_world_size, is_main_process

    if "OMP_NUM_THREADS" not in os.environ and get_world_size() > 1:
        os.environ["OMP_NUM_THREADS"] = str(num_threads)
        if is_main_process():
            logger.info(f"OMP_NUM_THREADS set to {num_threads} for each process; set it yourself to tune it")


def configure_module(ulimit_value=8192):
    """Raise the open-file limit (many DataLoader workers) and keep OpenCV single-threaded in the workers."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = ulimit_value if hard == resource.RLIM_INFINITY else min(ulimit_value, hard)
        if soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ImportError, ValueError, OSError):
        pass  # no resource module (Windows) or not allowed: the default limit usually suffices
    os.environ["OPENCV_OPENCL_RUNTIME"] = "disabled"
    try:
        cv2.setNumThreads(0)
        cv2.ocl.setUseOpenCL(False)
    except (AttributeError, cv2.error):
        pass


def usable_cpu_count():
    """CPU cores this process may run on (its affinity mask, e.g. under taskset or a container), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def cpu_threads_per_process(processes_on_this_machine):
    """Torch threads for each of the CPU processes sharing this machine: an equal share of the cores, at least 1."""
    return max(1, usable_cpu_count() // max(1, int(processes_on_this_machine)))


def set_cpu_threads(processes_on_this_machine):
    """Give this process its share of the cores (OMP_NUM_THREADS, when set, wins); returns the thread count."""
    if "OMP_NUM_THREADS" in os.environ:
        try:
            threads = max(1, int(os.environ["OMP_NUM_THREADS"]))
        except ValueError:
            threads = cpu_threads_per_process(processes_on_this_machine)
    else:
        threads = cpu_threads_per_process(processes_on_this_machine)
    torch.set_num_threads(threads)
    return threads
