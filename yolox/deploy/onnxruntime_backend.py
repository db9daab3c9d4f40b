"""The ONNX Runtime backend: an exported .onnx file on the CPU execution provider."""
import os

from .backend import InferenceBackend, import_runtime
from .metadata import class_names_of, classes_of, parse_metadata, parse_nms_metadata
from .onnx_nms import NMS_OUTPUTS

__all__ = ["OnnxRuntimeBackend", "static_dims"]


def static_dims(shape, source, what):
    """(batch or None when dynamic, H, W) of an NCHW input shape whose entries are ints, or names / None when free."""
    if len(shape) != 4:
        raise ValueError(f"{source}: the {what} input has shape {shape}; expected (batch, 3, height, width)")
    batch, _, h, w = (d if isinstance(d, int) and d > 0 else None for d in shape)
    if h is None or w is None:
        raise ValueError(f"{source}: the {what} input has a free height or width {shape}; export it with a fixed "
                         "size (tools/export_onnx.py uses the Exp's test_size)")
    return batch, h, w


class OnnxRuntimeBackend(InferenceBackend):
    """Runs `path` (.onnx) with onnxruntime; threads > 0 sets its intra-op thread count (0: its default).

    spin: let onnxruntime's idle threads spin after each run (its default). Off here: on a small CPU the spinning
    threads take the cores from the postprocessing that follows in this process (10x slower on 2 cores), for a
    forward pass that they make only slightly faster.
    """

    name = "onnxruntime"

    def __init__(self, path, threads=0, spin=False):
        path = os.fspath(path)
        ort = import_runtime("onnxruntime", self.name, path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"ONNX model {path} does not exist; export one with tools/export_onnx.py")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads > 0:
            options.intra_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        try:
            self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for unreadable files
            raise ValueError(f"onnxruntime cannot load {path}: {str(e).splitlines()[0]}") from None
        inp, out = self.session.get_inputs()[0], self.session.get_outputs()[0]
        batch, h, w = static_dims(list(inp.shape), path, f"'{inp.name}'")
        metadata = self.session.get_modelmeta().custom_metadata_map
        decoded, strides, classes = parse_metadata(metadata, path)
        nms = parse_nms_metadata(metadata, path, [o.name for o in self.session.get_outputs()])
        channels = out.shape[-1] if out.shape and nms is None else None  # an int, or a name / None when symbolic
        classes = classes_of(classes, channels, path)
        super().__init__(path, (h, w), batch, True if nms is not None else decoded, strides, classes,
                         class_names_of(metadata, path, classes), nms)
        self.input_name, self.output_name = inp.name, out.name

    def run(self, images):
        if self.nms is not None:  # num_dets, boxes, scores, classes
            return tuple(self.session.run(list(NMS_OUTPUTS), {self.input_name: images}))
        return self.session.run([self.output_name], {self.input_name: images})[0]
