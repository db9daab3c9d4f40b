"""Frozen layers (Exp.freeze): modules whose parameters keep their values and whose BatchNorm layers keep their running
statistics, e.g. a pretrained backbone while the neck and head learn a new data set (official issues #1105, #1604)."""
from loguru import logger
from torch import nn

from .parts import TrainerPart

__all__ = ["FREEZE_CHOICES", "FrozenLayers", "freeze_prefixes", "freeze_layers"]

# the names Exp.freeze accepts besides prefixes: the CSPDarknet inside YOLOPAFPN, or the whole YOLOPAFPN
FREEZE_CHOICES = {"backbone": ("backbone.backbone",), "backbone+neck": ("backbone",)}


def freeze_prefixes(value):
    """The module-name prefixes of an Exp.freeze value: None, "backbone", "backbone+neck", a list or tuple of prefixes,
    or one string of prefixes separated by commas (the command line's `freeze backbone.backbone.dark2,head.stems`)."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = FREEZE_CHOICES.get(value.strip(), value.split(","))
    if not isinstance(value, (list, tuple)) or not all(isinstance(p, str) for p in value):
        raise ValueError(f"Exp.freeze={value!r} is not understood; use None, 'backbone', 'backbone+neck' or a list "
                         "of module-name prefixes such as ['backbone.backbone.dark2', 'head.stems']")
    prefixes = tuple(p.strip().strip(".") for p in value if p.strip().strip("."))
    if not prefixes:
        raise ValueError(f"Exp.freeze={value!r} names no module; use None to train every layer")
    return prefixes


def _under(name, prefix):
    return name == prefix or name.startswith(prefix + ".")


def freeze_layers(model, prefixes):
    """Set requires_grad False on the parameters of the modules under `prefixes` and put their BatchNorm layers in
    eval mode; returns (frozen parameter count, the frozen BatchNorm modules). A prefix that names no module of the
    model is a ValueError naming it and the model's top-level modules."""
    modules = dict(model.named_modules())
    for prefix in prefixes:
        if not any(_under(name, prefix) for name in modules if name):
            top = ", ".join(name for name, _ in model.named_children())
            raise ValueError(f"Exp.freeze: {prefix!r} names no module of the model, whose top-level modules are "
                             f"{top}; use 'backbone', 'backbone+neck' or prefixes such as 'backbone.backbone.dark2'")
    count = 0
    for name, param in model.named_parameters():
        if any(_under(name, p) for p in prefixes):
            param.requires_grad_(False)
            count += param.numel()
    frozen_bn = [m for name, m in modules.items()
                 if isinstance(m, nn.modules.batchnorm._BatchNorm) and any(_under(name, p) for p in prefixes)]
    for bn in frozen_bn:
        bn.eval()
    return count, frozen_bn


class FrozenLayers(TrainerPart):
    """The Trainer's part for Exp.freeze: freezes the layers once the model is built (before the optimiser, which then
    leaves them out, and before a resume), and keeps their BatchNorm layers in eval mode every epoch although the
    loop puts the model in training mode."""

    def __init__(self, value):
        self.prefixes = freeze_prefixes(value)  # a malformed value fails here, before any data is read
        self.frozen_bn = []

    def model_built(self, trainer, model):
        if not self.prefixes:
            return
        count, self.frozen_bn = freeze_layers(model, self.prefixes)
        # Exp.get_optimizer builds its optimiser once: one made before the freeze would still hold the frozen tensors
        trainer.exp.__dict__.pop("optimizer", None)
        total = sum(p.numel() for p in model.parameters())
        logger.info(f"frozen layers (Exp.freeze): {', '.join(self.prefixes)}: {count:,} of {total:,} parameters "
                    f"left out of the optimiser, {len(self.frozen_bn)} BatchNorm layers keep their running statistics")

    def before_epoch(self, trainer):
        for bn in self.frozen_bn:
            bn.eval()
