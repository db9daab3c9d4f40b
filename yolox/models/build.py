"""Published models by name, as the official `yolox.models` builds them for torch.hub: `yolox_s(pretrained=True)`,
`create_yolox_model("yolox-s")`, `yolox_custom(ckpt_path, exp_path)`.

Pretrained weights are the official release's checkpoints, fetched through torch.hub's own download and cache
(`<torch.hub.get_dir()>/checkpoints`); offline, a file already in that folder is used as it is.
"""
import os
import urllib.error

import torch
from loguru import logger

__all__ = [
    "create_yolox_model",
    "yolox_nano",
    "yolox_tiny",
    "yolox_s",
    "yolox_m",
    "yolox_l",
    "yolox_x",
    "yolov3",
    "yolox_custom",
    "PretrainedWeightsUnavailable",
    "pretrained_url",
]

_RELEASE_URL = "https://github.com/Megvii-BaseDetection/YOLOX/releases/download/0.1.1rc0/"
# published model name -> checkpoint file of the official release
_CKPT_FILES = {
    "yolox-nano": "yolox_nano.pth",
    "yolox-tiny": "yolox_tiny.pth",
    "yolox-s": "yolox_s.pth",
    "yolox-m": "yolox_m.pth",
    "yolox-l": "yolox_l.pth",
    "yolox-x": "yolox_x.pth",
    "yolov3": "yolox_darknet.pth",
}
_PRETRAINED_CLASSES = 80  # the published checkpoints are COCO models


class PretrainedWeightsUnavailable(FileNotFoundError):
    """The published checkpoint is neither in torch.hub's cache nor downloadable (offline); the message says where
    to put the file."""


def pretrained_url(name):
    """The download URL of a published model's checkpoint ("yolox-s", "yolox_s", "yolov3", ...)."""
    from yolox.exp.build import canonical_exp_name

    return _RELEASE_URL + _CKPT_FILES[canonical_exp_name(name)]


def _cached_checkpoint(url):
    """Path of `url`'s file in torch.hub's checkpoint cache, downloaded there first when it is missing."""
    folder = os.path.join(torch.hub.get_dir(), "checkpoints")
    path = os.path.join(folder, os.path.basename(url))
    if os.path.isfile(path):
        return path
    os.makedirs(folder, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, path, progress=True)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise PretrainedWeightsUnavailable(
            f"{os.path.basename(url)} is not in torch.hub's cache and could not be downloaded from {url} "
            f"({type(e).__name__}: {e}); put that file into {folder} (or pass pretrained=False)"
        ) from None
    return path


def _resolve_device(device):
    if device is None:
        device = "cuda:0" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def create_yolox_model(name: str, pretrained: bool = True, num_classes: int = 80, device=None,
                       exp_path: str = None, ckpt_path: str = None) -> torch.nn.Module:
    """A YOLOX model by published name ("yolox-nano" ... "yolox-x", "yolov3"; underscores work too), on `device`
    (default cuda:0 when CUDA is available, else cpu), in training mode as nn.Module leaves it.

    pretrained: load the official release's COCO checkpoint (strictly). With num_classes other than 80 the official
    release silently returns random weights; here every tensor that fits is loaded and only the class predictions
    start fresh (a warning lists them), which is what fine-tuning wants.
    name "yolox_custom": the model of the Exp file `exp_path`, with the checkpoint `ckpt_path` when given.
    """
    from yolox.exp import get_exp
    from yolox.exp.build import EXP_NAMES, canonical_exp_name
    from yolox.exp.checkpoint_match import load_exp_weights
    from yolox.utils import load_ckpt, load_checkpoint_file, state_dict_from_checkpoint

    target = _resolve_device(device)
    if name == "yolox_custom":
        if exp_path is None:
            raise ValueError("create_yolox_model('yolox_custom') needs exp_path, the Exp file of the model")
        exp = get_exp(exp_file=exp_path)
        model = exp.get_model()
        if ckpt_path:
            load_exp_weights(model, ckpt_path, num_classes=exp.num_classes)
        return model.to(target)

    try:
        canonical = canonical_exp_name(name)
    except ValueError:
        raise ValueError(f"unknown model name {name!r}; valid names: {', '.join(EXP_NAMES)}, yolox_custom") from None
    exp = get_exp(exp_name=canonical)
    exp.num_classes = num_classes
    model = exp.get_model()
    if pretrained:
        path = _cached_checkpoint(pretrained_url(canonical))
        if num_classes == _PRETRAINED_CLASSES:
            load_exp_weights(model, path, num_classes=num_classes)
        else:
            logger.warning(f"{canonical} with num_classes={num_classes}: the class predictions of the 80-class "
                           "checkpoint do not fit and start from random weights")
            load_ckpt(model, state_dict_from_checkpoint(load_checkpoint_file(path), path))
    return model.to(target)


def yolox_nano(pretrained: bool = True, num_classes: int = 80, device: str = None) -> torch.nn.Module:
    return create_yolox_model("yolox-nano", pretrained, num_classes, device)


def yolox_tiny(pretrained: bool = True, num_classes: int = 80, device: str = None) -> torch.nn.Module:
    return create_yolox_model("yolox-tiny", pretrained, num_classes, device)


def yolox_s(pretrained: bool = True, num_classes: int = 80, device: str = None) -> torch.nn.Module:
    return create_yolox_model("yolox-s", pretrained, num_classes, device)


def yolox_m(pretrained: bool = True, num_classes: int = 80, device: str = None) -> torch.nn.Module:
    return create_yolox_model("yolox-m", pretrained, num_classes, device)


def yolox_l(pretrained: bool = True, num_classes: int = 80, device: str = None) -> torch.nn.Module:
    return create_yolox_model("yolox-l", pretrained, num_classes, device)


def yolox_x(pretrained: bool = True, num_classes: int = 80, device: str = None) -> torch.nn.Module:
    return create_yolox_model("yolox-x", pretrained, num_classes, device)


def yolov3(pretrained: bool = True, num_classes: int = 80, device: str = None) -> torch.nn.Module:
    return create_yolox_model("yolov3", pretrained, num_classes, device)


def yolox_custom(ckpt_path: str = None, exp_path: str = None, device: str = None) -> torch.nn.Module:
    """The model of your own Exp file, with your checkpoint: yolox_custom(ckpt_path="best_ckpt.pth", exp_path=...)."""
    return create_yolox_model("yolox_custom", ckpt_path=ckpt_path, exp_path=exp_path, device=device)
