"""The OpenVINO backend: an IR (.xml + .bin) or an .onnx file, compiled for the CPU."""
import os

import numpy as np

from .backend import InferenceBackend, import_runtime
from .metadata import METADATA_KEYS, class_names_of, classes_of, parse_metadata, parse_nms_metadata
from .onnx_nms import NMS_OUTPUTS
from .onnxruntime_backend import static_dims

__all__ = ["OpenVINOBackend", "openvino_metadata"]


def openvino_metadata(model):
    """{key: text} of the yolox_* entries that OpenVINO keeps from the ONNX metadata (rt_info "framework")."""
    return {k: model.get_rt_info(["framework", k]).astype(str)
            for k in METADATA_KEYS if model.has_rt_info(["framework", k])}


class OpenVINOBackend(InferenceBackend):
    """Runs `path` with OpenVINO on `device` (CPU).

    precision: the CPU's inference precision, "f32" by default: OpenVINO would otherwise pick bf16 on processors
    that have it, which moves outputs by about 1e-3; "bf16" is faster there. threads > 0 sets its thread count.
    """

    name = "openvino"

    def __init__(self, path, threads=0, device="CPU", precision="f32"):
        path = os.fspath(path)
        ov = import_runtime("openvino", self.name, path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"OpenVINO model {path} does not exist; convert an ONNX export with "
                                    "tools/export_openvino.py")
        core = ov.Core()
        try:
            model = core.read_model(path)
        except RuntimeError as e:
            raise ValueError(f"OpenVINO cannot read {path}: {str(e).splitlines()[0]}") from None
        shape = model.inputs[0].get_partial_shape()
        dims = [d.get_length() if d.is_static else None for d in shape]
        batch, h, w = static_dims(dims, path, "first")
        metadata = openvino_metadata(model)
        decoded, strides, classes = parse_metadata(metadata, path)
        nms = parse_nms_metadata(metadata, path, [_output_name(o) for o in model.outputs])
        channels = model.outputs[0].get_partial_shape()[-1]
        static_channels = channels.get_length() if channels.is_static and nms is None else None
        classes = classes_of(classes, static_channels, path)
        super().__init__(path, (h, w), batch, True if nms is not None else decoded, strides, classes,
                         class_names_of(metadata, path, classes), nms)
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision}
        if threads > 0:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = core.compile_model(model, device, config)
        self.request = self.compiled.create_infer_request()
        self.nms_ports = None if nms is None else _nms_ports(self.compiled.outputs, path)

    def run(self, images):
        self.request.infer({0: images})
        if self.nms_ports is not None:  # num_dets, boxes, scores, classes
            return tuple(np.array(self.request.get_output_tensor(i).data, copy=True) for i in self.nms_ports)
        return np.array(self.request.get_output_tensor(0).data, copy=True)  # the request reuses its buffer


def _nms_ports(outputs, path):
    """The output index of each of an NMS export's outputs, by name (OpenVINO keeps the ONNX tensor names)."""
    names = [_output_name(o) for o in outputs]
    missing = [n for n in NMS_OUTPUTS if n not in names]
    if missing:
        raise ValueError(f"{path} says it has NMS in its graph but has no output named {', '.join(missing)} "
                         f"(outputs: {', '.join(names)}); export it again with tools/export_onnx.py --nms")
    return [names.index(n) for n in NMS_OUTPUTS]


def _output_name(port):
    """The tensor name of an output port ("" when it has none)."""
    names = port.get_names()
    return port.get_any_name() if names else ""
