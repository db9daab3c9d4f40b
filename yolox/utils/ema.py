"""ModelEMA: an exponential moving average of a model's weights and buffers, updated with one foreach op."""
import copy
import math

import torch
from torch import nn

__all__ = ["ModelEMA", "is_parallel", "unwrap_model"]


def is_parallel(model):
    """True for a model wrapped in DataParallel or DistributedDataParallel."""
    return isinstance(model, (nn.parallel.DataParallel, nn.parallel.DistributedDataParallel))


def unwrap_model(model):
    """The model inside a DataParallel / DistributedDataParallel wrapper, or the model itself."""
    return model.module if is_parallel(model) else model


def _float_slots(ema_model, model):
    """[(ema submodule, model submodule, "_parameters" or "_buffers", name)]: the floating entries of the state
    dict (parameters and persistent buffers), each tensor once. Looking the tensors up through these slots costs a
    fraction of building two state dicts per update."""
    ema_modules, modules = list(ema_model.named_modules()), list(model.named_modules())
    if [n for n, _ in ema_modules] != [n for n, _ in modules]:
        raise ValueError("ModelEMA.update got a model whose modules differ from the averaged copy's; "
                         "create the ModelEMA from the model that is trained")
    slots, seen = [], set()
    for (_, e), (_, m) in zip(ema_modules, modules):
        for kind in ("_parameters", "_buffers"):
            for key, t in getattr(e, kind).items():
                skip = t is None or not t.dtype.is_floating_point or id(t) in seen
                if skip or (kind == "_buffers" and key in e._non_persistent_buffers_set):
                    continue
                seen.add(id(t))
                slots.append((e, m, kind, key))
    return slots


class ModelEMA:
    """A float copy `ema` of `model` (in eval mode, no gradients) that follows it as
    v = d * v + (1 - d) * current for every floating entry of the state dict (BN statistics included), with
    d = decay * (1 - exp(-updates / ramp_updates)) ramping the average up over the first updates (2000 officially;
    a short run may want a shorter ramp, or its average covers only the last few iterations).

    The update is one `torch._foreach_lerp_` over all those tensors instead of a Python loop over the state dict;
    the result is the same blend, to rounding. Integer entries (BN's num_batches_tracked) keep the value they had when copied.
    """

    def __init__(self, model, decay=0.9999, updates=0, ramp_updates=2000):
        self.ema = copy.deepcopy(unwrap_model(model)).eval()
        self.updates = updates
        self.decay_base = decay
        self.ramp_updates = ramp_updates
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self._slots, self._slots_of = [], None  # the averaged entries, found once per model (_float_slots)

    def decay(self, updates):
        return self.decay_base * (1 - math.exp(-updates / self.ramp_updates))

    @torch.no_grad()
    def update(self, model):
        model = unwrap_model(model)
        if self._slots_of is not model:
            self._slots = _float_slots(self.ema, model)
            self._slots_of = model
        self.updates += 1
        d = self.decay(self.updates)
        # tensors are looked up in their modules every time: .to() or a reassignment may have replaced them
        ema_tensors = [getattr(e, kind)[key] for e, _, kind, key in self._slots]
        model_tensors = [getattr(m, kind)[key] for _, m, kind, key in self._slots]
        model_tensors = [t if t.dtype is e.dtype else t.to(e.dtype) for t, e in zip(model_tensors, ema_tensors)]
        torch._foreach_lerp_(ema_tensors, model_tensors, 1.0 - d)

    def state_dict(self):
        """What a checkpoint needs to continue the average: the averaged weights and the update count."""
        return {"model": self.ema.state_dict(), "updates": self.updates}

    def load_state_dict(self, state):
        self.ema.load_state_dict(state["model"])
        self.updates = int(state["updates"])
