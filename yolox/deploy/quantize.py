"""Post-training INT8 quantisation of an exported YOLOX (OpenVINO with NNCF; ONNX Runtime QDQ), calibrated on
images of the user's own dataset, letterboxed exactly as evaluation feeds them (BGR 0-255, ValTransform).

A ~10 AP loss after INT8 calibration usually comes from calibrating on other inputs than inference sees (random
or ImageNet images, RGB 0-1 instead of BGR 0-255): the activation ranges then fit the wrong data. CalibrationImages
reads the Exp's own split through its evaluation factory, so calibration and inference see the same arrays.

The head's 1x1 prediction convolutions (reg / obj / cls: 9 small convolutions, under 1% of the operations)
and everything after them stay in float (HEAD_OUTPUT_SCOPE): their outputs go through exp() (box sizes) and a
sigmoid, where one INT8 step of a logit moves a box or a score by several percent. Measured on the forest val tiles
(yolox-nano trained on datasets/forest, 192 px; AP50:95 / AP50): float32 0.0357 / 0.1347; INT8 MIXED with the head
in float 0.0343 / 0.1307, all INT8 0.0342 / 0.1297 (calibrated on the 7 val tiles; on the 49 train tiles 0.0348 /
0.1302 and 0.0354 / 0.1288): a difference inside the noise of 7 tiles, at no measurable speed cost, so the head
stays float as the safe choice. NNCF does not quantise the decoding of decode_in_inference exports by itself (no
FakeQuantize after the head there either way); the scope covers it anyway in case a preset or version would.

This package imports only yolox.utils; `exp` below is any object with the Exp's factories (duck-typed).
"""
import os
import re

import numpy as np
from loguru import logger

from .backend import DEPLOY_EXTRA, import_runtime
from .openvino_backend import openvino_metadata

__all__ = ["DEFAULT_CALIB", "CALIB_SPLITS", "HEAD_OUTPUT_SCOPE", "CalibrationImages", "calibration_images",
           "check_calib_flags", "quantize_openvino", "quantize_onnx_static",
           "model_input_size", "import_nncf", "float_node_names"]

DEFAULT_CALIB = 300  # NNCF's own default subset size: ranges stop moving well before that on COCO-like data
CALIB_SPLITS = ("val", "train")

# Node-name patterns (regular expressions, matched against the whole name) of the part of the graph that stays in
# float: the head's 1x1 prediction convolutions (named /head/{reg,obj,cls}_preds.<level>/Conv by the ONNX export)
# and every node after them (sigmoid, concatenation, decoding). Nothing after them is a convolution, so the only
# quantisable nodes there are the decoding's Multiply / Add, which NNCF's MIXED preset would otherwise quantise.
HEAD_OUTPUT_SCOPE = (r".*/head/(reg|obj|cls)_preds\.\d+/.*",)


class CalibrationImages:
    """`n` images of a dataset (evenly spread over it, in its order), each as the (1, 3, H, W) float32 array that
    evaluation feeds the model; read one at a time when iterated (300 images at 640 would take 1.5 GB at once)."""

    def __init__(self, dataset, n=DEFAULT_CALIB, source="dataset"):
        n = _check_count(n)
        total = len(dataset)
        if total == 0:
            raise ValueError(f"{source} has no images to calibrate on; point the Exp at a split with images "
                             "(data_dir / val_ann / val_name, or data_yaml) or pass --calib-split train")
        if n > total:
            logger.info(f"--calib {n}: {source} has {total} images; calibrating on all of them")
        self.dataset = dataset
        self.indices = np.unique(np.linspace(0, total - 1, min(n, total)).round().astype(int)).tolist()
        self.source = source

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        img = self.dataset[self.indices[i]][0]  # (img, target, img_info, id): the letterboxed (3, H, W) image
        return np.ascontiguousarray(img, dtype=np.float32)[None]

    def __iter__(self):
        return (self[i] for i in range(len(self)))


def check_calib_flags(int8, calib, calib_split):
    """The calibration flags of an export command line (--int8, --calib, --calib-split), checked before any export:
    the number of images to calibrate on (the default when --calib was not given; 0 without --int8). One-line
    ValueErrors for --calib or --calib-split without --int8 and for a count below 1."""
    if not int8:
        if calib is not None or calib_split != "val":
            raise ValueError("--calib / --calib-split choose the calibration images of --int8: add --int8 (or drop "
                             "them)")
        return 0
    return DEFAULT_CALIB if calib is None else _check_count(calib)


def _check_count(n):
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"--calib {n}: the number of calibration images must be at least 1 (the default is "
                         f"{DEFAULT_CALIB}; a few hundred are enough)")
    return int(n)


