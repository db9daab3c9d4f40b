"""Fault injection for testing how a run survives: YOLOX_FAULT=<kind>:rank=<r>:iter=<i> makes one process stall, fail
a checkpoint save with a full disk, or lose a DataLoader worker at a chosen iteration (docs/faults.md)."""
import errno
import os
import re
import signal
import time
from dataclasses import dataclass

from loguru import logger

from .parts import TrainerPart

__all__ = ["ENV_VAR", "FAULT_KINDS", "Fault", "FaultInjection", "parse_faults"]

ENV_VAR = "YOLOX_FAULT"
FAULT_KINDS = ("stall", "save_error", "worker_kill")
_FORM = (f"expected <kind>:rank=<r>:iter=<i> with kind one of {', '.join(FAULT_KINDS)} and r, i whole numbers >= 0 "
         f"(several faults separated by ',' or ';'), e.g. {ENV_VAR}=save_error:rank=0:iter=5")
_WRITTEN_BEFORE_FAILING = 64 * 1024  # a save_error fails mid-write, as a disk that fills up does


@dataclass(frozen=True)
class Fault:
    """One fault: `kind` on process `rank` at the run's iteration `iter` (0-based over all epochs: the iteration that
    starts once `iter` iterations have trained, "iteration" `iter` + 1 of metrics.jsonl)."""
    kind: str
    rank: int
    iter: int


def parse_faults(text):
    """[Fault, ...] of the value of YOLOX_FAULT ([] for None or blank); ValueError of one line naming the variable,
    the value and the expected form for anything else."""
    if text is None or not text.strip():
        return []
    faults = []
    for item in re.split(r"[,;]", text):
        item = item.strip()
        if not item:
            continue
        kind, *fields = [f.strip() for f in item.split(":")]
        if kind not in FAULT_KINDS:
            _reject(text, f"unknown kind {kind!r}")
        values = {}
        for field in fields:
            key, sep, value = field.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or key not in ("rank", "iter"):
                _reject(text, f"{field!r} is not rank=<r> or iter=<i>")
            if key in values:
                _reject(text, f"{key} is given twice in {item!r}")
            if not value.isdigit():
                _reject(text, f"{key}={value!r} is not a whole number >= 0")
            values[key] = int(value)
        missing = [k for k in ("rank", "iter") if k not in values]
        if missing:
            _reject(text, f"{item!r} has no {' and no '.join(missing)}")
        faults.append(Fault(kind, values["rank"], values["iter"]))
    if not faults:
        _reject(text, "no fault in it")
    return faults


def _reject(text, problem):
    raise ValueError(f"{ENV_VAR}={text!r}: {problem}; {_FORM}")


class FaultInjection(TrainerPart):
    """The faults of YOLOX_FAULT (read when the Trainer is built; nothing happens when it is unset) that are this
    process's, each fired once, before its iteration's batch is taken:

    - stall: the process sleeps until it is stopped (what the watchdog must detect);
    - save_error: the next checkpoint save of that rank, at or after the iteration, fails mid-write with
      OSError(ENOSPC) (only rank 0 writes checkpoints);
    - worker_kill: one of the rank's DataLoader worker processes gets SIGKILL, as from the out-of-memory killer.

    stall and worker_kill fire at exactly that iteration: a run resumed past it does not repeat them.
    """

    sleep = staticmethod(time.sleep)  # a test replaces it

    def __init__(self, text=None):
        self.text = os.environ.get(ENV_VAR) if text is None else text
        self.faults = parse_faults(self.text)
        self.fired = set()

    def _mine(self, trainer):
        return [f for f in self.faults if f.rank == trainer.rank and f not in self.fired]

    def before_train(self, trainer):
        if not self.faults:
            return
        start = trainer.start_epoch * trainer.max_iter + trainer.start_iter
        for fault in self._mine(trainer):
            note = ""
            if fault.kind == "save_error" and trainer.rank != 0:
                note = " (only rank 0 writes checkpoints: nothing will fail)"
            elif fault.kind != "save_error" and fault.iter < start:
                note = f" (the run starts at iteration {start}: it will not fire)"
            logger.warning(f"{ENV_VAR}: {fault.kind} on rank {fault.rank} at iteration {fault.iter}{note}")

    def before_iter(self, trainer):
        if not self.faults:
            return
        progress = trainer.progress_in_iter
        for fault in self._mine(trainer):
            if progress == fault.iter or (fault.kind == "save_error" and progress > fault.iter):
                self.fired.add(fault)
                getattr(self, f"_{fault.kind}")(trainer, fault)

    # ---------------------------------------------------------------------------------------- the faults
    def _stall(self, trainer, fault):
        logger.warning(f"{ENV_VAR}: rank {trainer.rank} stalls at iteration {fault.iter} (sleeps until stopped)")
        watchdog = getattr(trainer, "watchdog", None)
        if watchdog is not None:  # in the iteration already (this part runs before the watchdog's mark; at an
            watchdog.mark(trainer, 1)  # epoch's first iteration the stage would still say "between epochs")
        while True:
            self.sleep(3600)

    def _save_error(self, trainer, fault):
        logger.warning(f"{ENV_VAR}: the next checkpoint save of rank {trainer.rank} fails with ENOSPC")
        trainer.checkpointer.write_fault = _DiskFull

    def _worker_kill(self, trainer, fault):
        stream = trainer.data_stream
        pids = stream.worker_pids()
        if not pids:
            logger.warning(f"{ENV_VAR}: worker_kill at iteration {fault.iter} on rank {trainer.rank}: "
                           "data_num_workers is 0, there is no DataLoader worker to kill; nothing done")
            return
        stream.record_worker_memory(trainer.progress_in_iter)  # what the message of its death will say it held
        logger.warning(f"{ENV_VAR}: killing DataLoader worker pid {pids[0]} of rank {trainer.rank} (SIGKILL) at "
                       f"iteration {fault.iter}")
        os.kill(pids[0], signal.SIGKILL)
        time.sleep(0.5)  # torch's SIGCHLD handler raises its error here, in the main thread, as for a real kill


class _DiskFull:
    """A file that takes the first bytes written to it, then fails as a full disk does (OSError ENOSPC)."""

    def __init__(self, file):
        self._file = file
        self._room = _WRITTEN_BEFORE_FAILING

    def write(self, data):
        view = memoryview(data).cast("B")
        if len(view) > self._room:
            self._file.write(view[:self._room])
            self._room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= len(view)
        return self._file.write(data)

    def __getattr__(self, name):
        return getattr(self._file, name)
