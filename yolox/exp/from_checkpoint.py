"""Checkpoints that describe themselves: what the trainer writes beside the weights (class names, the Exp's plain
settings, the model's structure), and the Exp rebuilt from them, so that -c alone is enough for demo, eval, export."""
import os
import sys

import torch.nn as nn

from .yolox_base import Exp

__all__ = ["CHECKPOINT_KEYS", "CheckpointExp", "describe_run", "exp_settings", "model_config",
           "checkpoint_describes_itself", "exp_from_checkpoint", "build_model_from_config"]

# the keys a self-describing checkpoint adds to the official ones ("model", "optimizer", "start_epoch", ...)
CHECKPOINT_KEYS = ("class_names", "exp", "model_config")
_OBJECT_ATTRIBUTES = ("model", "optimizer", "dataset")  # built objects, not settings
_ACTIVATIONS = ((nn.SiLU, "silu"), (nn.LeakyReLU, "lrelu"), (nn.ReLU, "relu"))


# ------------------------------------------------------------------------------------------ writing
def _is_plain(value):
    """Numbers, strings, bools, None, and tuples / lists of those (what a weights-only checkpoint stores)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    return isinstance(value, (tuple, list)) and all(_is_plain(v) for v in value)


def exp_settings(exp):
    """{name: value} of the Exp's public attributes that are plain values (objects and private names skipped)."""
    return {k: (list(v) if isinstance(v, list) else v) for k, v in vars(exp).items()
            if not k.startswith("_") and k not in _OBJECT_ATTRIBUTES and _is_plain(v)}


def _activation_name(module):
    """"silu", "lrelu" or "relu": the first activation inside module (None when it has none)."""
    for m in module.modules():
        if type(m).__name__ == "SiLU":  # nn.SiLU, or the export-friendly yolox.models.SiLU
            return "silu"
        for cls, name in _ACTIVATIONS:
            if isinstance(m, cls):
                return name
    return None


def _darknet_depth(neck):
    """21 or 53: the Darknet depth of a YOLOFPN, from the number of residual blocks of its dark3 stage."""
    blocks = len(neck.backbone.dark3) - 1  # a downsampling conv, then the residual blocks
    return {2: 21, 8: 53}.get(blocks, 53)


def model_config(exp, model, exp_file=None):
    """What rebuilds `model` (a YOLOX built by exp): class count, depth, width, activations, depthwise, neck kind,
    in_channels, strides, test_size, and where the Exp class came from."""
    from yolox.models import DWConv

    neck, head = model.backbone, model.head
    width = float(exp.width)
    kind = type(neck).__name__
    if kind == "YOLOPAFPN":
        in_channels = [int(c) for c in neck.in_channels]
    else:  # the head's stems take int(c * width) channels
        in_channels = [int(round(stem.conv.in_channels / width)) for stem in head.stems]
    exp_cls = type(exp)
    module_file = getattr(sys.modules.get(exp_cls.__module__), "__file__", None)
    config = {
        "num_classes": int(head.num_classes),
        "depth": float(exp.depth),
        "width": width,
        "act": _activation_name(neck) or exp.act,
        "head_act": _activation_name(head) or exp.act,
        "depthwise": any(isinstance(m, DWConv) for m in model.modules()),
        "neck": kind,
        "in_channels": in_channels,
        "strides": [int(s) for s in head.strides],
        "test_size": [int(v) for v in exp.test_size],
        "exp_class": f"{exp_cls.__module__}.{exp_cls.__qualname__}",
        "exp_file": os.path.realpath(exp_file) if exp_file else module_file,
    }
    if kind == "YOLOFPN":
        config["darknet_depth"] = _darknet_depth(neck)
    return config


def describe_run(exp, model, class_names, exp_file=None):
    """The keys a checkpoint of this run adds (CHECKPOINT_KEYS): its class names, Exp settings and model config."""
    return {"class_names": list(class_names), "exp": exp_settings(exp),
            "model_config": model_config(exp, model, exp_file)}