def calibration_images(exp, n=DEFAULT_CALIB, split="val", input_size=None):
    """CalibrationImages of the Exp's `split`, letterboxed to input_size (H, W) (default exp.test_size) with the
    Exp's evaluation preprocessing (ValTransform: BGR 0-255, exactly what tools/eval.py and the backends feed).

    split "val" (the default) reads exp.get_eval_dataset(), the one data factory every Exp has (official and VOC
    ones too) and the data the model is judged on; calibration uses no labels, only activation ranges, so the val AP
    stays meaningful. "train" reads the training split (exp.get_split_dataset, this project's Exps) through the same
    preprocessing: more images where the val split is small.
    """
    _check_count(n)
    if split not in CALIB_SPLITS:
        raise ValueError(f"--calib-split {split!r}: expected one of {', '.join(CALIB_SPLITS)}")
    if input_size is not None:
        exp.test_size = (int(input_size[0]), int(input_size[1]))
    eval_set = exp.get_eval_dataset()
    if split == "val":
        dataset = eval_set
    else:
        if not hasattr(exp, "get_split_dataset"):
            raise ValueError(f"--calib-split train: {type(exp).__name__} has no get_split_dataset; calibrate on the "
                             "val split (--calib-split val)")
        dataset = exp.get_split_dataset("train", img_size=exp.test_size, preproc=eval_set.preproc)
    return CalibrationImages(dataset, n, source=f"the Exp's {split} split")


def _input_hw(model, path):
    """(H, W) of an ov.Model's first input; ValueError when they are not static."""
    shape = model.inputs[0].get_partial_shape()
    dims = [d.get_length() if d.is_static else None for d in shape]
    if len(dims) != 4 or dims[2] is None or dims[3] is None:
        raise ValueError(f"{path} has input shape {shape}: quantisation needs a static height and width (export "
                         "with the Exp's test_size)")
    if dims[0] not in (None, 1):
        raise ValueError(f"{path} takes batches of exactly {dims[0]} images, and calibration feeds one image at a "
                         "time: export it with --batch-size 1 or --dynamic (an INT8 model of a free batch runs any "
                         "batch)")
    return dims[2], dims[3]


def model_input_size(path):
    """(H, W) that the ONNX file or IR at path takes (static, as this package exports them)."""
    ov = import_runtime("openvino", "openvino", path)
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model {path} does not exist; export one with tools/export_onnx.py")
    return _input_hw(ov.Core().read_model(path), path)


def _check_image_size(images, hw, path):
    first = images[0]
    if tuple(first.shape[-2:]) != tuple(hw):
        raise ValueError(f"{path} takes {hw[0]}x{hw[1]} inputs but the calibration images are "
                         f"{first.shape[-2]}x{first.shape[-1]}; build them at the model's size "
                         f"(calibration_images(exp, input_size={tuple(hw)}))")


def import_nncf():
    """nncf, or the one-line ValueError saying which extra installs it."""
    try:
        import nncf
    except ImportError:
        raise ValueError(f"INT8 quantisation needs the package nncf, which is not installed: {DEPLOY_EXTRA} (or "
                         "pip install nncf)") from None
    return nncf


