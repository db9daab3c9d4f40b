"""ONNX -> OpenVINO IR with OpenVINO's own converter, keeping the yolox_* metadata of the ONNX file."""
import os

from loguru import logger

from .backend import import_runtime
from .openvino_backend import openvino_metadata

__all__ = ["export_openvino"]


def export_openvino(onnx_path, output_name=None, compress_to_fp16=False):
    """Write the IR (output_name .xml and its .bin; default: onnx_path with .xml) and return the .xml path.

    compress_to_fp16: store the weights in half precision (half the size; outputs move by about 1e-3). Off by
    default, unlike openvino.save_model, so that the IR computes what the ONNX file does.
    """
    onnx_path = os.fspath(onnx_path)
    ov = import_runtime("openvino", "openvino", onnx_path)
    if not os.path.isfile(onnx_path):
        raise FileNotFoundError(f"ONNX model {onnx_path} does not exist; export one with tools/export_onnx.py")
    output_name = output_name or os.path.splitext(onnx_path)[0] + ".xml"
    if not output_name.lower().endswith(".xml"):
        raise ValueError(f"--output-name {output_name}: an OpenVINO IR is an .xml file (its weights go beside it "
                         "in a .bin)")
    try:
        model = ov.convert_model(onnx_path)
    except Exception as e:  # the converter raises its own error types
        raise ValueError(f"OpenVINO cannot convert {onnx_path}: {str(e).splitlines()[0]}") from None
    metadata = openvino_metadata(model)
    if not metadata:
        logger.warning(f"{onnx_path} has no yolox_* metadata (not exported by this package); the IR's outputs "
                       "will be checked for decoded boxes when it runs")
    os.makedirs(os.path.dirname(os.path.abspath(output_name)), exist_ok=True)
    ov.save_model(model, output_name, compress_to_fp16=compress_to_fp16)
    logger.info(f"generated OpenVINO IR {output_name} (+ .bin) from {onnx_path}")
    return output_name
