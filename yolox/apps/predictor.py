"""Single-image prediction: letterbox, forward, score threshold and NMS, boxes back in original pixels, drawing."""
import os

import cv2
import numpy as np
import torch

from yolox.data import ValTransform
from yolox.utils import postprocess, vis

__all__ = ["Predictor", "resolve_device"]


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


class Predictor:
    """Runs a YOLOX model (eval mode) on images given as paths or BGR arrays.

    device "cpu" or "gpu"; fp16 only on a GPU (model and inputs in half precision); legacy = the old
    normalised preprocessing of early published weights.
    """

    def __init__(self, model, exp, cls_names=None, trt_file=None, decoder=None, device="cpu", fp16=False,
                 legacy=False):
        if trt_file is not None:
            raise NotImplementedError("TensorRT inference is not part of this release; export to ONNX instead")
        self.device = resolve_device(device)
        if fp16 and self.device.type != "cuda":
            raise ValueError("--fp16 needs a GPU (--device gpu); half precision is not supported on the CPU here")
        self.model = model.to(self.device).eval()
        self.fp16 = fp16
        if fp16:
            self.model = self.model.half()
        self.cls_names = list(cls_names) if cls_names is not None else [str(i) for i in range(exp.num_classes)]
        self.decoder = decoder
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
        tensor = torch.from_numpy(np.ascontiguousarray(chw)).unsqueeze(0).float().to(self.device)
        if self.fp16:
            tensor = tensor.half()
        with torch.no_grad():
            outputs = self.model(tensor)  # (1, A, 5 + K)
            if self.decoder is not None:
                outputs = self.decoder(outputs, dtype=outputs.type())
            outputs = postprocess(outputs.float(), self.num_classes, self.confthre, self.nmsthre, class_agnostic=True)
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
