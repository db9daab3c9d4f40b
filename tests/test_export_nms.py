"""tools/export_onnx.py --nms: decoding, score threshold and per-class NMS inside the ONNX graph keep what
yolox.utils.postprocess keeps (ONNX Runtime and OpenVINO, static and free batch), the file describes its thresholds,
and eval / demo take it in place of a plain export."""
import contextlib
import copy
import io
import os

import numpy as np
import pytest
import torch

from benchmarks.fitted_weights import detector_like, forest_images
from yolox.deploy import NMSDetector, NMSSettings, OnnxRuntimeBackend, nms_detections
from yolox.exp import get_exp
from yolox.exp.from_checkpoint import describe_run
from yolox.tools.export_onnx import main as export_main
from yolox.tools.export_onnx import run_onnx_cli
from yolox.utils import postprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOREST_EXP = os.path.join(ROOT, "exps", "example", "forest", "yolox_nano_forest.py")
SIZE = 160
ANCHORS = (SIZE // 8) ** 2 + (SIZE // 16) ** 2 + (SIZE // 32) ** 2  # 525: the default max_det
OPTS = ["test_size", f"{SIZE},{SIZE}", "test_conf", "0.001"]

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def tiles():
    """The 7 forest val tiles letterboxed to SIZE as ValTransform does, and their gt boxes at that scale."""
    images, boxes, _ = forest_images(SIZE)
    return images, boxes


@pytest.fixture(scope="module")
def coco(tmp_path_factory, tiles):
    """yolox-nano (80 classes) fitted to the tiles with class logits spread (hundreds of candidates per image over
    a dozen classes) and boxes enlarged so that neighbours overlap, and its --nms exports: a free batch keeping
    every anchor, and a static batch of 2 keeping at most 40 per image."""
    tmp = tmp_path_factory.mktemp("nms")
    exp = get_exp(None, "yolox-nano")
    exp.merge(OPTS)
    torch.manual_seed(0)
    model = detector_like(exp.get_model(), *tiles, class_logit_std=1.5, min_var=0.1, negative_logit=-6.0)
    model = _enlarge_boxes(copy.deepcopy(model))  # a copy: exp.get_model() resets the Exp's own model's biases
    ckpt = tmp / "nano.pth"
    torch.save({"model": model.state_dict()}, ckpt)
    common = ["-n", "yolox-nano", "-c", str(ckpt), "--nms"]
    dynamic = run_onnx_cli(common + ["--output-name", str(tmp / "dynamic.onnx"), "--dynamic", *OPTS])
    static = run_onnx_cli(common + ["--output-name", str(tmp / "static.onnx"), "--batch-size", "2", "--max-det",
                                    "40", *OPTS])
    with torch.no_grad():
        reference = postprocess(model(tiles[0]), 80, 0.001, exp.nmsthre)
    return {"tmp": tmp, "exp": exp, "model": model, "dynamic": dynamic, "static": static, "reference": reference}


def _enlarge_boxes(model, log_scale=1.5):
    """Boxes e**1.5 = 4.5x as wide and high: the fitted boxes hardly overlap (NMS at 0.65 would remove none)."""
    with torch.no_grad():
        for conv in model.head.reg_preds:
            conv.bias[2:4] += log_scale
    return model


def assert_same_detections(got, ref, max_det=None):
    """Per image the same count, and each reference detection matched one to one by a detection of its class
    whose box is within 1e-4 and whose score (column 4 x column 5) is within 1e-5."""
    assert len(got) == len(ref)
    for i, (g, r) in enumerate(zip(got, ref)):
        if r is not None and max_det is not None:
            r = r[:max_det]
        assert (g is None) == (r is None), f"image {i}"
        if r is None:
            continue
        assert g.shape == r.shape, f"image {i}: {g.shape[0]} detections, expected {r.shape[0]}"
        dist = (r[:, None, :4] - g[None, :, :4]).abs().amax(-1)  # (n, n)
        dist[r[:, None, 6] != g[None, :, 6]] = float("inf")
        nearest = dist.argmin(1)  # (n,)
        assert torch.equal(nearest.sort().values, torch.arange(g.shape[0])), f"image {i}: not one to one"
        assert dist.min(1).values.max() < 1e-4, f"image {i}"
        torch.testing.assert_close(g[nearest, 4] * g[nearest, 5], r[:, 4] * r[:, 5], rtol=0, atol=1e-5)
        scores = g[:, 4] * g[:, 5]
        assert bool((scores[:-1] >= scores[1:] - 1e-6).all()), f"image {i}: not by decreasing score"


def test_the_reference_exercises_nms(coco, tiles):
    """Many candidates, dozens of them suppressed, several classes kept per image, and NMS per class keeping more
    than class-agnostic NMS would: a comparison that means something."""
    with torch.no_grad():
        outputs = coco["model"](tiles[0])  # (7, A, 85)
    candidates = (outputs[..., 4] * outputs[..., 5:].amax(-1) >= 0.001).sum(1)  # (7,)
    kept = torch.tensor([r.shape[0] for r in coco["reference"]])
    agnostic = torch.tensor([r.shape[0] for r in postprocess(outputs, 80, 0.001, coco["exp"].nmsthre, True)])
    assert bool((kept > 100).all()) and bool((candidates > kept + 20).all()) and bool((kept > agnostic).all())
    assert all(len(set(r[:, 6].tolist())) > 5 for r in coco["reference"])


def test_pytorch_nms_detector_equals_postprocess(coco, tiles):
    """The module that is exported, run in PyTorch (its NonMaxSuppression computed with torchvision)."""
    detector = NMSDetector(coco["model"], 0.001, coco["exp"].nmsthre).eval()
    with torch.no_grad():
        got = nms_detections(*detector(tiles[0]))
    assert_same_detections(got, coco["reference"])


@pytest.mark.parametrize("which", ["dynamic", "static"])
def test_onnxruntime_keeps_what_postprocess_keeps(coco, tiles, which):
    backend = OnnxRuntimeBackend(coco[which])
    max_det = ANCHORS if which == "dynamic" else 40
    assert backend.nms == NMSSettings(0.001, coco["exp"].nmsthre, max_det)
    assert backend.batch_size == (None if which == "dynamic" else 2) and backend.num_classes == 80
    assert backend.class_names[:2] == ["person", "bicycle"] and len(backend.class_names) == 80
    # 7 images: the free batch at once, the static one in runs of 2 (the last padded)
    assert_same_detections(backend(tiles[0].numpy()), coco["reference"], max_det)
    raw = backend.run(tiles[0][:2].numpy())  # the file's own outputs, zero-padded after num_dets
    assert [o.shape for o in raw] == [(2, 1), (2, max_det, 4), (2, max_det), (2, max_det)]
    assert raw[0].dtype == raw[3].dtype == np.int64 and raw[1].dtype == raw[2].dtype == np.float32
    n = int(raw[0][0, 0])
    assert n <= max_det and not raw[2][0, n:].any() and not raw[1][0, n:].any()


def test_the_file_records_its_thresholds(coco):
    import onnx

    meta = {p.key: p.value for p in onnx.load(coco["static"]).metadata_props}
    assert (meta["yolox_nms"], meta["yolox_test_conf"], meta["yolox_nmsthre"], meta["yolox_max_det"]) == \
        ("1", "0.001", repr(coco["exp"].nmsthre), "40")
    assert meta["yolox_decoded"] == "1" and meta["yolox_num_classes"] == "80" and "person" in meta["yolox_class_names"]


def test_openvino_runs_the_onnx_file_and_its_ir(coco, tiles):
    pytest.importorskip("openvino")
    from yolox.deploy import OpenVINOBackend, export_openvino

    xml = export_openvino(coco["dynamic"], str(coco["tmp"] / "ir" / "dynamic.xml"))
    for path, max_det in ((xml, ANCHORS), (coco["static"], 40)):
        backend = OpenVINOBackend(path)
        assert backend.nms == NMSSettings(0.001, coco["exp"].nmsthre, max_det) and len(backend.class_names) == 80
        assert_same_detections(backend(tiles[0].numpy()), coco["reference"], max_det)


def test_other_thresholds_warn_once_or_filter_exactly(coco, tiles):
    from loguru import logger

    backend = OnnxRuntimeBackend(coco["dynamic"])
    outputs = backend(tiles[0][:3].numpy())
    nmsthre = coco["exp"].nmsthre
    with torch.no_grad():
        ref = postprocess(coco["model"](tiles[0][:3]), 80, 0.3, nmsthre)
    # a higher score threshold is exact on the file's detections: a box above it is suppressed only by boxes above it
    assert_same_detections(backend.postprocess(outputs, 80, 0.3, nmsthre), ref)
    warnings = []
    sink = logger.add(lambda m: warnings.append(str(m)), level="WARNING", format="{message}")
    try:
        for _ in range(2):
            assert backend.postprocess(outputs, 80, 1e-4, 0.3) is outputs  # the file's settings apply
    finally:
        logger.remove(sink)
    assert len(warnings) == 2, warnings  # once each, for conf and for nms
    assert "score threshold 0.0001 is below the 0.001" in warnings[0] and "NMS threshold 0.3" in warnings[1]


def test_export_user_errors_are_one_line(coco):
    base = ["-n", "yolox-nano", "-c", str(coco["tmp"] / "nano.pth"), "--output-name", str(coco["tmp"] / "x.onnx")]
    cases = [(["--nms", "--batch-size", "0"], "--batch-size 0: the export needs a batch of at least 1"),
             (["--nms", "--max-det", "0"], "--max-det 0: keep at least 1 detection"),
             (["--nms", "-o", "10"], "--opset 10 is too old for --nms"),
             (["--max-det", "50"], "--max-det apply to NMS in the graph: add --nms"),
             (["--nms", "--conf", "1.5"], "--conf 1.5: a threshold between 0 and 1"),
             (["--int8", "--batch-size", "4"], "--int8 with --batch-size 4: calibration feeds one image at a time"),
             (["--calib", "8"], "--calib / --calib-split choose the calibration images of --int8")]
    for flags, message in cases:
        with pytest.raises(ValueError, match=message):
            run_onnx_cli(base + flags)
    with pytest.raises(SystemExit) as stop:
        export_main(base + ["--nms", "--max-det", "-3"])
    assert stop.value.code == 2


@pytest.fixture(scope="module")
def forest(tmp_path_factory, tiles):
    """The forest Exp (1 class) at SIZE, a fitted self-describing checkpoint, and its exports from -c alone: a plain
    one (decoded outputs) and one with NMS in its graph."""
    tmp = tmp_path_factory.mktemp("forest_nms")
    exp = get_exp(FOREST_EXP)
    opts = OPTS + ["output_dir", str(tmp / "out")]
    exp.merge(opts)
    torch.manual_seed(0)
    model = copy.deepcopy(detector_like(exp.get_model(), *tiles))
    ckpt = tmp / "forest.pth"
    torch.save({"model": model.state_dict(), **describe_run(exp, model, ["tree"], FOREST_EXP)}, ckpt)
    plain = run_onnx_cli(["-c", str(ckpt), "--output-name", str(tmp / "plain.onnx"), "--decode_in_inference",
                          "--dynamic"])
    nms = run_onnx_cli(["-c", str(ckpt), "--output-name", str(tmp / "nms.onnx"), "--nms", "--dynamic"])
    return {"tmp": tmp, "opts": opts, "exp": exp, "pth": str(ckpt), "plain": plain, "nms": nms}


def test_eval_gives_the_nms_model_the_plain_models_ap(forest):
    from yolox.tools.eval import run_eval_cli

    backend = OnnxRuntimeBackend(forest["nms"])  # the checkpoint's Exp settings, baked in
    assert backend.nms == NMSSettings(0.001, 0.5, ANCHORS) and backend.class_names == ["tree"]

    def evaluate(path):
        with contextlib.redirect_stdout(io.StringIO()):
            return run_eval_cli(["-f", FOREST_EXP, "-c", path, "-b", "4", *forest["opts"]])

    ap, ap50, _ = evaluate(forest["plain"])
    assert ap50 > 0.05, "the fitted weights must find trees: equal zeros would prove nothing"
    assert evaluate(forest["nms"])[:2] == pytest.approx((ap, ap50), abs=1e-4)


def test_demo_draws_the_nms_models_boxes(forest, monkeypatch):
    from yolox.apps.predictor import Predictor, load_backend
    from yolox.tools.demo import run_demo_cli

    monkeypatch.chdir(forest["tmp"])  # the Exp an export describes writes under ./YOLOX_outputs

    tile = os.path.join(ROOT, "datasets", "forest", "val", sorted(os.listdir(os.path.join(ROOT, "datasets", "forest",
                                                                                          "val")))[0])
    written = run_demo_cli(["image", "-c", forest["nms"], "--path", tile, "--save_result", "--conf", "0.25",
                            "--nms", "0.5", "-expn", "nms_demo"])  # the export describes itself: no -f
    assert len(written) == 1 and os.path.isfile(written[0])
    found = {}  # the plain export's boxes, NMS'd here (one class: the demo's class-agnostic NMS is the same)
    for key in ("plain", "nms"):
        predictor = Predictor(load_backend(forest["exp"], forest[key]), forest["exp"])
        predictor.confthre = 0.25
        found[key] = predictor.inference(tile)[0]
    assert found["plain"][0].shape[0] > 5
    assert_same_detections(found["nms"], found["plain"])
