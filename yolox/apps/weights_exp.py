"""The Exp and the class names for a weights file: from -f / -n as officially, else from what the file says about
itself (a checkpoint written by tools/train.py, or an ONNX / OpenVINO export with yolox_* metadata)."""
import os

from loguru import logger

from yolox.apps.class_names import class_names_for_exp
from yolox.deploy import backend_for_file, open_backend
from yolox.exp import Exp, exp_from_checkpoint, get_exp
from yolox.utils import load_checkpoint_file

__all__ = ["exp_for_weights", "exp_from_export", "checkpoint_class_names", "class_names_for_weights"]

NO_EXP = ("pass the Exp with -f <exp file> or -n <model name>, or a checkpoint written by tools/train.py with -c "
          "(it describes its model)")


def _read_checkpoint(path):
    """The checkpoint at path, memory-mapped where the file allows (its tensors are not read until used)."""
    import torch

    try:
        return torch.load(os.fspath(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - legacy or unreadable files: the ordinary loader says what is wrong
        return load_checkpoint_file(path)


def exp_from_export(path, backend=None):
    """A plain Exp with an exported file's input size, class count and class names (enough for the demo), and the
    thresholds of an export with NMS in its graph."""
    runtime = open_backend(path, backend)
    if runtime.num_classes is None:
        raise ValueError(f"{path} does not say how many classes it predicts (exported elsewhere?): {NO_EXP}")
    exp = Exp()
    exp.exp_name = os.path.splitext(os.path.basename(os.fspath(path)))[0]
    exp.num_classes = runtime.num_classes
    exp.test_size = runtime.input_size
    exp.class_names = runtime.class_names
    nms = runtime.nms  # an export with NMS in its graph: its thresholds are the ones that hold
    if nms is not None and nms.conf is not None:
        exp.test_conf, exp.nmsthre = nms.conf, nms.nmsthre
    return exp


def exp_for_weights(exp_file, exp_name, weights, backend=None):
    """The Exp of -f / -n when either is given (official weights keep working); else the one `weights` describes:
    a checkpoint of this trainer (yolox.exp.exp_from_checkpoint) or an exported file. ValueError, one line, when
    there is nothing to build it from."""
    if exp_file is not None or exp_name is not None:
        return get_exp(exp_file, exp_name)
    if weights is None:
        raise ValueError(f"no Exp and no weights given: {NO_EXP}")
    if backend_for_file(weights, backend) == "torch":
        logger.info(f"building the Exp that {weights} describes (no -f / -n given)")
        return exp_from_checkpoint(_read_checkpoint(weights) if os.path.isfile(weights) else weights, weights)
    return exp_from_export(weights, backend)


def checkpoint_class_names(path):
    """The "class_names" a checkpoint of this trainer carries, or None (an official file, or no such file)."""
    if path is None or not os.path.isfile(path):
        return None
    ckpt = _read_checkpoint(path)
    names = ckpt.get("class_names") if isinstance(ckpt, dict) else None
    return [str(n) for n in names] if names else None


def class_names_for_weights(exp, path, runtime=None, backend=None):
    """The names to label boxes with: those the weights carry (an export's metadata via `runtime`, a checkpoint's
    "class_names") when there are num_classes of them, else class_names_for_exp(exp)."""
    names = getattr(runtime, "class_names", None)
    if not names and path is not None and backend_for_file(path, backend) == "torch":
        names = checkpoint_class_names(path)
    if names and len(names) == int(exp.num_classes):
        return list(names)
    if names:
        logger.warning(f"{path} names {len(names)} classes but the Exp has num_classes = {exp.num_classes}; "
                       "labelling boxes with the Exp's class names")
    return class_names_for_exp(exp)
