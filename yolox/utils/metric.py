"""Meters for the training log (windowed averages of floats) and memory readings: GPU memory and process RSS."""
import functools
import os
import time
from collections import defaultdict, deque

import torch

__all__ = [
    "AverageMeter",
    "MeterBuffer",
    "get_total_and_free_memory_in_Mb",
    "occupy_mem",
    "gpu_mem_usage",
    "mem_usage",
    "rss_bytes",
]


def get_total_and_free_memory_in_Mb(cuda_device):
    """(total, used) MiB of GPU `cuda_device` (an index among the visible devices), read by torch, not nvidia-smi."""
    free, total = torch.cuda.mem_get_info(int(cuda_device))
    mib = 1024 * 1024
    return int(total // mib), int((total - free) // mib)


def occupy_mem(cuda_device, mem_ratio=0.9):
    """Reserve mem_ratio of the GPU's memory in PyTorch's caching allocator up front (-o/--occupy), against
    fragmentation; the block is freed at once but stays cached for the training tensors."""
    total, used = get_total_and_free_memory_in_Mb(cuda_device)
    block_mib = int(total * mem_ratio) - used
    if block_mib <= 0:
        return
    x = torch.empty(block_mib * 1024 * 1024 // 4, dtype=torch.float32, device=f"cuda:{int(cuda_device)}")
    del x
    time.sleep(1)


def gpu_mem_usage():
    """Peak GPU memory allocated by PyTorch on the current device, in MiB (0 without CUDA)."""
    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return 0.0
    return torch.cuda.max_memory_allocated() / (1024 * 1024)


def rss_bytes(pid=None):
    """Resident set size of a process (this one by default) in bytes, from /proc; 0 where /proc is missing."""
    path = f"/proc/{pid or 'self'}/statm"
    try:
        with open(path) as f:
            resident_pages = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def mem_usage():
    """Resident memory of this process in GiB (the 'mem' of the training log line)."""
    return rss_bytes() / (1024**3)


class AverageMeter:
    """A series of floats: the latest, the average and median over the last `window_size`, and the global average."""

    def __init__(self, window_size=50):
        self._deque = deque(maxlen=window_size)
        self._total = 0.0
        self._count = 0

    def update(self, value):
        value = float(value)
        self._deque.append(value)
        self._count += 1
        self._total += value

    @property
    def median(self):
        if not self._deque:
            return float("nan")
        ordered = sorted(self._deque)
        mid = len(ordered) // 2
        return ordered[mid] if len(ordered) % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])

    @property
    def avg(self):
        return sum(self._deque) / len(self._deque) if self._deque else float("nan")

    @property
    def global_avg(self):
        return self._total / max(self._count, 1e-5)

    @property
    def latest(self):
        return self._deque[-1] if self._deque else None

    @property
    def total(self):
        return self._total

    def reset(self):
        self._deque.clear()
        self._total = 0.0
        self._count = 0

    def clear(self):
        """Empty the window; the global average keeps counting."""
        self._deque.clear()


class MeterBuffer(defaultdict):
    """A dict of AverageMeters created on first use: `update(iter_time=0.3, total_loss=loss, ...)`.

    Tensors are stored as Python floats (the official keeps the tensors, which holds device memory and syncs later).
    """

    def __init__(self, window_size=20):
        super().__init__(functools.partial(AverageMeter, window_size=window_size))

    def reset(self):
        for v in self.values():
            v.reset()

    def get_filtered_meter(self, filter_key="time"):
        return {k: v for k, v in self.items() if filter_key in k}

    def update(self, values=None, **kwargs):
        values = dict(values or {})
        values.update(kwargs)
        for k, v in values.items():
            if isinstance(v, torch.Tensor):
                v = v.detach().item()
            self[k].update(v)

    def clear_meters(self):
        for v in self.values():
            v.clear()
