"""Reading and writing checkpoints in the official `{"model": state_dict, ...}` format, weights only (no pickled code)."""
import os
import pickle
import tempfile

import torch
from loguru import logger

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "atomic_save",
    "load_checkpoint_file",
    "state_dict_from_checkpoint",
    "checkpoint_num_classes",
    "check_num_classes",
    "load_model_weights",
    "load_ckpt",
    "save_checkpoint",
    "check_fits",
]

# The classification conv of the first level: its output channels are the class count.
_CLS_KEY = "head.cls_preds.0.weight"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used as asked; the message says which file and what to do."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's tensors do not fit the model (another model size or kind); `state_dict` is the checkpoint's,
    so that a caller can say which model it belongs to."""

    def __init__(self, message, state_dict=None, mismatched=(), missing=(), unexpected=()):
        super().__init__(message)
        self.state_dict = state_dict
        self.mismatched = list(mismatched)  # names of the tensors whose shapes differ
        self.missing = list(missing)
        self.unexpected = list(unexpected)


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
    """Load the weights of checkpoint `path` into `model` (strict by default); returns the loaded checkpoint dict.

    Strict loading refuses, before touching the model, a checkpoint with missing, unexpected or differently shaped
    tensors (CheckpointMismatchError, one example of each kind); strict=False loads what fits (see load_ckpt).
    """
    ckpt = load_checkpoint_file(path, map_location=map_location)
    state_dict = state_dict_from_checkpoint(ckpt, path)
    if strict:
        try:
            check_fits(model, state_dict, path)
        except CheckpointMismatchError as e:
            if all(".cls_preds." in k for k in e.mismatched):
                check_num_classes(state_dict, num_classes, path)  # only the class count differs: say so
            raise
        check_num_classes(state_dict, num_classes, path)
        model.load_state_dict(state_dict, strict=True)
    else:
        check_num_classes(state_dict, num_classes, path)
        load_ckpt(model, state_dict)
    return ckpt


def check_fits(model, state_dict, path="<checkpoint>"):
    """CheckpointMismatchError when `state_dict` does not have exactly the model's names and shapes."""
    model_sd = model.state_dict()
    missing = [k for k in model_sd if k not in state_dict]
    unexpected = [k for k in state_dict if k not in model_sd]
    mismatched = [k for k, v in state_dict.items() if k in model_sd and tuple(v.shape) != tuple(model_sd[k].shape)]
    if not (missing or unexpected or mismatched):
        return
    parts = []
    if mismatched:
        k = mismatched[0]
        parts.append(f"{len(mismatched)} of {len(model_sd)} tensors have another shape (e.g. {k}: checkpoint "
                     f"{tuple(state_dict[k].shape)}, model {tuple(model_sd[k].shape)})")
    if missing:
        parts.append(f"{len(missing)} model tensors are not in it (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} of its tensors are not in the model (e.g. {unexpected[0]})")
    raise CheckpointMismatchError(
        f"checkpoint {path!r} holds another model than the one the Exp builds: {'; '.join(parts)}. "
        "Use the Exp (-f / -n) the checkpoint was trained with.",
        state_dict, mismatched, missing, unexpected,
    )


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


def atomic_save(obj, path):
    """torch.save to a temporary file in the same folder, flushed to disk, then renamed over `path`: a crash or a
    kill during the save leaves the previous file (or none), never a truncated one."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; a checkpoint gets the usual file mode
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_checkpoint(state, is_best, save_dir, model_name=""):
    """Write `{model_name}_ckpt.pth` under save_dir, and best_ckpt.pth too when is_best (official names); each
    file is written whole or not at all (atomic_save)."""
    os.makedirs(save_dir, exist_ok=True)
    atomic_save(state, os.path.join(save_dir, model_name + "_ckpt.pth"))
    if is_best:
        atomic_save(state, os.path.join(save_dir, "best_ckpt.pth"))
