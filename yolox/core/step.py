"""One training step on a prepared batch: forward with the loss, a finite-loss check, backward, optimiser step, EMA.

The Trainer runs it every iteration; tools/bench_train.py times it on a fixed batch; a user's own loop can call it.
"""
import contextlib
import math

import torch

from .stage_profile import NullClock

__all__ = ["LOSS_KEYS", "NonFiniteLossError", "autocast_for", "cpu_has_native_bfloat16", "TrainStep"]

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
