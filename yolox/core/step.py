"""One training step on a prepared batch: forward with the loss, a finite-loss check, backward, optimiser step, EMA.

The Trainer runs it every iteration; benchmarks/bench_train.py times it on a fixed batch; a user's own loop can call it.
"""
import contextlib
import inspect
import math

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from .stage_profile import NullClock

__all__ = ["LOSS_KEYS", "NonFiniteLossError", "autocast_for", "cpu_has_native_bfloat16", "TrainStep",
           "mixed_precision", "grad_scaler", "rank_local_buffers", "is_finite"]

# the loss terms the official log prints, in its order
LOSS_KEYS = ("total_loss", "iou_loss", "l1_loss", "conf_loss", "cls_loss")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the iteration and the loss terms."""


def cpu_has_native_bfloat16():
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX), where oneDNN's bfloat16 convolutions are
    at least as fast as float32; elsewhere they are emulated and slower."""
    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(bool(check()) for check in checks if callable(check))


def mixed_precision(device, fp16):
    """(mixed precision on, a note for the log or None) for --fp16 on `device`: float16 on CUDA; on a CPU bfloat16
    autocast where it has bfloat16 in hardware, elsewhere float32, as the official --fp16 does on a CPU (its CUDA
    autocast does nothing there) and because emulated bfloat16 would be slower."""
    device = torch.device(device)
    if not fp16 or device.type == "cuda":
        return bool(fp16), None
    if not cpu_has_native_bfloat16():
        return False, ("--fp16 on a CPU without bfloat16 in hardware (AVX512-BF16 or AMX): training in float32, where "
                       "emulated bfloat16 would be slower")
    return True, "--fp16 on the CPU: bfloat16 autocast, no GradScaler (float16 mixed precision needs CUDA)"


def grad_scaler(enabled):
    """The CUDA GradScaler of --fp16 (torch.amp from torch 2.3, torch.cuda.amp before)."""
    if hasattr(torch, "amp") and hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler("cuda", enabled=enabled)
    return torch.cuda.amp.GradScaler(enabled=enabled)


def rank_local_buffers():
    """DDP keyword for BN statistics kept per rank (synced at start only), as the official broadcast_buffers=False;
    newer torch names it forward_sync_buffers."""
    if "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}


def is_finite(value):
    return value == value and value not in (float("inf"), float("-inf"))


def autocast_for(device, mixed_precision):
    """The mixed-precision context of --fp16: float16 autocast on CUDA, bfloat16 autocast on the CPU, none without."""
    device = torch.device(device)
    if not mixed_precision:
        return contextlib.nullcontext()
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return torch.autocast(device.type, dtype=torch.bfloat16)


class TrainStep:
    """step(inps, targets) -> {loss name: float, "num_fg": float} after one optimiser update.

    model: in train mode, model(inps, targets) returns the official loss dict. scaler: a GradScaler (enabled for
    CUDA float16), or None. ema: a ModelEMA or None. mixed_precision: --fp16. clock: a StageClock to profile, or
    None. check: called with the loss values before backward; it may raise to stop (the Trainer agrees on it across
    ranks), otherwise a NonFiniteLossError is raised for a NaN or infinite loss. Nothing is applied to the weights
    of a step whose loss is not finite.
    """

    def __init__(self, model, optimizer, scaler=None, ema=None, device="cpu", mixed_precision=False, clock=None,
                 check=None):
        self.model = model
        self.optimizer = optimizer
        self.scaler = scaler
        self.ema = ema
        self.device = torch.device(device)
        self.mixed_precision = mixed_precision
        self.clock = clock if clock is not None else NullClock()
        self.check = check if check is not None else self.raise_if_not_finite

    def forward(self, inps, targets):
        with autocast_for(self.device, self.mixed_precision):
            return self.model(inps, targets)

    @staticmethod
    def loss_values(outputs):
        """The loss terms and num_fg as Python floats, read from the device in one transfer."""
        keys = [k for k in LOSS_KEYS if k in outputs] + (["num_fg"] if "num_fg" in outputs else [])
        stacked = torch.stack([torch.as_tensor(outputs[k], device=outputs["total_loss"].device).detach().float()
                               for k in keys])
        return dict(zip(keys, stacked.tolist()))

    @staticmethod
    def raise_if_not_finite(values, where="this step"):
        if not math.isfinite(values["total_loss"]):
            terms = ", ".join(f"{k} {v:.4g}" for k, v in values.items())
            raise NonFiniteLossError(f"the loss is not finite at {where} ({terms}); training stopped")

    def __call__(self, inps, targets):
        outputs = self.forward(inps, targets)
        values = self.loss_values(outputs)
        self.check(values)
        self.optimizer.zero_grad(set_to_none=True)
        loss = outputs["total_loss"]
        if self.scaler is not None and self.scaler.is_enabled():
            self.scaler.scale(loss).backward()
            self.clock.mark("backward")
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.clock.mark("backward")
            self.optimizer.step()
        self.clock.mark("optimiser step")
        if self.ema is not None:
            self.ema.update(self.model)
            self.clock.mark("EMA")
        return values
