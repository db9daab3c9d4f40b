"""Export a YOLOX model to ONNX or TorchScript, with the head's decoding kept in or left to the deployment side."""
import inspect
import json
import os
import warnings

import torch
from loguru import logger

from yolox.deploy import NMS_MIN_OPSET, NMS_OUTPUTS, NMSDetector, NMSSettings, export_metadata
from yolox.exp import load_exp_weights

__all__ = ["prepare_for_export", "exp_model_for_export", "export_onnx", "simplify_onnx", "set_onnx_metadata",
           "export_torchscript", "TORCHSCRIPT_METADATA"]

TORCHSCRIPT_METADATA = "yolox_metadata.json"  # the extra file of a TorchScript export: {yolox_* key: text}


def prepare_for_export(model, decode_in_inference=False):
    """Eval mode, on the CPU, and the head told whether to decode boxes (False: raw (B, A, 5 + K) outputs, as the
    official export does, decoded by the deployment code; sigmoid is applied either way)."""
    model = model.cpu().eval()
    head = getattr(model, "head", None)
    if head is None or not hasattr(head, "decode_in_inference"):
        raise TypeError(f"{type(model).__name__} has no YOLOX head with `decode_in_inference`; cannot export it")
    head.decode_in_inference = bool(decode_in_inference)
    return model


def exp_model_for_export(exp, ckpt_file, decode_in_inference=False):
    """exp's model with the weights of ckpt_file (weights only; class count checked), prepared for export."""
    model = exp.get_model()
    load_exp_weights(model, ckpt_file, num_classes=exp.num_classes)
    logger.info("loading checkpoint done.")
    return prepare_for_export(model, decode_in_inference)


def export_onnx(model, output_name, input_shape, opset=11, dynamic=False, simplify=True, input_node="images",
                output_node="output", class_names=None, nms=None):
    """Write `model` (prepared) to the ONNX file `output_name` for inputs of `input_shape` (B, 3, H, W).

    Nodes are named input_node and output_node; dynamic=True makes the batch dimension of both free (height and
    width stay those of input_shape). The file is checked with onnx.checker, simplified with onnxsim (or else
    onnxslim) when one is installed and simplify is True, and given the yolox_* metadata (yolox.deploy.metadata)
    that tells the deployment backends whether its outputs are decoded, and its class_names when given.

    nms: an NMSSettings (conf, nmsthre, max_det; max_det None = the anchor count, so nothing is ever cut) to put
    the decoding, score threshold and per-class NMS in the graph (yolox.deploy.onnx_nms); its outputs are then
    NMS_OUTPUTS (num_dets, boxes, scores, classes) instead of output_node, and the model must decode its boxes.
    """
    import onnx

    dummy_input = torch.randn(*input_shape)
    output_names = [output_node]
    if nms is not None:
        model, nms = _with_nms(model, dummy_input, nms, opset)
        output_names = list(NMS_OUTPUTS)
    kwargs = dict(
        input_names=[input_node],
        output_names=output_names,
        dynamic_axes={name: {0: "batch"} for name in [input_node, *output_names]} if dynamic else None,
        opset_version=opset,
    )
    # torch >= 2.9 defaults to the torch.export-based exporter, which needs onnxscript; the TorchScript-based one
    # handles this model and every opset from 11.
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False
    os.makedirs(os.path.dirname(os.path.abspath(output_name)), exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript-based exporter is deprecated upstream
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # level sizes become constants: intended
        torch.onnx.export(model, dummy_input, output_name, **kwargs)
    onnx_model = onnx.load(output_name)
    onnx.checker.check_model(onnx_model)
    logger.info(f"generated onnx model named {output_name}")
    if simplify:
        onnx_model = simplify_onnx(onnx_model, output_name)
    set_onnx_metadata(onnx_model, export_metadata(model, class_names, nms))
    onnx.save(onnx_model, output_name)
    return output_name


def _with_nms(model, dummy_input, nms, opset):
    """(NMSDetector around model, the NMSSettings with max_det resolved) for an export with NMS in its graph."""
    if opset < NMS_MIN_OPSET:
        raise ValueError(f"--opset {opset} is too old for --nms: NonMaxSuppression and ScatterElements need opset "
                         f">= {NMS_MIN_OPSET}; pass -o {NMS_MIN_OPSET} or higher")
    if not model.head.decode_in_inference:
        raise ValueError("NMS in the graph needs decoded boxes: prepare the model with decode_in_inference=True")
    max_det = nms.max_det
    if max_det is None:  # every anchor: the most postprocess can ever keep, so that nothing is cut
        with torch.no_grad():
            max_det = int(model(dummy_input).shape[1])
    nms = NMSSettings(float(nms.conf), float(nms.nmsthre), int(max_det))
    logger.info(f"NMS in the graph: score >= {nms.conf}, per-class IoU > {nms.nmsthre} suppressed, at most "
                f"{nms.max_det} detections per image")
    return NMSDetector(model, nms.conf, nms.nmsthre, nms.max_det).eval(), nms


def simplify_onnx(onnx_model, output_name):
    """The model simplified by onnxsim, or by onnxslim when only that is installed; unchanged without either."""
    try:
        from onnxsim import simplify as onnxsim_simplify
    except ImportError:
        onnxsim_simplify = None
    if onnxsim_simplify is not None:
        model_simp, ok = onnxsim_simplify(onnx_model)
        if not ok:
            raise RuntimeError(f"onnxsim could not validate the simplified {output_name}; rerun with --no-onnxsim")
        logger.info(f"simplified {output_name} with onnxsim")
        return model_simp
    try:
        import onnxslim
    except ImportError:
        logger.info("neither onnxsim nor onnxslim is installed; the ONNX graph is left as exported "
                    "(pip install onnxslim to simplify it)")
        return onnx_model
    slimmed = onnxslim.slim(onnx_model)
    logger.info(f"simplified {output_name} with onnxslim")
    return slimmed


def set_onnx_metadata(onnx_model, values):
    """Set (replace) the metadata_props entries `values` ({key: text}) of an onnx.ModelProto, in place."""
    kept = [(p.key, p.value) for p in onnx_model.metadata_props if p.key not in values]
    del onnx_model.metadata_props[:]
    for key, value in kept + sorted(values.items()):
        entry = onnx_model.metadata_props.add()
        entry.key, entry.value = key, value


def export_torchscript(model, output_name, input_shape, class_names=None):
    """Trace `model` (prepared) on a random input of `input_shape` (B, 3, H, W) and save the TorchScript module.

    The trace fixes the input size: run the saved module on images of that height and width. The yolox_* metadata
    (with class_names when given) goes in the file's extra file TORCHSCRIPT_METADATA (torch.jit.load(_extra_files)).
    """
    dummy_input = torch.randn(*input_shape)
    os.makedirs(os.path.dirname(os.path.abspath(output_name)), exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream but still works
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # level sizes become constants: intended
        # torch's own re-trace check compares graphs, and the head's cached anchor grid makes the second
        # graph differ while computing the same thing; compare the outputs instead.
        mod = torch.jit.trace(model, dummy_input, check_trace=False)
        expected, got = model(dummy_input), mod(dummy_input)
        if not torch.allclose(expected, got, rtol=1e-4, atol=1e-4):
            raise RuntimeError(f"the traced model differs from the model by {(expected - got).abs().max():.3g}")
        extra = {TORCHSCRIPT_METADATA: json.dumps(export_metadata(model, class_names))}
        mod.save(output_name, _extra_files=extra)
    logger.info(f"generated torchscript model named {output_name}")
    return output_name
