"""The backend interface: one object that runs a detector on a batch of letterboxed images and returns decoded
(B, A, 5 + K) outputs, whichever runtime executes it; and the choice of the runtime from a weights file."""
import importlib
import os

import numpy as np
import torch
from loguru import logger

from yolox.utils import demo_postprocess

from .metadata import DECODED_KEY, outputs_look_decoded

__all__ = ["BACKENDS", "InferenceBackend", "backend_for_file", "import_runtime"]

# backend name -> the weight files it reads (a torch checkpoint has any other suffix, .pth usually)
BACKENDS = {"torch": (".pth",), "onnxruntime": (".onnx",), "openvino": (".xml", ".onnx")}
DEPLOY_EXTRA = 'pip install -e ".[deploy]"'


def backend_for_file(path, backend=None):
    """The backend that runs `path`: `backend` if given (checked against the file), else by the file's suffix:
    .onnx -> onnxruntime, .xml (OpenVINO IR) -> openvino, anything else (a .pth checkpoint) -> torch."""
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix == ".bin":
        raise ValueError(f"{path} is the weights half of an OpenVINO IR; give its .xml file instead")
    by_suffix = {".onnx": "onnxruntime", ".xml": "openvino"}.get(suffix, "torch")
    if backend is None:
        return by_suffix
    if backend not in BACKENDS:
        raise ValueError(f"--backend {backend!r} is not one of {', '.join(BACKENDS)}")
    readable = by_suffix == backend or (backend == "openvino" and suffix == ".onnx")
    if not readable:
        raise ValueError(f"--backend {backend} cannot run {path}: it reads {' or '.join(BACKENDS[backend])} files "
                         f"(a {suffix or 'suffix-less'} file runs with --backend {by_suffix})")
    return backend


def import_runtime(module, backend, path):
    """Import an optional runtime, or raise the one-line ValueError saying which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ValueError(f"{path} needs the {backend} backend, and the package {module} is not installed: "
                         f"{DEPLOY_EXTRA} (or pip install {module})") from None


class InferenceBackend:
    """Runs a detector: `backend(images)` with images (B, 3, H, W) float32 (numpy or tensor, letterboxed BGR 0-255
    as ValTransform makes them) returns decoded (B, A, 5 + K) outputs as a torch tensor: cx, cy, w, h in input
    pixels, objectness, class scores.

    input_size: (H, W) the model takes, or None when any size works (PyTorch). batch_size: the one batch size a
    static export takes, or None for any; other batches are cut into runs of that size (one image at a time for a
    batch-1 export, the last run padded). decoded: whether the runtime's outputs are decoded already (None: not
    known from the file, decided on the first outputs); raw outputs are decoded with yolox.utils.demo_postprocess.
    class_names: the names an exported file carries (None when it has none).
    """

    name = "backend"

    def __init__(self, source, input_size=None, batch_size=None, decoded=True, strides=None, num_classes=None,
                 class_names=None):
        self.source = str(source)
        self.class_names = None if class_names is None else list(class_names)  # from the file's metadata
        self.input_size = None if input_size is None else (int(input_size[0]), int(input_size[1]))
        self.batch_size = batch_size
        self.decoded = decoded
        self.p6 = bool(strides) and len(strides) == 4
        self.num_classes = num_classes

    # -- what a runtime implements ---------------------------------------------------------------------------
    def to_input(self, images):
        """The images as this runtime takes them: by default a C-contiguous float32 numpy array."""
        if torch.is_tensor(images):
            images = images.detach().cpu().numpy()
        return np.ascontiguousarray(images, dtype=np.float32)

    def run(self, images):
        """Raw runtime outputs (b, A, 5 + K) for one run of images as to_input made them (b = batch_size if set)."""
        raise NotImplementedError(f"{type(self).__name__} must implement run()")

    # -- shared -----------------------------------------------------------------------------------------------
    def __call__(self, images):
        images = self.to_input(images)
        self._check_images(images)
        n = images.shape[0]
        if self.batch_size is None or n == self.batch_size:
            outputs = _as_tensor(self.run(images))
        else:
            outputs = torch.cat([_as_tensor(self.run(chunk))[:count] for chunk, count in self._runs(images)])
        if self.decoded is None:
            self.decoded = outputs_look_decoded(outputs, images.shape[-2:], self.p6)
            logger.warning(f"{self.source} has no {DECODED_KEY} metadata (not exported by this package); its outputs "
                           f"look {'decoded' if self.decoded else 'raw'}, so they are "
                           f"{'used as they are' if self.decoded else 'decoded with demo_postprocess'}. Re-export it "
                           "with tools/export_onnx.py to record this in the file")
        if not self.decoded:
            outputs = demo_postprocess(outputs, images.shape[-2:], self.p6)  # in place on our own tensor
        return outputs

    def _check_images(self, images):
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"{self.source}: expected images (B, 3, H, W); got shape {tuple(images.shape)}")
        if self.input_size is not None and tuple(images.shape[-2:]) != self.input_size:
            h, w = self.input_size
            raise ValueError(f"{self.source} takes {h}x{w} inputs but got {images.shape[-2]}x{images.shape[-1]}; "
                             f"evaluate or run it at its size (--tsize {h} for a square export, or the Exp's "
                             f"test_size = ({h}, {w})), or export it again at the size you need")

    def _runs(self, images):
        """(chunk of batch_size images, how many are real) pairs; the last chunk is padded with its last image."""
        size = self.batch_size
        for start in range(0, images.shape[0], size):
            chunk = images[start:start + size]
            count = chunk.shape[0]
            if count < size:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], size - count, axis=0)])
            yield chunk, count

    def check_fits(self, test_size, num_classes):
        """ValueError unless this model takes test_size (H, W) inputs and predicts num_classes classes."""
        if self.input_size is not None and tuple(test_size) != self.input_size:
            h, w = self.input_size
            raise ValueError(f"{self.source} takes {h}x{w} inputs but the Exp's test_size is "
                             f"{test_size[0]}x{test_size[1]}; pass --tsize {h} (square exports) or export the model "
                             "again at the Exp's test_size")
        if self.num_classes is not None and self.num_classes != num_classes:
            raise ValueError(f"{self.source} predicts {self.num_classes} classes but the Exp has num_classes = "
                             f"{num_classes}; use the Exp the model was exported from (or set num_classes "
                             f"{self.num_classes})")

    def describe(self):
        size = "any size" if self.input_size is None else f"{self.input_size[0]}x{self.input_size[1]}"
        batch = "any batch" if self.batch_size is None else f"batch {self.batch_size}"
        return f"{self.name} running {self.source} ({size}, {batch})"


def _as_tensor(outputs):
    if torch.is_tensor(outputs):
        return outputs
    return torch.from_numpy(np.array(outputs, dtype=np.float32, copy=True))  # owned: decoding writes into it
