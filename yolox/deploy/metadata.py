"""What an exported file says about its outputs: the metadata written at export, and the check used without it.

ONNX files exported by this package carry, in their metadata_props (OpenVINO keeps them as rt_info "framework"):
  yolox_decoded      "1": boxes are cx, cy, w, h in input pixels (--decode_in_inference); "0": raw head outputs
  yolox_strides      "8,16,32" (or "8,16,32,64"): the strides that decode raw outputs
  yolox_num_classes  the number of class columns after the objectness
  yolox_class_names  the class names in class-index order, a JSON list of strings (the demo labels boxes with them)
An export with NMS in its graph (tools/export_onnx.py --nms; outputs num_dets, boxes, scores, classes) adds:
  yolox_nms          "1"
  yolox_test_conf    the score threshold baked in (candidates have objectness x class score >= it)
  yolox_nmsthre      the IoU threshold of its per-class NMS
  yolox_max_det      the most detections it returns per image (the width M of its outputs)
Files without them (an official export, another tool) are checked on their first outputs: see outputs_look_decoded.
"""
import json

import torch

from yolox.utils import demo_postprocess

from .onnx_nms import NMS_OUTPUTS, NMSSettings

__all__ = ["DECODED_KEY", "STRIDES_KEY", "NUM_CLASSES_KEY", "CLASS_NAMES_KEY", "NMS_KEY", "TEST_CONF_KEY",
           "NMSTHRE_KEY", "MAX_DET_KEY", "METADATA_KEYS", "export_metadata", "parse_metadata", "parse_nms_metadata",
           "class_names_of", "classes_of", "outputs_look_decoded"]

DECODED_KEY = "yolox_decoded"
STRIDES_KEY = "yolox_strides"
NUM_CLASSES_KEY = "yolox_num_classes"
CLASS_NAMES_KEY = "yolox_class_names"
NMS_KEY = "yolox_nms"
TEST_CONF_KEY = "yolox_test_conf"
NMSTHRE_KEY = "yolox_nmsthre"
MAX_DET_KEY = "yolox_max_det"
METADATA_KEYS = (DECODED_KEY, STRIDES_KEY, NUM_CLASSES_KEY, CLASS_NAMES_KEY, NMS_KEY, TEST_CONF_KEY, NMSTHRE_KEY,
                 MAX_DET_KEY)


def export_metadata(model, class_names=None, nms=None):
    """{key: text} describing the outputs of `model` (a YOLOX prepared for export) as it will be exported, and its
    class names when given (one per class); nms: the NMSSettings of an export with NMS in its graph."""
    head = model.head
    values = {
        DECODED_KEY: "1" if head.decode_in_inference else "0",
        STRIDES_KEY: ",".join(str(int(s)) for s in head.strides),
        NUM_CLASSES_KEY: str(int(head.num_classes)),
    }
    if class_names is not None:
        if len(class_names) != int(head.num_classes):
            raise ValueError(f"{len(class_names)} class names for a model of {int(head.num_classes)} classes; "
                             "give one name per class")
        values[CLASS_NAMES_KEY] = json.dumps([str(n) for n in class_names])
    if nms is not None:
        values.update({NMS_KEY: "1", TEST_CONF_KEY: repr(float(nms.conf)), NMSTHRE_KEY: repr(float(nms.nmsthre)),
                       MAX_DET_KEY: str(int(nms.max_det))})
    return values


def class_names_of(values, source, num_classes=None):
    """The class names in a file's {key: text} metadata (a list of strings), or None when it has none."""
    text = values.get(CLASS_NAMES_KEY)
    if not text:
        return None
    try:
        names = json.loads(text)
    except ValueError:
        names = None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{source}: metadata {CLASS_NAMES_KEY}={text[:60]!r} is not a JSON list of strings; "
                         "re-export the model")
    if num_classes is not None and len(names) != num_classes:
        raise ValueError(f"{source}: metadata {CLASS_NAMES_KEY} has {len(names)} names for {num_classes} classes; "
                         "re-export the model")
    return names


