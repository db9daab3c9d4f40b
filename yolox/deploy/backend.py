"""The backend interface: one object that runs a detector on a batch of letterboxed images and returns decoded
(B, A, 5 + K) outputs (or, for an export with NMS in its graph, its detections), whichever runtime executes it; and
the choice of the runtime from a weights file."""
import importlib
import os

import numpy as np
import torch
from loguru import logger

from yolox.utils import demo_postprocess, postprocess

from .metadata import DECODED_KEY, outputs_look_decoded
from .onnx_nms import nms_detections

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

    nms: the NMSSettings of an export with NMS in its graph (tools/export_onnx.py --nms), else None. Such a backend
    returns postprocess's list instead (per image None or (n, 7): x1, y1, x2, y2, score, 1.0, class), and its
    postprocess() keeps the file's thresholds: see there.
    """

    name = "backend"
    nms = None  # class defaults: a subclass that does not call __init__ still post-processes as before
    _warned = frozenset()

    def __init__(self, source, input_size=None, batch_size=None, decoded=True, strides=None, num_classes=None,
                 class_names=None, nms=None):
        self.source = str(source)
        self.class_names = None if class_names is None else list(class_names)  # from the file's metadata
        self.input_size = None if input_size is None else (int(input_size[0]), int(input_size[1]))
        self.batch_size = batch_size
        self.decoded = decoded
        self.p6 = bool(strides) and len(strides) == 4
        self.num_classes = num_classes
        self.nms = nms
        self._warned = frozenset()  # the threshold warnings already given (each once per backend)

    # -- what a runtime implements ---------------------------------------------------------------------------
    def to_input(self, images):
        """The images as this runtime takes them: by default a C-contiguous float32 numpy array."""
        if torch.is_tensor(images):
            images = images.detach().cpu().numpy()
        return np.ascontiguousarray(images, dtype=np.float32)

    def run(self, images):
        """Raw runtime outputs (b, A, 5 + K) for one run of images as to_input made them (b = batch_size if set); for
        an NMS export the tuple of its four outputs (num_dets, boxes, scores, classes)."""
        raise NotImplementedError(f"{type(self).__name__} must implement run()")

    # -- shared -----------------------------------------------------------------------------------------------
    def __call__(self, images):
        images = self.to_input(images)
        self._check_images(images)
        n = images.shape[0]
        if self.nms is not None:
            return self._detections(images)
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

    def _detections(self, images):
        """postprocess's list for images, from the four outputs of an NMS export (runs of batch_size joined)."""
        if self.batch_size is None or images.shape[0] == self.batch_size:
            return nms_detections(*self.run(images))
        runs = [(self.run(chunk), count) for chunk, count in self._runs(images)]
        return nms_detections(*(np.concatenate([out[i][:count] for out, count in runs]) for i in range(4)))

    def postprocess(self, outputs, num_classes, conf, nmsthre, class_agnostic=False):
        """yolox.utils.postprocess of this backend's outputs: per image None or (n, 7) x1, y1, x2, y2, obj, cls_conf,
        cls, by decreasing score.

        An NMS export has done it already, with its own thresholds: a higher `conf` is applied here (exact: a box
        above it is suppressed only by boxes above it), while a lower conf, another nmsthre or class_agnostic NMS
        cannot be redone on its outputs, and a warning says once that the file's settings apply.
        """
        if self.nms is None:
            return postprocess(outputs, num_classes, conf, nmsthre, class_agnostic)
        self._warn_settings(conf, nmsthre, class_agnostic)
        baked = self.nms.conf
        if baked is None or conf <= baked:
            return outputs
        kept = [None if d is None else d[d[:, 4] * d[:, 5] >= conf] for d in outputs]
        return [d if d is not None and d.shape[0] else None for d in kept]

    def _warn_settings(self, conf, nmsthre, class_agnostic):
        """Warn once for each setting asked of an NMS export that its graph cannot honour."""
        baked, fix = self.nms, "export it again with --conf / --nms-thre, or without --nms, for other thresholds"
        asked = []
        if baked.conf is not None and conf < baked.conf:
            asked.append(("conf", f"score threshold {conf} is below the {baked.conf} its NMS was exported with "
                                  "(the boxes between are not in its outputs)"))
        if baked.nmsthre is not None and abs(nmsthre - baked.nmsthre) > 1e-9:
            asked.append(("nms", f"NMS threshold {nmsthre} differs from the {baked.nmsthre} it was exported with"))
        if class_agnostic and (self.num_classes or 0) > 1:
            asked.append(("agnostic", "class-agnostic NMS was asked but its graph runs NMS per class"))
        for key, text in asked:
            if key not in self._warned:
                self._warned = self._warned | {key}
                logger.warning(f"{self.source} has NMS in its graph: the {text}; the file's settings apply ({fix})")

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
        nms = "" if self.nms is None else f", NMS in the graph: conf {self.nms.conf}, nms {self.nms.nmsthre}, " \
                                          f"at most {self.nms.max_det} per image"
        return f"{self.name} running {self.source} ({size}, {batch}{nms})"


def _as_tensor(outputs):
    if torch.is_tensor(outputs):
        return outputs
    return torch.from_numpy(np.array(outputs, dtype=np.float32, copy=True))  # owned: decoding writes into it
