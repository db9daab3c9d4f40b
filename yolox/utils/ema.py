"""ModelEMA: an exponential moving average of a model's weights and buffers, updated with one foreach op."""
import copy
import math

import torch
from torch import nn

__all__ = ["ModelEMA", "is_parallel"]


def is_parallel(model):
    """True for a model wrapped in DataParallel or DistributedDataParallel."""
    return isinstance(model, (nn.parallel.DataParallel, nn.parallel.DistributedDataParallel))


def _unwrap(model):
    return model.module if is_parallel(model) else model


class ModelEMA:
    """A float copy `ema` of `model` (in eval mode, no gradients) that follows it as
    v = d * v + (1 - d) * current for every floating entry of the state dict (BN statistics included), with
    d = decay * (1 - exp(-updates / ramp_updates)) ramping the average up over the first updates (2000 officially;
    a short run may want a shorter ramp, or its average covers only the last few iterations).

    The update is one `torch._foreach_lerp_` over all those tensors instead of a Python loop over the state dict;
    the result is the same blend, to rounding. Integer entries (BN's num_batches_tracked) keep the value they had when copied.
    """

    def __init__(self, model, decay=0.9999, updates=0, ramp_updates=2000):
        self.ema = copy.deepcopy(_unwrap(model)).eval()
        self.updates = updates
        self.decay_base = decay
        self.ramp_updates = ramp_updates
        for p in self.ema.parameters():
            p.requires_grad_(False)

    def decay(self, updates):
        return self.decay_base * (1 - math.exp(-updates / self.ramp_updates))

    @torch.no_grad()
    def update(self, model):
        self.updates += 1
        d = self.decay(self.updates)
        # the lists are rebuilt every time: .to() or load_state_dict on either model may replace its tensors
        current = _unwrap(model).state_dict()
        names, ema_tensors = [], []
        for k, v in self.ema.state_dict().items():
            if v.dtype.is_floating_point:
                names.append(k)
                ema_tensors.append(v)
        model_tensors = [current[k].to(e.dtype) for k, e in zip(names, ema_tensors)]
        torch._foreach_lerp_(ema_tensors, model_tensors, 1.0 - d)

    def state_dict(self):
        """What a checkpoint needs to continue the average: the averaged weights and the update count."""
        return {"model": self.ema.state_dict(), "updates": self.updates}

    def load_state_dict(self, state):
        self.ema.load_state_dict(state["model"])
        self.updates = int(state["updates"])
