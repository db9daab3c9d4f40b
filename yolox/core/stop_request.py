"""A clean stop on Ctrl-C or SIGTERM: the run finishes its iteration, saves latest_ckpt.pth and ends, resumable."""
import os
import signal
import threading
import time

import torch
import torch.distributed as dist
from loguru import logger

from .parts import TrainerPart

__all__ = ["StopRequest", "TrainingInterrupted", "REPEAT_WINDOW_S"]

REPEAT_WINDOW_S = 1.0  # a second signal of the same kind within this time is the first one delivered twice


class TrainingInterrupted(Exception):
    """Ctrl-C (or SIGTERM) stopped training between two iterations; `latest_ckpt.pth` holds the state to resume.
    exit_code: the signal's conventional status (130 for SIGINT, 143 for SIGTERM)."""

    def __init__(self, message, signum=signal.SIGINT):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + int(signum)


class StopRequest(TrainerPart):
    """SIGINT/SIGTERM handler: the first signal asks for a stop after the current iteration, a second one raises
    KeyboardInterrupt at once. Installed (as a context manager) only in the main thread, and the previous handlers
    come back after.

    `requested` is this process's wish; `agreed` is what all ranks agreed on at the last step (the Trainer's one
    all-reduce per step): the stop happens before the next iteration, on every rank together.
    """

    def __init__(self):
        self.requested = False
        self.agreed = False
        self.signum = signal.SIGINT  # the signal that asked (SIGTERM on a rank that did not get one: see agree)
        self._previous = {}
        self._announce = False  # a signal came and its line is not logged yet
        self._since = 0.0  # when the first signal came (time.monotonic)

    def _handle(self, signum, frame):
        # No logging here: the signal may land while the main thread is inside the logger, whose lock is not
        # reentrant (loguru then prints a "Logging error" traceback). The line is logged by agree(), next step.
        now = time.monotonic()
        if self.requested:
            if signum == self.signum and now - self._since < REPEAT_WINDOW_S:
                return  # the same signal twice at once: a terminal's Ctrl-C (or a job's SIGTERM) that reached this
                # process directly and again through the launcher, which forwards it
            raise KeyboardInterrupt
        self.requested = True
        self.signum = signum
        self._since = now
        self._announce = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        return False

    def agree(self, trainer, not_finite):
        """Whether any rank's loss is not finite; every rank learns too whether any asked to stop (one all-reduce).
        Only the agreed value decides: a signal arriving after the all-reduce waits for the next step."""
        if self._announce:
            self._announce = False
            logger.warning(f"stop requested ({signal.Signals(self.signum).name}): finishing this iteration and saving "
                           "latest_ckpt.pth (again to stop now)")
        stop = self.requested
        if trainer.is_distributed:
            # the signal travels too (a SIGTERM on one rank makes every rank exit with 143)
            wish = float(self.signum) if stop else 0.0
            flags = torch.tensor([float(not_finite), wish], device=trainer.collective_device())
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
            not_finite, signum = bool(flags[0].item()), int(flags[1].item())
            stop = signum > 0
            if stop and not self.requested:
                self.signum = signal.Signals(signum)
        self.agreed = stop
        return not_finite

    def before_iter(self, trainer):
        if not self.agreed:
            return
        trainer.save_ckpt(ckpt_name="latest", next_iteration=trainer.progress_in_iter)
        raise TrainingInterrupted(
            f"training stopped ({signal.Signals(self.signum).name}) before epoch {trainer.epoch + 1}, iter "
            f"{trainer.iter + 1}; resume with --resume (the state is in "
            f"{os.path.join(trainer.file_name, 'latest_ckpt.pth')})", self.signum
        )
