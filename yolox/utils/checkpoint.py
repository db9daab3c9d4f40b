"""Reading and writing checkpoints in the official `{"model": state_dict, ...}` format, weights only (no pickled code)."""
import os
import pickle
import shutil

import torch
from loguru import logger

__all__ = [
    "CheckpointError",
    "load_checkpoint_file",
    "state_dict_from_checkpoint",
    "checkpoint_num_classes",
    "check_num_classes",
    "load_model_weights",
    "load_ckpt",
    "save_checkpoint",
]

# The classification conv of the first level: its output channels are the class count.
_CLS_KEY = "head.cls_preds.0.weight"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used as asked; the message says which file and what to do."""


def load_checkpoint_file(path, map_location="cpu"):
    """Load `path` with torch.load(weights_only=True): tensors and plain containers only, never arbitrary code."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint file {path!r} does not exist; pass the path of a .pth file with -c/--ckpt")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"checkpoint {path!r} holds Python objects other than tensors and plain containers, so it was not "
            f"loaded (unpickling them could run code). Re-save it from a trusted session as "
            f"torch.save({{'model': model.state_dict()}}, path). Detail: {str(e).splitlines()[0]}"
        ) from e
    except (RuntimeError, EOFError) as e:
        raise CheckpointError(f"checkpoint {path!r} is not a readable torch file (truncated or not a .pth?): {e}") from e


def state_dict_from_checkpoint(ckpt, path="<checkpoint>"):
    """The model's state dict: ckpt["model"] in the official format, or ckpt itself when it is a bare state dict."""
    if isinstance(ckpt, dict) and "model" in ckpt and isinstance(ckpt["model"], dict):
        return ckpt["model"]
    if isinstance(ckpt, dict) and ckpt and all(torch.is_tensor(v) for v in ckpt.values()):
        return ckpt
    keys = list(ckpt.keys())[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
    raise CheckpointError(
        f"checkpoint {path!r} has no 'model' entry (found {keys}); expected the official format "
        f"{{'model': state_dict, ...}} as written by tools/train.py"
    )


def checkpoint_num_classes(state_dict):
    """Number of classes the checkpoint's head predicts, or None when it has no YOLOX head."""
    weight = state_dict.get(_CLS_KEY)
    return int(weight.shape[0]) if weight is not None else None


def check_num_classes(state_dict, num_classes, path="<checkpoint>"):
    """Raise a CheckpointError naming both counts when the checkpoint's head does not predict `num_classes`."""
    found = checkpoint_num_classes(state_dict)
    if found is not None and num_classes is not None and found != int(num_classes):
        raise CheckpointError(
            f"checkpoint {path!r} was trained for {found} classes but the Exp has num_classes = {num_classes}. "
            f"Use the Exp the checkpoint was trained with, set `self.num_classes = {found}` in your Exp file, "
            f"or add `num_classes {found}` at the end of the command line."
        )


def load_model_weights(model, path, num_classes=None, strict=True, map_location="cpu"):
    """Load the weights of checkpoint `path` into `model` (strict by default); returns the loaded checkpoint dict."""
    ckpt = load_checkpoint_file(path, map_location=map_location)
    state_dict = state_dict_from_checkpoint(ckpt, path)
    check_num_classes(state_dict, num_classes, path)
    if strict:
        result = model.load_state_dict(state_dict, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise CheckpointError(
                f"checkpoint {path!r} does not fit the model built by the Exp: "
                f"{len(result.missing_keys)} missing keys (e.g. {result.missing_keys[:3]}), "
                f"{len(result.unexpected_keys)} unexpected keys (e.g. {result.unexpected_keys[:3]}). "
                f"Check that -f/-n names the Exp (depth, width, model kind) the checkpoint was trained with."
            )
        mismatched = _mismatched_shapes(model.state_dict(), state_dict)
        if mismatched:
            raise CheckpointError(f"checkpoint {path!r} has tensors of other shapes than the model: {mismatched[:3]}")
    else:
        load_ckpt(model, state_dict)
    return ckpt


def _mismatched_shapes(model_sd, ckpt_sd):
    return [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(model_sd[k].shape)}"
        for k, v in ckpt_sd.items()
        if k in model_sd and tuple(v.shape) != tuple(model_sd[k].shape)
    ]


def load_ckpt(model, ckpt):
    """Official helper for fine-tuning: load the entries whose name and shape match, warn about the rest."""
    model_sd = model.state_dict()
    kept = {}
    for key, value in model_sd.items():
        if key not in ckpt:
            logger.warning(f"{key} is not in the checkpoint and is left as initialised")
            continue
        if tuple(ckpt[key].shape) != tuple(value.shape):
            logger.warning(
                f"Shape of {key} in checkpoint is {tuple(ckpt[key].shape)}, while shape of {key} in model is "
                f"{tuple(value.shape)}; left as initialised"
            )
            continue
        kept[key] = ckpt[key]
    model.load_state_dict(kept, strict=False)
    return model


def save_checkpoint(state, is_best, save_dir, model_name=""):
    """Write `{model_name}_ckpt.pth` under save_dir and copy it to best_ckpt.pth when is_best (official names)."""
    os.makedirs(save_dir, exist_ok=True)
    filename = os.path.join(save_dir, model_name + "_ckpt.pth")
    torch.save(state, filename)
    if is_best:
        shutil.copyfile(filename, os.path.join(save_dir, "best_ckpt.pth"))