# ------------------------------------------------------------------------------------------ reading
def checkpoint_describes_itself(ckpt):
    """Whether a loaded checkpoint carries the model config and Exp settings (one written by this trainer)."""
    return isinstance(ckpt, dict) and isinstance(ckpt.get("model_config"), dict) and isinstance(ckpt.get("exp"), dict)


def build_model_from_config(config, simota_mode="batched", simota_pack_width=10000):
    """The YOLOX (backbone + neck + head) that model_config describes, with fresh weights."""
    from yolox.models import YOLOX, YOLOFPN, YOLOPAFPN, YOLOXHead

    kind, depthwise = config["neck"], bool(config["depthwise"])
    if kind == "YOLOFPN":
        neck = YOLOFPN(depth=int(config.get("darknet_depth", 53)))
    elif kind == "YOLOPAFPN":
        neck = YOLOPAFPN(config["depth"], config["width"], in_channels=config["in_channels"], depthwise=depthwise,
                         act=config["act"])
    else:
        raise ValueError(f"the checkpoint's model has a {kind} neck, which only its own Exp builds; pass the Exp "
                         f"file with -f ({config.get('exp_file')})")
    head = YOLOXHead(int(config["num_classes"]), config["width"], strides=config["strides"],
                     in_channels=config["in_channels"], act=config["head_act"], depthwise=depthwise,
                     simota_mode=simota_mode, simota_pack_width=simota_pack_width)
    return YOLOX(neck, head)


class CheckpointExp(Exp):
    """An Exp rebuilt from a self-describing checkpoint: its settings, and get_model building its model_config."""

    def __init__(self, config=None):
        super().__init__()
        self._model_config = dict(config) if config else None

    def get_model(self):
        if getattr(self, "model", None) is None and self._model_config is not None:
            config = dict(self._model_config, num_classes=self.num_classes)
            self.model = build_model_from_config(config, self.simota_mode, self.simota_pack_width)
        return super().get_model()

    def sync_classes_with_data(self):
        """data_yaml's classes when the file is here; else the checkpoint's (the demo needs no data)."""
        if getattr(self, "data_yaml", None) and os.path.isfile(self.data_yaml):
            super().sync_classes_with_data()


def _not_self_describing(source, ckpt):
    """The one-line error for a checkpoint with only weights, naming the published model it holds if any."""
    hint = ""
    try:
        from yolox.utils import state_dict_from_checkpoint

        from .checkpoint_match import mismatch_hint

        hint = mismatch_hint(state_dict_from_checkpoint(ckpt, source))
    except Exception:  # noqa: BLE001 - the hint is a courtesy; the message stands without it
        pass
    return ValueError(f"{source} holds weights only (an official or older checkpoint) and does not say which model "
                      f"they belong to: pass its Exp with -f <exp file> or -n <model name>.{hint}")


def exp_from_checkpoint(ckpt_or_path, source=None):
    """The Exp that builds the checkpoint's model (strict load) with its test_size, test_conf, nmsthre, class_names
    and data settings; ValueError (one line) for a checkpoint that does not describe itself. source: the file's
    name in messages when a loaded checkpoint is given."""
    from yolox.utils import load_checkpoint_file

    source = source or "the checkpoint"
    ckpt = ckpt_or_path
    if isinstance(ckpt_or_path, (str, os.PathLike)):
        source = os.fspath(ckpt_or_path)
        ckpt = load_checkpoint_file(source)
    if not checkpoint_describes_itself(ckpt):
        raise _not_self_describing(source, ckpt)
    config = ckpt["model_config"]
    exp = CheckpointExp(config)
    for key, value in ckpt["exp"].items():
        if not key.startswith("_") and key not in _OBJECT_ATTRIBUTES:
            setattr(exp, key, value)
    exp.num_classes = int(config["num_classes"])
    names = ckpt.get("class_names")
    exp.class_names = list(names) if names and len(names) == exp.num_classes else None
    if exp.test_size is not None:
        exp.test_size = tuple(int(v) for v in exp.test_size)
    return exp
