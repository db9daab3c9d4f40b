"""The official deployment helpers (yolox.utils.demo_utils) and the official ONNX Runtime demo's flow on an exported
model: the same detections as the PyTorch model's postprocess."""
import cv2
import numpy as np
import pytest
import torch
import torchvision

from model_zoo import perturb_weights
from yolox.utils import demo_postprocess, mkdir, multiclass_nms, nms, postprocess, random_color, vis, visualize_assign

FOREST_VAL = "datasets/forest/val"

EXP_TEXT = '''
from yolox.exp import Exp as BaseExp


class Exp(BaseExp):
    def __init__(self):
        super().__init__()
        self.depth = 0.33
        self.width = 0.25
        self.num_classes = 3
        self.test_size = (192, 192)  # square like the tiles: no letterbox padding, whose anchors tie in score
        self.output_dir = {out!r}
'''


def _random_boxes(n, seed):
    g = np.random.default_rng(seed)
    xy = g.uniform(0, 200, (n, 2))
    wh = g.uniform(5, 60, (n, 2))
    return np.concatenate([xy, xy + wh], 1).astype(np.float32)


def test_nms_is_torchvisions():
    boxes, scores = _random_boxes(300, 0), np.random.default_rng(1).uniform(0, 1, 300).astype(np.float32)
    keep = nms(boxes, scores, 0.45)
    expected = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.45).tolist()
    assert keep == expected and 20 < len(keep) < 300
    assert list(scores[keep]) == sorted(scores[keep], reverse=True)


def test_multiclass_nms_class_aware_equals_nms_per_class():
    boxes = _random_boxes(200, 2)
    scores = np.random.default_rng(3).uniform(0, 1, (200, 4)).astype(np.float32)
    dets = multiclass_nms(boxes, scores, nms_thr=0.45, score_thr=0.3, class_agnostic=False)
    expected = []
    for c in range(4):
        valid = np.nonzero(scores[:, c] > 0.3)[0]
        keep = valid[torchvision.ops.nms(torch.from_numpy(boxes[valid]), torch.from_numpy(scores[valid, c]),
                                         0.45).numpy()]
        expected.append(np.concatenate([boxes[keep], scores[keep, c, None], np.full((len(keep), 1), c)], 1))
    np.testing.assert_allclose(dets, np.concatenate(expected), rtol=0, atol=0)


def test_multiclass_nms_agnostic_and_empty():
    boxes = _random_boxes(50, 4)
    scores = np.random.default_rng(5).uniform(0, 1, (50, 3)).astype(np.float32)
    dets = multiclass_nms(boxes, scores, nms_thr=0.45, score_thr=0.5)
    best = scores.max(1)
    valid = np.nonzero(best > 0.5)[0]
    keep = valid[torchvision.ops.nms(torch.from_numpy(boxes[valid]), torch.from_numpy(best[valid]), 0.45).numpy()]
    np.testing.assert_array_equal(dets[:, :4], boxes[keep])
    np.testing.assert_array_equal(dets[:, 5], scores[keep].argmax(1))
    assert multiclass_nms(boxes, scores, 0.45, score_thr=1.0) is None
    assert multiclass_nms(boxes, scores, 0.45, score_thr=1.0, class_agnostic=False) is None


def test_demo_postprocess_is_the_heads_decoding():
    from yolox.exp import get_exp

    exp = get_exp(exp_name="yolox-nano")
    exp.num_classes = 2
    model = exp.get_model().eval()
    x = torch.rand(2, 3, 96, 128) * 255
    with torch.no_grad():
        model.head.decode_in_inference = False
        raw = model(x).numpy()
        model.head.decode_in_inference = True
        decoded = model(x).numpy()
    out = demo_postprocess(raw, (96, 128))
    assert out is raw  # in place, as the official helper
    np.testing.assert_allclose(raw, decoded, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="img_size"):
        demo_postprocess(np.zeros((1, 10, 7), np.float32), (96, 128))