def parse_metadata(values, source):
    """(decoded True / False / None when unknown, strides tuple or None, num_classes int or None) from the
    {key: text} of a file."""
    decoded = values.get(DECODED_KEY)
    if decoded not in (None, "0", "1"):
        raise ValueError(f"{source}: metadata {DECODED_KEY}={decoded!r}; expected '0' (raw) or '1' (decoded)")
    strides = values.get(STRIDES_KEY)
    try:
        strides = tuple(int(s) for s in strides.split(",")) if strides else None
    except ValueError:
        raise ValueError(f"{source}: metadata {STRIDES_KEY}={strides!r}; expected comma-separated integers") from None
    num_classes = values.get(NUM_CLASSES_KEY)
    try:
        num_classes = int(num_classes) if num_classes else None
    except ValueError:
        raise ValueError(f"{source}: metadata {NUM_CLASSES_KEY}={num_classes!r}; expected an integer") from None
    return (None if decoded is None else decoded == "1"), strides, num_classes


def parse_nms_metadata(values, source, output_names=()):
    """The NMSSettings of a file whose graph ends in NMS, or None for a file of (B, A, 5 + K) outputs.

    The metadata says it (yolox_nms "1"); a file without it whose outputs are named num_dets, boxes, scores, classes
    is taken for one too, with unknown thresholds.
    """
    flag = values.get(NMS_KEY)
    if flag not in (None, "0", "1"):
        raise ValueError(f"{source}: metadata {NMS_KEY}={flag!r}; expected '1' (NMS in the graph) or '0'")
    if flag is None:
        return NMSSettings() if tuple(output_names) == NMS_OUTPUTS else None
    if flag == "0":
        return None
    return NMSSettings(_number(values, TEST_CONF_KEY, float, source), _number(values, NMSTHRE_KEY, float, source),
                       _number(values, MAX_DET_KEY, int, source))


def _number(values, key, kind, source):
    """values[key] as `kind` (None when absent); ValueError naming the key when it is not a number."""
    text = values.get(key)
    try:
        return kind(text) if text else None
    except ValueError:
        raise ValueError(f"{source}: metadata {key}={text!r}; expected a number; re-export the model") from None


def classes_of(metadata_classes, output_channels, source):
    """The model's class count: its metadata, else the output width (5 + K) when the file fixes it, else None.

    Exports with a dynamic batch axis leave the output width symbolic unless a simplifier (onnxslim, onnxsim) ran,
    so the metadata written at export is the first source; both must agree when both are known.
    """
    from_shape = output_channels - 5 if isinstance(output_channels, int) and output_channels > 5 else None
    if metadata_classes is not None and from_shape is not None and metadata_classes != from_shape:
        raise ValueError(f"{source}: metadata {NUM_CLASSES_KEY}={metadata_classes} but the output has "
                         f"{output_channels} columns (5 + {from_shape} classes); re-export the model")
    return metadata_classes if metadata_classes is not None else from_shape


def outputs_look_decoded(outputs, input_size, p6=False):
    """Whether (B, A, 5 + K) outputs hold decoded boxes, judged from where their box centres lie.

    A decoded centre column is (offset + cell) * stride, within a few strides of its anchor's cell centre; a raw
    one is the offset alone, a few cells at most from 0.5. So the median distance of columns 0-1 to each reference,
    in strides for decoded and in cells for raw, is small for the right one and of the order of the grid size
    (several cells) for the other, for any model whose boxes are anywhere near their anchors.
    """
    xy = outputs[..., :2].float()  # (B, A, 2)
    cells = demo_postprocess(torch.zeros(1, xy.shape[1], 5), input_size, p6)  # (1, A, 5): cell corner, stride
    stride = cells[..., 2:3]  # (1, A, 1)
    centre = cells[..., :2] + 0.5 * stride  # (1, A, 2) cell centres in pixels
    as_decoded = ((xy - centre).abs() / stride).median()
    as_raw = (xy - 0.5).abs().median()
    return bool(as_decoded < as_raw)
