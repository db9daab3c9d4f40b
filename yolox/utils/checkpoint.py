"""Reading and writing checkpoints in the official `{"model": state_dict, ...}` format, weights only (no pickled code)."""
import os
import pickle
import re
import tempfile
import zipfile

import torch
from loguru import logger

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "CheckpointSaveError",
    "atomic_save",
    "other_checkpoints",
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


class CheckpointSaveError(CheckpointError):
    """A checkpoint could not be written (a full disk, an I/O error, no permission): the previous file is kept."""


def load_checkpoint_file(path, map_location="cpu"):
    """Load `path` with torch.load(weights_only=True): tensors and plain containers only, never arbitrary code.

    A file that cannot be read (empty, truncated, damaged, not a torch file) is a CheckpointError of one line naming
    it, what is wrong and the other readable checkpoints of its folder."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint file {path!r} does not exist; pass the path of a .pth file with -c/--ckpt")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # a whole torch file (zip, or a legacy pickle) that weights-only loading refused, as against a damaged one
        # or one that is no torch file at all (torch words all three "Weights only load failed")
        if not zipfile.is_zipfile(path) and not _looks_like_pickle(path):
            raise CheckpointError(f"checkpoint {path!r} {_what_is_wrong(path, e)}; {_instead(path)}") from e
        raise CheckpointError(
            f"checkpoint {path!r} holds Python objects other than tensors and plain containers, so it was not "
            f"loaded (unpickling them could run code). Re-save it from a trusted session as "
            f"torch.save({{'model': model.state_dict()}}, path). Detail: {_first_line(e)}"
        ) from e
    except (MemoryError, torch.cuda.OutOfMemoryError):  # no fault of the file (a full GPU under map_location)
        raise
    except Exception as e:  # noqa: BLE001 - torch.load fails on a damaged file with many types (KeyError, EOFError)
        raise CheckpointError(f"checkpoint {path!r} {_what_is_wrong(path, e)}; {_instead(path)}") from e


def _first_line(error):
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _looks_like_pickle(path):
    with open(path, "rb") as f:
        return f.read(1) == b"\x80"  # the PROTO opcode that every binary pickle starts with


def _what_is_wrong(path, error):
    """'is empty', 'is truncated or damaged (N bytes)', 'is not a PyTorch checkpoint (...)': what went wrong."""
    size = os.path.getsize(path)
    if size == 0:
        return "is empty (0 bytes), e.g. written by a save that failed"
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK"):  # a zip file, as torch.save writes
        if not zipfile.is_zipfile(path):
            return f"is truncated ({size} bytes, its zip directory is missing), e.g. cut short by a full disk or copy"
        reason = re.sub(r"\. This is an internal miniz error.*", "", _first_line(error))
        return f"is damaged ({size} bytes; {reason})"
    if head.startswith(b"\x80"):
        return f"is truncated or damaged ({size} bytes of an old-format torch file; {_first_line(error)})"
    return f"is not a PyTorch checkpoint ({size} bytes beginning with {head!r})"


def other_checkpoints(path):
    """The names of the other readable checkpoints (a whole zip file; the run's usual names first) in the folder of
    `path`, e.g. ["latest_ckpt.pth", "last_epoch_ckpt.pth", "last_mosaic_epoch_ckpt.pth"]."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        names = [n for n in os.listdir(folder) if n.endswith(".pth") and not n.startswith(".")]
    except OSError:
        return []
    names = [n for n in names if os.path.join(folder, n) != os.path.abspath(path)
             and zipfile.is_zipfile(os.path.join(folder, n))]
    usual = ["latest_ckpt.pth", "last_epoch_ckpt.pth", "last_mosaic_epoch_ckpt.pth", "best_ckpt.pth"]

    def order(name):
        m = re.fullmatch(r"epoch_(\d+)_ckpt\.pth", name)
        if name in usual:
            return (0, usual.index(name), "")
        return (1, -int(m.group(1)), "") if m else (2, 0, name)

    return sorted(names, key=order)


def _instead(path):
    """What to use instead of the unreadable `path`: the other readable checkpoints of its folder."""
    folder = os.path.dirname(os.path.abspath(path))
    others = other_checkpoints(path)
    if others:
        return f"use another checkpoint of {folder} (give it with -c): {', '.join(others)}"
    return f"{folder} holds no other readable checkpoint: train without --resume/-c to start afresh, or give another"


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


def atomic_save(obj, path, wrap=None):
    """torch.save to a temporary file in the same folder, flushed to disk, then renamed over `path`: a crash or a
    kill during the save leaves the previous file (or none), never a truncated one; any failure (a full disk in
    the middle of torch.save, the flush, the fsync) removes the temporary file and raises the error.

    wrap: a function of the open temporary file returning the file object torch.save writes to (fault injection
    wraps it in one that fails)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:  # owns fd from here: closed on every path
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; a checkpoint gets the usual mode
            target = _KeepWriteError(wrap(f) if wrap is not None else f)
            try:
                torch.save(obj, target)
            except Exception as e:
                if target.error is not None:  # the disk's own error, not torch's "unexpected pos" that hides it
                    raise target.error from e
                raise
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass  # already gone, or the folder itself went away
        raise
    _fsync_folder(folder)


class _KeepWriteError:
    """The file torch.save writes to, keeping the OSError of a failed write: torch's writer turns it into a
    RuntimeError ("[enforce fail at inline_container.cc] unexpected pos ...") that no longer says the disk is full."""

    def __init__(self, file):
        self._file = file
        self.error = None

    def write(self, data):
        try:
            return self._file.write(data)
        except OSError as e:
            self.error = e
            raise

    def __getattr__(self, name):
        return getattr(self._file, name)


def _fsync_folder(folder):
    """Make the rename itself durable (where the platform allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
