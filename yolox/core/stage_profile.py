"""Where a training iteration goes: a clock split into stages (data wait, preprocessing, backbone, neck, head,
assignment, loss, backward, optimiser step, EMA, logging) and the table of their ms and shares.

The marks inside the model's forward come from hooks on its parts (model.backbone.backbone for the backbone,
model.backbone for backbone + neck, model.head and its get_assignments), installed only while profiling; a part
that a custom model does not have is simply folded into the next stage. CUDA work is synchronised at every mark,
only while profiling, so that each stage is charged for its own kernels.
"""
import contextlib
import time
from collections import OrderedDict

import torch
from tabulate import tabulate

from loguru import logger

from yolox.utils import unwrap_model

from .parts import TrainerPart

__all__ = ["STAGES", "StageClock", "NullClock", "stage_hooks", "profile_table", "StageProfile", "ProfileDone",
           "PROFILE_WARMUP_ITERS"]

PROFILE_WARMUP_ITERS = 5

STAGES = (
    "data wait",
    "preprocessing/resize",
    "backbone",
    "neck",
    "head forward",
    "assignment",
    "loss",
    "backward",
    "optimiser step",
    "EMA",
    "logging",
)


class NullClock:
    """The clock used when not profiling: every call does nothing."""

    active = False

    def start(self):
        pass

    def mark(self, stage):
        pass

    def end_iteration(self):
        pass


class StageClock:
    """mark(stage) charges the time since the previous mark to `stage`; totals are kept per stage while
    `recording` is on (warm-up iterations are run with it off)."""

    active = True

    def __init__(self, device="cpu"):
        self.sync = torch.device(device).type == "cuda"
        self.totals = OrderedDict((s, 0.0) for s in STAGES)
        self.iterations = 0
        self.recording = False
        self._last = None

    def _now(self):
        if self.sync:
            torch.cuda.synchronize()
        return time.perf_counter()

    def start(self):
        self._last = self._now()

    def mark(self, stage):
        now = self._now()
        if self.recording and self._last is not None:
            self.totals[stage] = self.totals.get(stage, 0.0) + (now - self._last)
        self._last = now

    def end_iteration(self):
        self.mark("logging")
        if self.recording:
            self.iterations += 1

    def per_iteration_ms(self):
        n = max(self.iterations, 1)
        return OrderedDict((k, 1000.0 * v / n) for k, v in self.totals.items())


@contextlib.contextmanager
def stage_hooks(model, clock):
    """Install the forward hooks that mark backbone, neck, head forward, assignment and loss on `model`."""
    if not clock.active:
        yield
        return
    net = unwrap_model(model)
    handles, patched = [], []
    neck = getattr(net, "backbone", None)
    backbone = getattr(neck, "backbone", None)
    head = getattr(net, "head", None)
    handles.append(net.register_forward_pre_hook(lambda m, inp: clock.mark("preprocessing/resize")))
    if isinstance(backbone, torch.nn.Module):
        handles.append(backbone.register_forward_hook(lambda m, inp, out: clock.mark("backbone")))
    if isinstance(neck, torch.nn.Module):
        handles.append(neck.register_forward_hook(lambda m, inp, out: clock.mark("neck")))
    if head is not None and callable(getattr(head, "get_assignments", None)):
        original = head.get_assignments

        def timed_assignments(*args, **kwargs):
            clock.mark("head forward")
            result = original(*args, **kwargs)
            clock.mark("assignment")
            return result

        head.get_assignments = timed_assignments
        patched.append(head)
    handles.append(net.register_forward_hook(lambda m, inp, out: clock.mark("loss")))
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        for h in patched:
            del h.get_assignments  # back to the class's method


def profile_table(per_stage_ms, title=None):
    """The profile as a table: one row per stage with ms per iteration and share of the iteration, then the total."""
    total = sum(per_stage_ms.values())
    rows = [(stage, f"{ms:.1f}", f"{100.0 * ms / total:.1f}%" if total > 0 else "-") for stage, ms in per_stage_ms.items()]
    rows.append(("total", f"{total:.1f}", "100.0%" if total > 0 else "-"))
    table = tabulate(rows, headers=["stage", "ms / iter", "share"], tablefmt="github", colalign=("left", "right", "right"))
    return f"{title}\n{table}" if title else table


class ProfileDone(Exception):
    """Raised after the profile table is printed: a --profile run stops there."""


class StageProfile(TrainerPart):
    """--profile N: time N iterations after PROFILE_WARMUP_ITERS of warm-up, stage by stage, log the table and stop
    the run (ProfileDone). It gives the Trainer and its TrainStep a StageClock and hooks the model's parts."""

    def __init__(self, iterations):
        self.iterations = iterations
        self._hooks = None

    def before_train(self, trainer):
        trainer.clock = trainer.step.clock = StageClock(trainer.device)
        self._hooks = stage_hooks(trainer.model, trainer.clock)
        self._hooks.__enter__()
        logger.info(f"profiling {self.iterations} iterations after {PROFILE_WARMUP_ITERS} of warm-up")

    def before_iter(self, trainer):
        done = trainer.progress_in_iter - (trainer.start_epoch * trainer.max_iter + trainer.start_iter)
        trainer.clock.recording = PROFILE_WARMUP_ITERS <= done < PROFILE_WARMUP_ITERS + self.iterations

    def after_iter(self, trainer):
        if trainer.clock.iterations < self.iterations:
            return
        head = getattr(unwrap_model(trainer.model), "head", None)
        title = (f"per-stage profile: {trainer.clock.iterations} iterations after {PROFILE_WARMUP_ITERS} of warm-up, "
                 f"batch {trainer.batch_per_rank()} per process, size {trainer.input_size}, "
                 f"simota_mode {getattr(head, 'simota_mode', '-')}, device {trainer.device}")
        logger.info("\n" + profile_table(trainer.clock.per_iteration_ms(), title))
        trainer.clock = trainer.step.clock = NullClock()
        raise ProfileDone()

    def after_train(self, trainer, finished):
        if self._hooks is not None:
            self._hooks.__exit__(None, None, None)
            self._hooks = None
