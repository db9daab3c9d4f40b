"""Running a detector for deployment: one interface (InferenceBackend) over PyTorch, ONNX Runtime and OpenVINO.

    backend = OnnxRuntimeBackend("yolox_s.onnx")        # or OpenVINOBackend("yolox_s.xml"), TorchBackend(model)
    outputs = backend(images)                           # (B, 3, H, W) float32 -> decoded (B, A, 5 + K) tensor
    detections = backend.postprocess(outputs, num_classes, conf, nms)  # yolox.utils.postprocess's list

An export with NMS in its graph (tools/export_onnx.py --nms) is recognised from its metadata: backend(images) returns
its detections as that list already, and backend.postprocess keeps the file's thresholds (see there).

onnxruntime and openvino are optional: pip install -e ".[deploy]". This package imports only yolox.utils (and,
through demo_postprocess, yolox.models); the evaluators and apps build on it.
"""
from .backend import BACKENDS, InferenceBackend, backend_for_file, import_runtime
from .metadata import DECODED_KEY, NMS_KEY, NUM_CLASSES_KEY, STRIDES_KEY, export_metadata, outputs_look_decoded
from .onnx_nms import NMS_MIN_OPSET, NMS_OUTPUTS, NMSDetector, NMSSettings, nms_detections
from .onnxruntime_backend import OnnxRuntimeBackend
from .openvino_backend import OpenVINOBackend
from .openvino_export import export_openvino
from .torch_backend import TorchBackend

__all__ = ["BACKENDS", "InferenceBackend", "backend_for_file", "import_runtime", "DECODED_KEY", "NMS_KEY",
           "NUM_CLASSES_KEY", "STRIDES_KEY", "export_metadata", "outputs_look_decoded", "NMS_MIN_OPSET", "NMS_OUTPUTS",
           "NMSDetector", "NMSSettings", "nms_detections", "OnnxRuntimeBackend", "OpenVINOBackend", "export_openvino",
           "TorchBackend", "open_backend"]


def open_backend(path, backend=None, threads=0):
    """The ONNX Runtime or OpenVINO backend for an exported file (chosen by suffix or `backend`). A PyTorch
    checkpoint needs its Exp to build the model: yolox.apps.predictor.load_backend does that."""
    name = backend_for_file(path, backend)
    if name == "onnxruntime":
        return OnnxRuntimeBackend(path, threads=threads)
    if name == "openvino":
        return OpenVINOBackend(path, threads=threads)
    raise ValueError(f"{path} is a PyTorch checkpoint: build its model from the Exp (yolox.apps.predictor."
                     "load_backend(exp, path)) and wrap it in TorchBackend")
