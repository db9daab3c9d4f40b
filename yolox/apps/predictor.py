"""Prediction on images: letterbox, forward through a backend (PyTorch, ONNX Runtime or OpenVINO), score
threshold and NMS, boxes back in original pixels, drawing; and the backend of a weights file."""
import os

import cv2
import numpy as np
import torch
from loguru import logger

from yolox.data import ValTransform
from yolox.deploy import InferenceBackend, OnnxRuntimeBackend, OpenVINOBackend, TorchBackend, backend_for_file
from yolox.exp import load_exp_weights
from yolox.utils import fuse_model, vis

__all__ = ["Predictor", "resolve_device", "load_backend"]


def resolve_device(device):
    """"cpu" / "gpu" / "cuda" / "cuda:1" / torch.device -> torch.device; "gpu" without CUDA is a user error."""
    if isinstance(device, torch.device):
        return device
    name = str(device).lower()
    if name == "gpu":
        name = "cuda"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device} asks for a GPU but CUDA is not available here; use --device cpu")
    return torch.device(name)


def load_backend(exp, ckpt_file, backend=None, device="cpu", fuse=False, fp16=False, threads=0):
    """The InferenceBackend for a weights file, checked against the Exp (input size and class count).

    backend: "torch", "onnxruntime" or "openvino"; None picks it from the file (.onnx -> ONNX Runtime, .xml ->
    OpenVINO, else a PyTorch checkpoint of exp's model). device, fuse and fp16 apply to PyTorch: with an exported
    model --fuse is a no-op (the runtimes fold BatchNorm into the convolutions themselves), and --fp16 or a GPU
    device is an error. threads: ONNX Runtime / OpenVINO threads (0: their default).
    """
    name = backend_for_file(ckpt_file, backend)
    if name == "torch":
        device = resolve_device(device)
        if fp16 and device.type != "cuda":
            raise ValueError("--fp16 needs a GPU (--device gpu); half precision is not supported on the CPU here")
        model = exp.get_model()
        load_exp_weights(model, ckpt_file, num_classes=exp.num_classes)
        model = model.to(device).eval()
        if fuse:
            logger.info("\tFusing model...")
            model = fuse_model(model)
        return TorchBackend(model.half() if fp16 else model, source=str(ckpt_file))
    if fp16:
        raise ValueError(f"--fp16 applies to PyTorch checkpoints; {ckpt_file} runs in {name} in float32: drop --fp16")
    if resolve_device(device).type != "cpu":
        raise ValueError(f"{ckpt_file} runs in {name} on the CPU here; use --device cpu (or a .pth for the GPU)")
    if fuse:
        logger.info(f"--fuse is a no-op for {ckpt_file}: {name} folds BatchNorm into the convolutions itself")
    runtime = OnnxRuntimeBackend(ckpt_file, threads) if name == "onnxruntime" else OpenVINOBackend(ckpt_file, threads)
    runtime.check_fits(exp.test_size, exp.num_classes)
    logger.info(f"{runtime.describe()}")
    return runtime


class Predictor:
    """Runs a YOLOX detector on images given as paths or BGR arrays.

    model: an nn.Module (eval mode; moved to `device`, in half precision with fp16) or any InferenceBackend
    (load_backend: PyTorch, ONNX Runtime, OpenVINO). device "cpu" or "gpu"; fp16 only on a GPU; legacy = the old
    normalised preprocessing of early published weights. decoder: the official hook for a model returning raw
    outputs (decoder(outputs, dtype)); raw outputs of a backend are decoded by the backend itself.
    """

    def __init__(self, model, exp, cls_names=None, trt_file=None, decoder=None, device="cpu", fp16=False,
                 legacy=False):
        if trt_file is not None:
            raise NotImplementedError("TensorRT inference is not part of this release; export to ONNX instead")
        if isinstance(model, InferenceBackend):
            self.backend, self.model = model, getattr(model, "model", None)
            self.device = getattr(model, "device", torch.device("cpu"))
            self.fp16 = getattr(model, "dtype", torch.float32) == torch.float16
        else:
            self.device = resolve_device(device)
            if fp16 and self.device.type != "cuda":
                raise ValueError("--fp16 needs a GPU (--device gpu); half precision is not supported on the CPU here")
            self.model = model.to(self.device).eval()
            self.fp16 = fp16
            if fp16:
                self.model = self.model.half()
            self.backend = TorchBackend(self.model)
        self.cls_names = list(cls_names) if cls_names is not None else [str(i) for i in range(exp.num_classes)]
        self.decoder = decoder
        if decoder is not None and self.backend.nms is not None:
            raise ValueError(f"{self.backend.source} has NMS in its graph and returns detections: drop the decoder")
        if decoder is not None:  # the official hook: the model returns raw outputs and `decoder` decodes them
            self.backend.decoded = True
        self.num_classes = exp.num_classes
        self.confthre = exp.test_conf
        self.nmsthre = exp.nmsthre
        self.test_size = exp.test_size
        self.preproc = ValTransform(legacy=legacy)

    def inference(self, img):
        """(outputs, img_info): outputs is postprocess's list for this one image ((n, 7) tensor or None) at the
        network input scale; img_info has id, file_name, height, width, raw_img and ratio (input / original)."""
        img_info = {"id": 0}
        if isinstance(img, (str, os.PathLike)):
            path = os.fspath(img)
            img_info["file_name"] = os.path.basename(path)
            img = cv2.imread(path)
            if img is None:
                raise ValueError(f"cannot read image {path!r}: missing, or not an image format OpenCV reads")
        else:
            img_info["file_name"] = None
        height, width = img.shape[:2]
        img_info.update(height=height, width=width, raw_img=img)
        img_info["ratio"] = min(self.test_size[0] / height, self.test_size[1] / width)

        chw, _ = self.preproc(img, None, self.test_size)  # (3, H, W) float, letterboxed
        batch = np.ascontiguousarray(chw, dtype=np.float32)[None]  # (1, 3, H, W)
        with torch.no_grad():
            outputs = self.backend(batch)  # (1, A, 5 + K) decoded (an NMS export: its detections already)
            if self.decoder is not None:
                outputs = self.decoder(outputs, dtype=outputs.type())
            if torch.is_tensor(outputs):
                outputs = outputs.float()
            # class-agnostic NMS as the official demo, except for an export whose graph ran NMS per class already
            agnostic = getattr(self.backend, "nms", None) is None
            outputs = self.backend.postprocess(outputs, self.num_classes, self.confthre, self.nmsthre,
                                               class_agnostic=agnostic)
        return outputs, img_info

    def detections(self, output, img_info):
        """(boxes (n, 4) x1y1x2y2 in original pixels, scores (n,), class ids (n,)) as numpy; empty when None."""
        if output is None:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
        output = output.float().cpu()
        boxes = (output[:, 0:4] / img_info["ratio"]).numpy()
        return boxes, (output[:, 4] * output[:, 5]).numpy(), output[:, 6].long().numpy()

    def visual(self, output, img_info, cls_conf=0.35):
        """A copy of the original image with the boxes whose score is at least cls_conf drawn on it."""
        img = img_info["raw_img"].copy()
        if output is None:
            return img
        boxes, scores, cls_ids = self.detections(output, img_info)
        return vis(img, boxes, scores, cls_ids, cls_conf, self.cls_names)
