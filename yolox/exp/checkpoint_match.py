"""Which published model a checkpoint holds, so that a checkpoint given with the wrong Exp gets a useful message."""
import torch

from yolox.utils import CheckpointError, CheckpointMismatchError, checkpoint_num_classes, load_model_weights

from .build import EXP_NAMES, get_exp_by_name

__all__ = ["matching_published_models", "mismatch_hint", "load_exp_weights"]


def _layout(exp_name, num_classes):
    exp = get_exp_by_name(exp_name)
    if num_classes is not None:
        exp.num_classes = num_classes
    with torch.device("meta"):
        model = exp.get_model()
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def matching_published_models(state_dict):
    """Names of the published models (yolox-nano ... yolov3) whose tensors have exactly the names and shapes of
    `state_dict` (any class count)."""
    shapes = {k: tuple(v.shape) for k, v in state_dict.items()}
    num_classes = checkpoint_num_classes(state_dict)
    return [name for name in EXP_NAMES if _layout(name, num_classes) == shapes]


def mismatch_hint(state_dict):
    """' It holds a yolox-nano (exps/yolox_nano.py).' or '' when it matches no published model."""
    names = matching_published_models(state_dict)
    if not names:
        return ""
    files = " or ".join(f"{n} (-n {n}, or exps/{EXP_NAMES[n]}.py)" for n in names)
    return f" It holds a {files}."


def load_exp_weights(model, path, num_classes=None, map_location="cpu"):
    """load_model_weights, strict, with the name of the published model the checkpoint holds when it does not fit."""
    try:
        return load_model_weights(model, path, num_classes=num_classes, map_location=map_location)
    except CheckpointMismatchError as e:
        hint = mismatch_hint(e.state_dict) if e.state_dict is not None else ""
        raise CheckpointError(f"{e}{hint}") from None
