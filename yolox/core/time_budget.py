"""A wall-clock budget for a training run (Exp.max_train_minutes): the number of epochs that fits it.

The official YOLOX trains for exp.max_epoch epochs whatever that takes. With a budget, the Trainer measures how long
an epoch and an evaluation take on this machine and lowers max_epoch so that the whole run (set-up, epochs,
evaluations, the plain no-aug epochs at the end and the last evaluation) ends within the budget, never above the
Exp's max_epoch. The schedule is first fitted when the warm-up ends: the warm-up lr depends only on the warm-up length,
so the lr curve has no jump there. After that it is fitted again after every epoch until the no-aug phase: shorter
when the run falls behind, longer when these shared machines turn faster; each change (a small step in the cosine
lr) is logged.
"""
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import List

import torch
import torch.distributed as dist
from loguru import logger

from .parts import TrainerPart

__all__ = ["TimeBudget", "TimeBudgetPart", "fit_max_epoch", "evaluations_after", "process_start_time"]


def process_start_time():
    """time.time() at which this process started (Linux: /proc), so that the budget counts the imports and the
    set-up before the Trainer too; elsewhere, now."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = float(f.read().rsplit(")", 1)[1].split()[19])  # field 22: start time after boot
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        age = uptime - start_ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - max(age, 0.0)
    except (OSError, ValueError, IndexError):
        return time.time()


def evaluations_after(epochs_done, total, eval_interval, no_aug_epochs):
    """Evaluations the Trainer runs after epochs epochs_done+1 .. total (1-based): every `eval_interval`-th epoch
    with mosaic, then after each of the last `no_aug_epochs` epochs."""
    mosaic_end = max(total - no_aug_epochs, epochs_done)
    return mosaic_end // eval_interval - epochs_done // eval_interval + (total - mosaic_end)


def fit_max_epoch(budget_s, elapsed_s, epochs_done, epoch_s, eval_s, eval_interval, no_aug_epochs, max_epoch):
    """The largest max_epoch <= `max_epoch` whose remaining epochs and evaluations fit in budget_s - elapsed_s.

    epochs_done: epochs finished so far (before the no-aug phase); epoch_s: seconds per training epoch; eval_s:
    seconds per evaluation (with its checkpoint). At least one more epoch with mosaic is kept before the no-aug
    phase, so that it starts at an epoch boundary still ahead: when even that does not fit, that is the answer.
    """
    lowest = min(max_epoch, epochs_done + no_aug_epochs + 1)
    best = lowest
    for total in range(lowest, max_epoch + 1):
        evals = evaluations_after(epochs_done, total, eval_interval, no_aug_epochs)
        if elapsed_s + (total - epochs_done) * epoch_s + evals * eval_s > budget_s:
            break
        best = total
    return best


@dataclass
class TimeBudget:
    """Bookkeeping of Exp.max_train_minutes: epoch and evaluation durations, and the max_epoch they allow.

    minutes: the budget; margin: the share of it kept free for what is not measured (start-up, the curve, noise);
    window: the epochs the estimate of an epoch's time is taken over; tolerance: the relative change of max_epoch
    below which the schedule is kept (unless it overruns the whole budget).
    """

    minutes: float
    margin: float = 0.03
    window: int = 60
    tolerance: float = 0.03
    epoch_seconds: List[float] = field(default_factory=list)
    eval_seconds: List[float] = field(default_factory=list)

    @property
    def budget_s(self):
        return 60.0 * self.minutes * (1.0 - self.margin)

    def record_epoch(self, seconds):
        self.epoch_seconds.append(float(seconds))

    def record_eval(self, seconds):
        self.eval_seconds.append(float(seconds))

    def estimate(self):
        """(seconds per epoch, seconds per evaluation).

        Epochs: the mean of the recent ones (up to `window`), leaving out those that took more than twice their
        median. The mean, because the remaining time is a sum of epochs, and a long window, because epochs differ by
        2x with the multi-scale size alone (288 to 416 pixels): over 20 epochs the estimate moved by 10-30% and the
        schedule was refitted 30-60 times per run. A burst of slow epochs (another process on the cores for a minute)
        is left out, its time being in the elapsed time already; a machine that stays slower raises the mean, and
        a schedule that would overrun the whole budget is cut at once (`plan`). An evaluation not seen yet is
        counted as a quarter of an epoch; otherwise the longest of the last 5.
        """
        recent = self.epoch_seconds[-self.window:]
        typical = statistics.median(recent)
        kept = [s for s in recent if s <= 2.0 * typical]
        epoch_s = sum(kept) / len(kept)
        eval_s = max(self.eval_seconds[-5:]) if self.eval_seconds else 0.25 * epoch_s
        return epoch_s, eval_s

    def plan(self, elapsed_s, epochs_done, max_epoch, ceiling, warmup_epochs, eval_interval, no_aug_epochs):
        """The new max_epoch, or None to keep `max_epoch`: from the end of the warm-up (and at least 3 epochs
        measured) until the no-aug phase begins. The fit keeps the budget's margin free; the schedule moves to it
        when it differs by `tolerance` (and 2 epochs) or more, lower or higher (up to `ceiling`, the Exp's
        max_epoch), so that the noise of the epoch times does not move it back and forth, and at once when the
        projected end of the run overruns the whole budget."""
        if not self.epoch_seconds or epochs_done < max(warmup_epochs, 3):
            return None
        if epochs_done >= max_epoch - no_aug_epochs:
            return None  # the no-aug phase has begun: its length is the Exp's
        epoch_s, eval_s = self.estimate()
        args = (elapsed_s, epochs_done, epoch_s, eval_s, eval_interval, no_aug_epochs, ceiling)
        fitted = fit_max_epoch(self.budget_s, *args)  # what fits the budget less its margin
        tolerance = max(2, math.ceil(self.tolerance * max_epoch))
        overrun = fit_max_epoch(60.0 * self.minutes, *args) < max_epoch  # the schedule no longer fits at all
        if overrun or abs(fitted - max_epoch) >= tolerance:
            return fitted if fitted != max_epoch else None
        return None


class TimeBudgetPart(TrainerPart):
    """The run's wall clock in the Trainer: the time spent (kept in checkpoints, so a resume counts it) and, with
    Exp.max_train_minutes, the max_epoch fitted to the budget after every epoch (rank 0 decides for all ranks).

    minutes: the budget, or None for the official fixed max_epoch; max_epoch_asked: the Exp's max_epoch, the ceiling;
    start_time: when the run started on `clock` (default: now); clock: the wall clock, time.time unless a test gives
    one of its own.
    """

    def __init__(self, minutes, max_epoch_asked, start_time=None, clock=time.time):
        self.clock = clock
        self.budget = TimeBudget(float(minutes)) if minutes else None
        self.max_epoch_asked = max_epoch_asked
        self.start_time = clock() if start_time is None else start_time
        self._epoch_start = None
        self._epoch_end = None

    def elapsed(self):
        return self.clock() - self.start_time

    def state_dict(self, trainer):
        # max_epoch: fitted by max_train_minutes, perhaps: a resume keeps it
        return {"max_epoch": trainer.max_epoch, "max_epoch_asked": self.max_epoch_asked,
                "train_seconds": self.elapsed()}

    def load_state_dict(self, ckpt, trainer):
        """The time already spent, and the schedule the budget fitted (unless this command asks for another
        max_epoch than the run did), carry over."""
        if self.budget is None:
            return
        self.start_time = self.clock() - float(ckpt.get("train_seconds", 0.0))
        if ckpt.get("max_epoch") is not None and ckpt.get("max_epoch_asked") == trainer.max_epoch:
            trainer.max_epoch = trainer.exp.max_epoch = int(ckpt["max_epoch"])

    def before_epoch(self, trainer):
        self._epoch_start = self.clock()

    def epoch_trained(self, trainer):
        self._epoch_end = self.clock()

    def after_epoch(self, trainer, evaluated):
        if self.budget is None or self._epoch_start is None:
            return
        now = self.clock()
        if evaluated:
            self.budget.record_eval(now - self._epoch_end)
        self.budget.record_epoch(self._epoch_end - self._epoch_start)
        self._fit(trainer, now)

    def _fit(self, trainer, now):
        """Lower (or raise, up to the Exp's) max_epoch, and the lr schedule with it, to what fits the budget."""
        exp = trainer.exp
        new_max = self.budget.plan(now - self.start_time, trainer.epoch + 1, trainer.max_epoch,
                                   self.max_epoch_asked, exp.warmup_epochs, exp.eval_interval, exp.no_aug_epochs)
        if trainer.is_distributed:
            decided = torch.tensor([float(new_max or 0)], device=trainer.collective_device())
            dist.broadcast(decided, 0)
            new_max = int(decided.item()) or None
        if new_max is None or new_max == trainer.max_epoch:
            return
        epoch_s, eval_s = self.budget.estimate()
        logger.info(
            f"max_train_minutes {self.budget.minutes:g}: {(now - self.start_time) / 60:.1f} min so far, "
            f"{epoch_s:.1f} s per epoch and {eval_s:.1f} s per evaluation here: max_epoch {trainer.max_epoch} -> "
            f"{new_max} ({new_max * trainer.max_iter} iterations)"
        )
        trainer.set_max_epoch(new_max)