def quantize_openvino(xml_or_onnx_path, calibration_images, output_xml, preset="mixed", keep_head_float=True,
                      fast_bias_correction=True, ignored_patterns=()):
    """Write an INT8 OpenVINO IR (output_xml + .bin) of the float model at xml_or_onnx_path; returns output_xml.

    calibration_images: a sized iterable of (1, 3, H, W) float32 letterboxed images (CalibrationImages), all of
    which are used (subset_size = their number); the model takes batch 1 (or a free batch).

    preset "mixed" (default): symmetric weights, asymmetric activations. YOLOX's SiLU outputs are not centred on
    zero (they go down to -0.28 only), so a symmetric activation range (preset "performance") spends half of its
    256 levels on negatives that hardly occur. On the forest tiles "performance" gave AP 0.0387 / 0.0305 (val /
    train calibration) against mixed's 0.0343 / 0.0348: no consistent gain, so mixed.
    keep_head_float: leave HEAD_OUTPUT_SCOPE (the reg / obj / cls prediction convolutions and the decoding) in float
    (see the module doc); ignored_patterns adds node-name regular expressions to leave in float.
    fast_bias_correction: NNCF's default (the full bias correction runs the model once per layer: minutes more).
    The IR keeps the source's yolox_* metadata (decoded outputs, strides, class count and names).
    """
    nncf = import_nncf()
    ov = import_runtime("openvino", "openvino", xml_or_onnx_path)
    path = os.fspath(xml_or_onnx_path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model {path} does not exist; export one with tools/export_onnx.py")
    output_xml = os.fspath(output_xml)
    if not output_xml.lower().endswith(".xml"):
        raise ValueError(f"--output-name {output_xml}: an OpenVINO IR is an .xml file (its weights go beside it "
                         "in a .bin)")
    presets = {"mixed": nncf.QuantizationPreset.MIXED, "performance": nncf.QuantizationPreset.PERFORMANCE}
    if preset not in presets:
        raise ValueError(f"preset {preset!r}: expected one of {', '.join(presets)}")
    if len(calibration_images) == 0:
        raise ValueError("no calibration images: give at least one (--calib N)")
    try:
        model = ov.Core().read_model(path)
    except RuntimeError as e:
        raise ValueError(f"OpenVINO cannot read {path}: {str(e).splitlines()[0]}") from None
    _check_image_size(calibration_images, _input_hw(model, path), path)
    metadata = openvino_metadata(model)

    patterns = list(ignored_patterns) + (list(HEAD_OUTPUT_SCOPE) if keep_head_float else [])
    names = float_node_names(model, patterns) if patterns else []
    if keep_head_float and not names:
        logger.warning(f"{path} has no node named like the head's prediction convolutions (exported elsewhere?): "
                       "the whole network is quantised")
    # names only (no patterns): each is a node of this model, so NNCF's check of the scope holds in every version
    ignored = nncf.IgnoredScope(names=names) if names else None
    dataset = nncf.Dataset(calibration_images)
    logger.info(f"quantising {path} to INT8 on {len(calibration_images)} images (preset {preset}, head outputs "
                f"{'in float' if keep_head_float else 'quantised'})")
    quantized = nncf.quantize(model, dataset, preset=presets[preset], subset_size=len(calibration_images),
                              fast_bias_correction=fast_bias_correction, ignored_scope=ignored)
    for key, value in metadata.items():  # NNCF builds a new model: carry the yolox_* entries over explicitly
        quantized.set_rt_info(value, ["framework", key])
    os.makedirs(os.path.dirname(os.path.abspath(output_xml)), exist_ok=True)
    ov.save_model(quantized, output_xml, compress_to_fp16=False)
    logger.info(f"generated INT8 OpenVINO IR {output_xml} (+ .bin) from {path}")
    return output_xml


def float_node_names(model, patterns):
    """Sorted friendly names of the ov.Model's nodes that match one of `patterns` (regular expressions matched
    against the whole name) and of every node downstream of them (the decoding after the head's predictions, whose
    names are the converter's)."""
    seeds = [op for op in model.get_ops() if any(re.fullmatch(p, op.get_friendly_name()) for p in patterns)]
    names, stack = {op.get_friendly_name() for op in seeds}, list(seeds)
    while stack:
        op = stack.pop()
        for out in op.outputs():
            for target in out.get_target_inputs():
                node = target.get_node()
                if node.get_type_name() != "Result" and node.get_friendly_name() not in names:
                    names.add(node.get_friendly_name())
                    stack.append(node)
    return sorted(names)


def quantize_onnx_static(onnx_path, calibration_images, output_onnx, keep_head_float=True, per_channel=True):
    """Write a QDQ INT8 ONNX file with onnxruntime.quantization (static, MinMax calibration); returns output_onnx.

    The same images and the same float head as quantize_openvino; the yolox_* metadata is copied over. Kept small:
    it exists so that a benchmark can weigh ONNX Runtime's INT8 against OpenVINO's.
    """
    import onnx

    try:
        from onnxruntime import quantization as ortq
    except ImportError:
        raise ValueError(f"{onnx_path} needs onnxruntime for static quantisation: {DEPLOY_EXTRA}") from None
    onnx_path, output_onnx = os.fspath(onnx_path), os.fspath(output_onnx)
    source = onnx.load(onnx_path)
    opset = next((o.version for o in source.opset_import if o.domain in ("", "ai.onnx")), 0)
    float_path = onnx_path
    if per_channel and opset < 13:  # per-channel DequantizeLinear (its axis) needs opset 13; exports default to 11
        from onnx import version_converter

        float_path = os.path.splitext(output_onnx)[0] + ".opset13.onnx"
        onnx.save(version_converter.convert_version(source, 13), float_path)
    input_name = source.graph.input[0].name
    excluded = []
    if keep_head_float:
        heads = {n.name for n in source.graph.node if any(re.fullmatch(p, n.name) for p in HEAD_OUTPUT_SCOPE)}
        excluded = sorted(heads | _onnx_nodes_after(source.graph, heads))

    class Reader(ortq.CalibrationDataReader):
        def __init__(self):
            self.images = iter(calibration_images)

        def get_next(self):
            img = next(self.images, None)
            return None if img is None else {input_name: img}

    try:
        ortq.quantize_static(float_path, output_onnx, Reader(), quant_format=ortq.QuantFormat.QDQ,
                             activation_type=ortq.QuantType.QUInt8, weight_type=ortq.QuantType.QInt8,
                             per_channel=per_channel, nodes_to_exclude=excluded)
    finally:
        if float_path != onnx_path and os.path.exists(float_path):
            os.remove(float_path)
    quantized = onnx.load(output_onnx)
    del quantized.metadata_props[:]
    quantized.metadata_props.extend(source.metadata_props)
    onnx.save(quantized, output_onnx)
    logger.info(f"generated INT8 (QDQ) ONNX model {output_onnx} from {onnx_path}")
    return output_onnx


def _onnx_nodes_after(graph, names):
    """Names of the ONNX nodes downstream of the nodes `names`."""
    consumers = {}
    for node in graph.node:
        for x in node.input:
            consumers.setdefault(x, []).append(node)
    by_name = {n.name: n for n in graph.node}
    seen, stack = set(), [by_name[n] for n in names]
    while stack:
        node = stack.pop()
        for out in node.output:
            for nxt in consumers.get(out, []):
                if nxt.name not in seen:
                    seen.add(nxt.name)
                    stack.append(nxt)
    return seen - set(names)
