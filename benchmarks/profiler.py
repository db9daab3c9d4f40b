"""Measure a callable: median wall time, peak memory above the start, aten ops dispatched and host synchronisations.

Generic helpers for the benchmarks (benchmarks/bench_assign.py); nothing here knows about YOLOX.
"""
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

import torch
from torch.overrides import TorchFunctionMode
from torch.profiler import ProfilerActivity, profile, record_function

__all__ = [
    "SYNC_OP_NAMES", "SYNC_RANGE_NAMES", "HOST_READ_RANGE", "CallMeasurement", "CallProfile", "HostReadMarker",
    "median_time", "peak_memory", "profile_call", "measure_call", "peak_of_running_sum", "count_aten_ops",
    "count_host_syncs", "format_top_ops",
]

# Ops that make the host wait for a device value (on CUDA); counted on every device so CPU runs show the same figure.
SYNC_OP_NAMES = frozenset({"aten::_local_scalar_dense", "aten::nonzero", "aten::item"})
HOST_READ_RANGE = "profiler::host_read"
# Ranges a library puts around its deliberate synchronisations, plus the ones HostReadMarker adds.
SYNC_RANGE_NAMES = frozenset({"simota::host_sync", HOST_READ_RANGE})
MEMORY_EVENT = "[memory]"


def _sync_device(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn: Callable, repeats: int = 3, warmup: int = 1, device="cpu") -> Tuple[float, List[float]]:
    """Run fn `warmup` times untimed, then `repeats` times; returns (median seconds, every time in seconds)."""
    if repeats < 1:
        raise ValueError(f"repeats={repeats}; need at least 1 timed run")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync_device(device)
        start = time.perf_counter()
        fn()
        _sync_device(device)  # CUDA work is asynchronous: wait for it before reading the clock
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


class HostReadMarker(TorchFunctionMode):
    """Wraps Python-level reads of tensor values (tolist, item, bool/int/float, numpy) in a profiler range.

    On the CPU these reads dispatch no aten op, so a profile alone cannot see them; on CUDA each one waits for the
    device. Marking them makes the same code report the same sync count on both.
    """

    READS = frozenset({"tolist", "item", "__bool__", "__int__", "__float__", "__index__", "numpy"})

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        leaves_device = name == "cpu" and args and isinstance(args[0], torch.Tensor) and args[0].device.type != "cpu"
        if name in self.READS or leaves_device:
            with record_function(HOST_READ_RANGE):
                return func(*args, **kwargs)
        return func(*args, **kwargs)


def peak_of_running_sum(timed_bytes: Iterable[Tuple[float, int]]) -> int:
    """Peak, above the starting level (>= 0), of memory given as (time, +allocated / -freed bytes) events."""
    running, peak = 0, 0
    for _, nbytes in sorted(timed_bytes, key=lambda e: e[0]):
        running += nbytes
        peak = max(peak, running)
    return peak


def _ancestors(event):
    parent = getattr(event, "cpu_parent", None)
    while parent is not None:
        yield parent
        parent = getattr(parent, "cpu_parent", None)


def count_aten_ops(events) -> int:
    """Number of aten:: op events (nested ones included: each is a dispatch)."""
    return sum(1 for e in events if e.name.startswith("aten::"))


def _is_sync(event) -> bool:
    return event.name in SYNC_OP_NAMES or event.name in SYNC_RANGE_NAMES


def count_host_syncs(events) -> int:
    """Host synchronisation points: sync ops and sync ranges, counting only the outermost of nested ones
    (x.item() dispatches aten::item -> aten::_local_scalar_dense inside a marked read: one sync, not three)."""
    return sum(1 for e in events if _is_sync(e) and not any(_is_sync(a) for a in _ancestors(e)))


def _cpu_memory_events(prof) -> List[Tuple[float, int]]:
    """(start, bytes) of every CPU allocation / free seen by the profiler, nested in ops or not."""
    try:
        raw = prof.profiler.kineto_results.events()
    except AttributeError:  # no raw results in this torch: fall back to the op tree (nets inside an op)
        return [(e.time_range.start, e.cpu_memory_usage) for e in prof.events()
                if e.name == MEMORY_EVENT or getattr(e, "cpu_parent", 1) is None]
    cpu = torch.autograd.DeviceType.CPU
    return [(e.start_ns(), e.nbytes()) for e in raw if e.name() == MEMORY_EVENT and e.device_type() == cpu]


@dataclass
class CallProfile:
    ops: int  # aten:: op events dispatched
    syncs: int  # host synchronisation points
    peak_bytes: Optional[int]  # CPU: peak allocated above the start (None on CUDA, see peak_memory)
    top_ops: List[Tuple[str, float, int]] = field(default_factory=list)  # (name, self CPU ms, calls), slowest first


def profile_call(fn: Callable, device="cpu", top: int = 10):
    """Run fn once under torch.profiler; returns (fn's result, CallProfile)."""
    on_cpu = torch.device(device).type == "cpu"
    activities = [ProfilerActivity.CPU] + ([] if on_cpu else [ProfilerActivity.CUDA])
    with profile(activities=activities, profile_memory=on_cpu) as prof:
        with HostReadMarker():
            result = fn()
        _sync_device(device)
    events = prof.events()
    peak = peak_of_running_sum(_cpu_memory_events(prof)) if on_cpu else None
    totals = {}
    for e in events:
        if e.name == MEMORY_EVENT:
            continue
        ms, calls = totals.get(e.name, (0.0, 0))
        totals[e.name] = (ms + e.self_cpu_time_total / 1000.0, calls + 1)
    ranked = sorted(((n, ms, c) for n, (ms, c) in totals.items()), key=lambda t: -t[1])[:top]
    return result, CallProfile(count_aten_ops(events), count_host_syncs(events), peak, ranked)


def peak_memory(fn: Callable, device="cpu") -> int:
    """Peak bytes allocated during fn above what was allocated before it."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return max(0, torch.cuda.max_memory_allocated(device) - base)
    return profile_call(fn, device)[1].peak_bytes


@dataclass
class CallMeasurement:
    median_ms: float
    times_ms: List[float]  # every timed run
    peak_mb: float  # peak allocated above the start, MiB
    ops: int
    syncs: int
    top_ops: List[Tuple[str, float, int]]


def measure_call(fn: Callable, repeats: int = 3, device="cpu", top: int = 10, single_run_above_s: float = None):
    """Time fn (one warm-up, then the median of `repeats` runs), then profile one run for ops, syncs and memory.

    A warm-up slower than `single_run_above_s` counts as the only timed run: at seconds per call, warm-up effects
    are lost in the noise and the repeats would dominate a benchmark's time. Returns (fn's result, CallMeasurement).
    """
    _sync_device(device)
    start = time.perf_counter()
    fn()
    _sync_device(device)
    first = time.perf_counter() - start
    if single_run_above_s is not None and first > single_run_above_s:
        median_s, times = first, [first]
    else:
        median_s, times = median_time(fn, repeats, 0, device)
    result, prof = profile_call(fn, device, top)
    peak = prof.peak_bytes if prof.peak_bytes is not None else peak_memory(fn, device)
    return result, CallMeasurement(median_s * 1000.0, [t * 1000.0 for t in times], peak / 2**20, prof.ops,
                                   prof.syncs, prof.top_ops)


def format_top_ops(top_ops: Sequence[Tuple[str, float, int]]) -> str:
    """'name ms (calls)' joined by commas, for a log line."""
    return ", ".join(f"{n} {ms:.1f} ms ({c})" for n, ms, c in top_ops)
