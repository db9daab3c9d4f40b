"""Model helpers: parameter and FLOP counts, conv+BN fusion for inference, freezing and module replacement."""
import contextlib
import copy
import time
from typing import Sequence

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "fuse_conv_and_bn",
    "fuse_model",
    "get_model_info",
    "get_model_params",
    "get_model_flops",
    "profile_model",
    "freeze_module",
    "replace_module",
    "adjust_status",
]


def get_model_params(model: nn.Module) -> int:
    """Number of parameters (every parameter, trainable or not; buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


def _model_dtype(model: nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def _count_flops(model: nn.Module, img: torch.Tensor) -> int:
    """FLOPs of model(img) as the official release reports them (see get_model_flops)."""
    norm_flops = [0]

    def count_norm(module, inputs, output):
        # thop counts an eval-mode BN as 2 ops per element (scale, shift) and the official figure doubles thop
        norm_flops[0] += 4 * output.numel()

    hooks = [
        m.register_forward_hook(count_norm) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(img)
    finally:
        for h in hooks:
            h.remove()
    return counter.get_total_flops() + norm_flops[0]


def get_model_flops(model: nn.Module, tsize: Sequence[int]) -> float:
    """GFLOPs of one eval-mode forward pass on a (1, 3, tsize[0], tsize[1]) image.

    The official release reports thop's count x 2: thop counts a multiply-accumulate of a convolution as 1 and an
    eval-mode BatchNorm as 2 per element. Here convolutions and matmuls come from PyTorch's flop counter (2 FLOPs per
    multiply-accumulate, i.e. already doubled) and each BatchNorm adds 4 per output element; this reproduces the
    published figures (1.08 nano and 6.45 tiny at 416; 26.8 s, 73.8 m, 155.6 l, 281.9 x at 640) to about 0.1%.
    Activations, pooling, upsampling and additions are not counted (thop does not count them either).
    The count runs on a copy moved to the "meta" device, so no arithmetic is done
    and no memory is used for activations; a model whose forward cannot run on meta tensors is counted on a copy on
    its own device instead.
    """
    h, w = int(tsize[0]), int(tsize[1])
    dtype = _model_dtype(model)
    meta_model = copy.deepcopy(model).eval().to("meta")
    try:
        flops = _count_flops(meta_model, torch.zeros((1, 3, h, w), device="meta", dtype=dtype))
    except (NotImplementedError, RuntimeError, TypeError):
        # e.g. a forward that builds tensors on the CPU and mixes them with the input
        del meta_model
        real_model = copy.deepcopy(model).eval()
        device = next(real_model.parameters()).device
        flops = _count_flops(real_model, torch.zeros((1, 3, h, w), device=device, dtype=dtype))
    return flops / 1e9


def get_model_info(model: nn.Module, tsize: Sequence[int]) -> str:
    """The official one-line summary: 'Params: {:.2f}M, Gflops: {:.2f}' at input size tsize = (h, w)."""
    params = get_model_params(model) / 1e6
    flops = get_model_flops(model, tsize)
    return "Params: {:.2f}M, Gflops: {:.2f}".format(params, flops)


@torch.no_grad()
def profile_model(model: nn.Module, tsize: Sequence[int], runs: int = 1, warmup: int = 1, seed: int = 0) -> dict:
    """Params, GFLOPs and a timed real forward pass (eval mode, random image of size tsize) of `model`.

    Returns a dict with params (int), gflops (float), output_shape (tuple, or a tuple of shapes for a tuple output)
    and forward_ms (mean over `runs` passes after `warmup` untimed ones). The model's mode is restored.
    """
    h, w = int(tsize[0]), int(tsize[1])
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    img = (torch.rand((1, 3, h, w), generator=generator) * 255).to(device=device, dtype=_model_dtype(model))
    with adjust_status(model, training=False):
        for _ in range(max(warmup, 0)):
            model(img)
        times = []
        for _ in range(max(runs, 1)):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            out = model(img)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
    if isinstance(out, torch.Tensor):
        out_shape = tuple(out.shape)
    else:
        out_shape = tuple(tuple(o.shape) for o in out)
    return {
        "params": get_model_params(model),
        "gflops": get_model_flops(model, (h, w)),
        "output_shape": out_shape,
        "forward_ms": 1000.0 * sum(times) / len(times),
    }


@torch.no_grad()
def fuse_conv_and_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """One Conv2d (with bias, no grad) computing bn(conv(x)) with bn in eval mode (running statistics)."""
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=True,
        padding_mode=conv.padding_mode,
    ).requires_grad_(False).to(device=conv.weight.device, dtype=conv.weight.dtype)

    # bn(y) = (y - mean) * gamma / sqrt(var + eps) + beta = y * scale + (beta - mean * scale)
    gamma = bn.weight if bn.weight is not None else torch.ones_like(bn.running_var)
    beta = bn.bias if bn.bias is not None else torch.zeros_like(bn.running_mean)
    scale = gamma / torch.sqrt(bn.running_var + bn.eps)  # (out,)
    conv_bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
    fused.bias.copy_((conv_bias - bn.running_mean) * scale + beta)
    if conv.weight.dim() == 4 and conv.weight.is_contiguous(memory_format=torch.channels_last) \
            and not conv.weight.is_contiguous():
        fused.to(memory_format=torch.channels_last)  # keep a channels_last model in its format
    return fused


def _is_fusable_conv_block(module: nn.Module) -> bool:
    """A BaseConv-like block: conv (Conv2d) then bn (BatchNorm2d), with a fuseforward(x) = act(conv(x)).

    Checked by structure rather than by class so that yolox.utils does not import yolox.models.
    """
    return (
        isinstance(getattr(module, "conv", None), nn.Conv2d)
        and isinstance(getattr(module, "bn", None), nn.BatchNorm2d)
        and callable(getattr(module, "fuseforward", None))
    )


def fuse_model(model: nn.Module) -> nn.Module:
    """Fold every BaseConv's BatchNorm into its convolution, in place, for inference; returns the model.

    Each block's conv becomes the fused conv, its bn is removed and its forward becomes fuseforward. Only use the
    result for inference: the BatchNorm statistics are frozen into the weights.
    """
    for module in model.modules():
        if _is_fusable_conv_block(module):
            module.conv = fuse_conv_and_bn(module.conv, module.bn)
            delattr(module, "bn")
            module.forward = module.fuseforward
    return model


def replace_module(module, replaced_module_type, new_module_type, replace_func=None) -> nn.Module:
    """Replace every submodule of type replaced_module_type by replace_func(replaced, new) (default new_module_type()).

    Returns the module itself, or its replacement when the module is itself of the replaced type.
    """
    if replace_func is None:

        def replace_func(replaced_type, new_type):
            return new_type()

    if isinstance(module, replaced_module_type):
        return replace_func(replaced_module_type, new_module_type)
    for name, child in module.named_children():
        new_child = replace_module(child, replaced_module_type, new_module_type, replace_func)
        if new_child is not child:
            module.add_module(name, new_child)
    return module


def freeze_module(module: nn.Module, name=None) -> nn.Module:
    """Stop gradients and put in eval mode (BN, dropout) every parameter/submodule whose name contains `name`.

    With name=None the whole module is frozen. Returns the module.
    """
    for param_name, parameter in module.named_parameters():
        if name is None or name in param_name:
            parameter.requires_grad = False
    for module_name, sub_module in module.named_modules():
        if name is None or name in module_name:
            sub_module.eval()
    return module


@contextlib.contextmanager
def adjust_status(module: nn.Module, training: bool = False):
    """Temporarily set every submodule's training flag to `training`; the original flags come back on exit."""
    status = {}

    def set_status(m):
        status[m] = m.training
        m.training = training

    def restore(m):
        m.training = status.pop(m)

    module.apply(set_status)
    try:
        yield module
    finally:
        module.apply(restore)
