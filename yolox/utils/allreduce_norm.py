"""Averaging normalisation statistics over processes, so that every rank evaluates and saves the same model."""
import pickle
from collections import OrderedDict

import torch
from torch import distributed as dist
from torch import nn

from .dist import get_world_size

__all__ = ["ASYNC_NORM", "get_async_norm_states", "pyobj2tensor", "tensor2pyobj", "all_reduce", "all_reduce_norm"]

# Layers whose running statistics each process updates on its own data (DDP syncs gradients, not these buffers).
ASYNC_NORM = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
)


def get_async_norm_states(module):
    """OrderedDict of every normalisation layer's state entries, named as in module.state_dict()."""
    states = OrderedDict()
    for name, child in module.named_modules():
        if isinstance(child, ASYNC_NORM):
            for k, v in child.state_dict().items():
                states[f"{name}.{k}" if name else k] = v
    return states


def pyobj2tensor(pyobj, device="cuda"):
    """A picklable object as a uint8 tensor."""
    return torch.frombuffer(bytearray(pickle.dumps(pyobj)), dtype=torch.uint8).to(device=device)


def tensor2pyobj(tensor):
    """The object a pyobj2tensor tensor holds."""
    return pickle.loads(tensor.cpu().numpy().tobytes())


def all_reduce(py_dict, op="sum", group=None):
    """Sum (op="sum") or average (op="mean") every tensor of `py_dict` over the processes, in one collective.

    Every process must pass the same keys with tensors of the same shapes; floating tensors are reduced in float64
    and given back in their own dtype, integer ones (counters) are summed, or averaged with integer division.
    """
    if op not in ("sum", "mean"):
        raise ValueError(f"all_reduce op must be 'sum' or 'mean'; got {op!r}")
    world_size = get_world_size() if group is None else dist.get_world_size(group)
    if world_size == 1 or not py_dict:
        return py_dict
    keys = list(py_dict.keys())
    values = [py_dict[k] for k in keys]
    device = values[0].device
    flat = torch.cat([v.detach().reshape(-1).to(torch.float64) for v in values])  # (sum of numels,)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
    if op == "mean":
        flat /= world_size
    out = OrderedDict()
    for k, v, part in zip(keys, values, torch.split(flat, [v.numel() for v in values])):
        part = part.reshape(v.shape)
        out[k] = (part.floor() if not v.dtype.is_floating_point else part).to(device=device, dtype=v.dtype)
    return out


def all_reduce_norm(module):
    """Replace the normalisation statistics of `module` by their average over all processes (a no-op alone)."""
    if get_world_size() == 1:
        return
    states = get_async_norm_states(module)
    if not states:
        return
    module.load_state_dict(all_reduce(states, op="mean"), strict=False)