def test_yolox_utils_imports_nothing_else_from_yolox():
    """The decoding demo_postprocess needs lives in yolox.utils.anchors: utils sits below models, data and the rest."""
    import subprocess
    import sys

    code = ("import sys, numpy, yolox.utils; "
            "yolox.utils.demo_postprocess(numpy.zeros((1, 16 + 4 + 1, 6), numpy.float32), (32, 32)); "
            "print(sorted(m for m in sys.modules if m.startswith('yolox.') and not m.startswith('yolox.utils')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_small_helpers(tmp_path):
    mkdir(str(tmp_path / "a" / "b"))
    mkdir(str(tmp_path / "a" / "b"))
    assert (tmp_path / "a" / "b").is_dir()
    for _ in range(20):
        color = random_color()
        assert len(color) == 3 and all(0 <= c <= 255 and isinstance(c, int) for c in color)
    img = np.zeros((100, 100, 3), np.uint8)
    boxes = np.array([[10, 10, 40, 40], [60, 60, 90, 90]], np.float32)
    coords = np.array([[20, 20], [30, 30]], np.float32)
    out = visualize_assign(img, boxes, coords, np.array([0, 0]), save_name=str(tmp_path / "assign.png"))
    assert out is img and (tmp_path / "assign.png").is_file()
    assert tuple(img[20, 20]) != (0, 0, 0)  # the anchor dot of gt 0
    assert tuple(img[60, 75]) == (0, 0, 255)  # gt 1 has no anchor: drawn in red


def test_official_onnxruntime_demo_flow_equals_pytorch_postprocess(tmp_path):
    """The official ONNX Runtime demo's steps, written against the official API, on an exported model."""
    ort = pytest.importorskip("onnxruntime")
    from yolox.tools.export_onnx import run_onnx_cli
    from yolox.data.data_augment import preproc as preprocess
    from yolox.data.datasets import COCO_CLASSES
    from yolox.exp import get_exp

    exp_file = tmp_path / "exp.py"
    exp_file.write_text(EXP_TEXT.format(out=str(tmp_path / "out")))
    exp = get_exp(str(exp_file))
    model = perturb_weights(exp.get_model())
    with torch.no_grad():  # scores spread over (0, 1)
        for conv in (*model.head.obj_preds, *model.head.cls_preds):
            conv.bias.copy_(torch.empty_like(conv.bias).uniform_(-3, 2))
    torch.save({"model": model.state_dict()}, tmp_path / "ckpt.pth")
    onnx_file = tmp_path / "model.onnx"
    run_onnx_cli(["-f", str(exp_file), "-c", str(tmp_path / "ckpt.pth"), "--output-name", str(onnx_file)])

    import glob

    origin_img = cv2.imread(sorted(glob.glob(f"{FOREST_VAL}/*.jpg"))[0])
    input_shape = exp.test_size
    img, ratio = preprocess(origin_img, input_shape)
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    output = session.run(None, {session.get_inputs()[0].name: img[None, :, :, :]})
    predictions = demo_postprocess(output[0], input_shape)[0]
    boxes = predictions[:, :4]
    scores = predictions[:, 4:5] * predictions[:, 5:]
    boxes_xyxy = np.ones_like(boxes)
    boxes_xyxy[:, 0] = boxes[:, 0] - boxes[:, 2] / 2.0
    boxes_xyxy[:, 1] = boxes[:, 1] - boxes[:, 3] / 2.0
    boxes_xyxy[:, 2] = boxes[:, 0] + boxes[:, 2] / 2.0
    boxes_xyxy[:, 3] = boxes[:, 1] + boxes[:, 3] / 2.0
    boxes_xyxy /= ratio
    # about a tenth of the anchors take part; the threshold sits in a wide gap between two scores, so that float
    # differences between the runtimes cannot move an anchor across it
    best = np.sort(scores.max(1))
    around = np.arange(int(0.9 * len(best)) - 30, int(0.9 * len(best)) + 30)
    i = around[np.argmax(best[around + 1] - best[around])]
    score_thr = float(best[i] + best[i + 1]) / 2
    dets = multiclass_nms(boxes_xyxy, scores, nms_thr=0.45, score_thr=score_thr)
    assert dets is not None and len(dets) >= 5
    drawn = vis(origin_img.copy(), dets[:, :4], dets[:, 4], dets[:, 5], conf=score_thr, class_names=COCO_CLASSES)
    assert drawn.shape == origin_img.shape

    # this package's PyTorch path on the same input
    model.eval()
    model.head.decode_in_inference = True
    with torch.no_grad():
        out = postprocess(model(torch.from_numpy(img)[None]), exp.num_classes, conf_thre=score_thr, nms_thre=0.45,
                          class_agnostic=True)[0]
    out = out[out[:, 4] * out[:, 5] > score_thr].numpy()  # multiclass_nms keeps scores above the threshold
    assert len(out) == len(dets)
    ours = np.concatenate([out[:, :4] / ratio, out[:, 4:5] * out[:, 5:6], out[:, 6:7]], 1)
    # anchors over the letterbox padding see the same pixels and tie in score: compare in a fixed order
    order = lambda d: d[np.lexsort((d[:, 1], d[:, 0], -np.round(d[:, 4], 5)))]  # noqa: E731
    dets, ours = order(dets), order(ours)
    np.testing.assert_allclose(dets[:, :4], ours[:, :4], rtol=0, atol=1e-4)
    np.testing.assert_allclose(dets[:, 4], ours[:, 4], rtol=0, atol=1e-4)
    np.testing.assert_array_equal(dets[:, 5], ours[:, 5])
