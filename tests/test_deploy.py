"""Deployment backends: an exported YOLOX runs in ONNX Runtime and OpenVINO with PyTorch's outputs, and tools/eval.py
and tools/demo.py take a .pth, an .onnx or an .xml through -c with the same results."""
import contextlib
import copy
import io
import os
import shutil
import sys

import cv2
import numpy as np
import pytest
import torch

from benchmarks.fitted_weights import detector_like, forest_images
from benchmarks.infer import compare_detections
from yolox.tools.demo import run_demo_cli
from yolox.tools.eval import run_eval_cli
from yolox.tools.export_onnx import run_onnx_cli
from yolox.tools.export_openvino import run_openvino_cli
from yolox.apps.predictor import Predictor, load_backend
from yolox.data import ValTransform
from yolox.deploy import (DECODED_KEY, OnnxRuntimeBackend, TorchBackend, backend_for_file, outputs_look_decoded)
from yolox.exp import get_exp
from yolox.utils import fuse_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOREST_EXP = os.path.join(ROOT, "exps", "example", "forest", "yolox_nano_forest.py")
VAL_DIR = os.path.join(ROOT, "datasets", "forest", "val")
SIZE = 160

pytest.importorskip("onnxruntime")


def _opts(tmp):
    return ["test_size", f"{SIZE},{SIZE}", "test_conf", "0.001", "output_dir", str(tmp / "out")]


@pytest.fixture(scope="module")
def val_tiles():
    """The 7 forest val tiles letterboxed to SIZE, and their gt boxes at that scale."""
    images, boxes, _ = forest_images(SIZE)
    return images, boxes


def _val_images(n):
    """(n, 3, SIZE, SIZE) float32 letterboxed forest val tiles."""
    names = sorted(os.listdir(VAL_DIR))[:n]
    return np.stack([ValTransform()(cv2.imread(os.path.join(VAL_DIR, f)), None, (SIZE, SIZE))[0] for f in names])


def _perturbed(model, seed=0):
    """Random weights and BatchNorm statistics perturbed (as in test_export): varied outputs, and a network that
    rounds like a trained one. The fitted weights below detect better but are far more sensitive to rounding
    (PyTorch float32 and float64 differ by 7e-4 on them), too much for a 1e-4 comparison of runtimes."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.add_(torch.randn(t.shape, generator=g) * 0.05)
                if name.endswith("running_var"):
                    t.abs_().add_(0.5)
    return model.eval()


def _fitted(exp, val_tiles, class_logit_std=0.0):
    """exp's model with weights that detect the val tiles' trees (benchmarks.fitted_weights): real, varied
    detections without training."""
    torch.manual_seed(0)
    return detector_like(exp.get_model(), *val_tiles, class_logit_std=class_logit_std)


@pytest.fixture(scope="module")
def forest(tmp_path_factory, val_tiles):
    """The forest Exp (yolox-nano, 1 class) at 160 px, a fitted checkpoint and its ONNX exports: raw outputs with a
    dynamic batch, and decoded outputs with a static batch of 1."""
    tmp = tmp_path_factory.mktemp("deploy")
    exp = get_exp(FOREST_EXP)
    exp.merge(_opts(tmp))
    model = _fitted(exp, val_tiles)
    ckpt = tmp / "forest.pth"
    torch.save({"model": model.state_dict()}, ckpt)
    common = ["-f", FOREST_EXP, "-c", str(ckpt)]
    raw = run_onnx_cli(common + ["--output-name", str(tmp / "raw.onnx"), "--dynamic", *_opts(tmp)])
    decoded = run_onnx_cli(common + ["--output-name", str(tmp / "decoded_b1.onnx"), "--decode_in_inference",
                                     *_opts(tmp)])
    # a copy: exp.get_model() (called by load_backend) resets the biases of the Exp's own model
    return {"tmp": tmp, "exp": exp, "model": copy.deepcopy(model), "pth": str(ckpt), "onnx": raw,
            "onnx_b1": decoded}


def _has_openvino():
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def forest_ir(forest):
    """OpenVINO IRs converted from both ONNX exports ({} without openvino: those cases are left out)."""
    if not _has_openvino():
        return {}
    return {"xml": run_openvino_cli(["-i", forest["onnx"]]),
            "xml_b1": run_openvino_cli(["-i", forest["onnx_b1"],
                                        "--output-name", str(forest["tmp"] / "ir" / "b1.xml")])}


def _torch_outputs(model, x, decode):
    model.head.decode_in_inference = decode
    try:
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()
    finally:
        model.head.decode_in_inference = True


@pytest.fixture(scope="module")
def nano(tmp_path_factory):
    """yolox-nano (80 classes) at 160 px, perturbed weights, exported with a dynamic batch (raw outputs)."""
    tmp = tmp_path_factory.mktemp("nano")
    exp = get_exp(None, "yolox-nano")
    exp.merge(["test_size", f"{SIZE},{SIZE}"])
    torch.manual_seed(0)
    model = _perturbed(exp.get_model())
    ckpt = tmp / "nano.pth"
    torch.save({"model": model.state_dict()}, ckpt)
    onnx_file = run_onnx_cli(["-n", "yolox-nano", "-c", str(ckpt), "--output-name", str(tmp / "nano.onnx"),
                              "--dynamic", "test_size", f"{SIZE},{SIZE}"])
    return model, onnx_file


def _open(name, path):
    if name == "openvino":
        pytest.importorskip("openvino")
        from yolox.deploy import OpenVINOBackend

        return OpenVINOBackend(path)
    return OnnxRuntimeBackend(path)


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_nano_outputs_equal_pytorch(nano, runtime, tmp_path):
    model, onnx_file = nano
    path = onnx_file
    if runtime == "openvino":
        pytest.importorskip("openvino")
        path = run_openvino_cli(["-i", onnx_file, "--output-name", str(tmp_path / "nano.xml")])
    backend = _open(runtime, path)
    assert (backend.input_size, backend.batch_size, backend.num_classes, backend.decoded) == ((SIZE, SIZE), None, 80,
                                                                                            False)
    x = _val_images(3)
    raw = backend.run(backend.to_input(x))  # the runtime's own outputs: (3, A, 85) raw, as exported
    np.testing.assert_allclose(raw, _torch_outputs(model, x, decode=False), rtol=1e-4, atol=1e-4)
    decoded = backend(x).numpy()  # decoded with demo_postprocess
    ref = _torch_outputs(model, x, decode=True)
    assert decoded.shape == ref.shape == (3, 20 * 20 + 10 * 10 + 5 * 5, 85)
    np.testing.assert_allclose(decoded, ref, rtol=1e-4, atol=1e-4)
    assert ref[..., :2].max() > SIZE * 0.9  # decoded centres span the image: the comparison covers decoding


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_static_and_dynamic_exports_decode_alike(forest, forest_ir, runtime):
    """Raw outputs with a free batch and decoded outputs of a batch-1 export (fed one image at a time) come out the
    same from one runtime, and as PyTorch's within the rounding these fitted weights amplify (see _perturbed)."""
    if runtime == "openvino":
        pytest.importorskip("openvino")
    dynamic_raw, static_decoded = ((forest["onnx"], forest["onnx_b1"]) if runtime == "onnxruntime" else
                                   (forest_ir["xml"], forest_ir["xml_b1"]))
    dynamic, static = load_backend(forest["exp"], dynamic_raw), load_backend(forest["exp"], static_decoded)
    assert (dynamic.batch_size, dynamic.decoded, static.batch_size, static.decoded) == (None, False, 1, True)
    x = _val_images(3)
    got = static(x).numpy()
    np.testing.assert_allclose(dynamic(x).numpy(), got, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(got, _torch_outputs(forest["model"], x, True), rtol=1e-3, atol=2e-3)


def _strip_metadata(src, dst):
    import onnx

    m = onnx.load(src)
    del m.metadata_props[:]
    onnx.save(m, dst)
    return str(dst)


def test_exports_without_metadata_are_recognised(forest, tmp_path):
    x = _val_images(2)
    ref = OnnxRuntimeBackend(forest["onnx"])(x).numpy()
    for key in ("onnx", "onnx_b1"):
        backend = OnnxRuntimeBackend(_strip_metadata(forest[key], tmp_path / f"{key}.onnx"))
        assert backend.decoded is None
        np.testing.assert_allclose(backend(x).numpy(), ref, rtol=1e-5, atol=1e-4)
        assert backend.decoded is (key == "onnx_b1")
    for decode in (False, True):  # the check itself, on outputs of either kind
        outputs = torch.from_numpy(_torch_outputs(forest["model"], x, decode))
        assert outputs_look_decoded(outputs, (SIZE, SIZE)) is decode


def _eval(forest, path, *flags):
    with contextlib.redirect_stdout(io.StringIO()):
        return run_eval_cli(["-f", FOREST_EXP, "-c", path, "-b", "4", *flags, *_opts(forest["tmp"])])


def test_eval_gives_the_same_ap_for_pth_onnx_and_xml(forest, forest_ir):
    ap, ap50, summary = _eval(forest, forest["pth"])
    assert ap50 > 0.08 and ap > 0.02, "the fitted weights must find trees: equal zeros would prove nothing"
    for path in (forest["onnx"], forest["onnx_b1"], *forest_ir.values()):
        got = _eval(forest, path)
        assert got[:2] == pytest.approx((ap, ap50), abs=2e-3), path  # the bound
        assert "Average forward time" in got[2]
    assert _eval(forest, forest["onnx"], "--fuse")[:2] == pytest.approx((ap, ap50), abs=2e-3)  # a no-op there
    line = _eval(forest, forest_ir.get("xml", forest["onnx_b1"]), "--speed")
    assert line.startswith("Average forward time:") and line.count(" ms") == 3


def test_evaluator_detections_match_per_image(forest):
    """The same detections image by image (not only the same AP), through the evaluator's backend path."""
    exp = forest["exp"]
    evaluator = exp.get_evaluator(4, False)
    with contextlib.redirect_stdout(io.StringIO()):
        _, ref = evaluator.evaluate(forest["model"], return_outputs=True)
        _, got = evaluator.evaluate(load_backend(exp, forest["onnx"]), return_outputs=True)
    assert ref.keys() == got.keys() and len(ref) == 7
    for img_id in ref:
        a, b = ref[img_id], got[img_id]
        assert len(a["scores"]) == len(b["scores"]) > 20
        # within the rounding these fitted weights amplify (see _perturbed); original pixels, 2.5x the input's
        np.testing.assert_allclose(np.sort(a["scores"]), np.sort(b["scores"]), atol=2e-3)
        np.testing.assert_allclose(np.sort(np.sum(a["bboxes"], 1)), np.sort(np.sum(b["bboxes"], 1)), atol=0.1)


def test_demo_draws_the_same_boxes_with_each_backend(forest, forest_ir, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in sorted(os.listdir(VAL_DIR))[:2]:
        shutil.copy(os.path.join(VAL_DIR, name), images / name)
    drawn, boxes = {}, {}
    cases = [("pth", forest["pth"]), ("onnx", forest["onnx"])] + ([("xml", forest_ir["xml"])] if forest_ir else [])
    for key, path in cases:
        written = run_demo_cli(["image", "-f", FOREST_EXP, "-c", path, "--path", str(images), "--save_result",
                                "--conf", "0.25", "--tsize", str(SIZE), "-expn", key])
        drawn[key] = [cv2.imread(p) for p in sorted(written)]
        predictor = Predictor(load_backend(forest["exp"], path), forest["exp"])
        predictor.confthre = 0.25
        outputs, _ = predictor.inference(str(images / sorted(os.listdir(images))[0]))
        boxes[key] = outputs
    assert boxes["pth"][0].shape[0] > 5, "boxes must be drawn for the comparison to mean something"
    originals = [cv2.imread(str(images / f)) for f in sorted(os.listdir(images))]
    assert all(np.abs(d.astype(int) - o).max() > 100 for d, o in zip(drawn["pth"], originals))
    for key in boxes.keys() - {"pth"}:
        # each box matched (IoU > 0.99, score within 2e-3), bar one at the threshold that rounding moves across it
        same, worst_iou, _ = compare_detections(boxes[key], boxes["pth"], conf=0.25)
        assert same and worst_iou > 0.99, key
        for a, b in zip(drawn[key], drawn["pth"]):  # the same boxes; a score's last digit in a label may differ
            assert a.shape == b.shape and (a != b).any(axis=-1).mean() < 0.03


def test_fused_channels_last_torch_backend_equals_the_model(forest):
    x = _val_images(2)
    ref = _torch_outputs(forest["model"], x, True)
    fused = TorchBackend(fuse_model(copy.deepcopy(forest["model"])), channels_last=True)
    np.testing.assert_allclose(fused(x).numpy(), ref, rtol=1e-3, atol=2e-3)  # fitted weights: see _perturbed


def test_backend_choice_and_user_errors(forest, monkeypatch):
    assert backend_for_file("a/b.onnx") == "onnxruntime" and backend_for_file("m.XML") == "openvino"
    assert backend_for_file("best_ckpt.pth") == "torch" and backend_for_file("m.onnx", "openvino") == "openvino"
    with pytest.raises(ValueError, match=r"give its \.xml"):
        backend_for_file("m.bin")
    with pytest.raises(ValueError, match="--backend torch cannot run m.onnx"):
        backend_for_file("m.onnx", "torch")
    onnx_file = forest["onnx"]
    with pytest.raises(ValueError, match="--fp16 applies to PyTorch checkpoints"):
        _eval(forest, onnx_file, "--fp16")
    with pytest.raises(ValueError, match="in one process; drop -d"):
        _eval(forest, onnx_file, "-d", "2")
    with pytest.raises(ValueError, match=r"takes 160x160 inputs but the Exp's test_size is 128x128; pass --tsize 160"):
        _eval(forest, onnx_file, "--tsize", "128")
    coco = get_exp(None, "yolox-nano")
    coco.test_size = (SIZE, SIZE)
    with pytest.raises(ValueError, match="predicts 1 classes but the Exp has num_classes = 80"):
        load_backend(coco, onnx_file)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_backend(forest["exp"], str(forest["tmp"] / "missing.onnx"))
    from yolox.tools.eval import main as eval_main

    with pytest.raises(SystemExit) as stop:  # the tool: one line, exit status 2
        eval_main(["-f", FOREST_EXP, "-c", onnx_file, "--fp16", *_opts(forest["tmp"])])
    assert stop.value.code == 2
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    with pytest.raises(ValueError, match=r'onnxruntime is not installed: pip install -e "\.\[deploy\]"'):
        load_backend(forest["exp"], onnx_file)


def test_onnx_files_record_whether_outputs_are_decoded(forest):
    import onnx

    for key, expected in (("onnx", "0"), ("onnx_b1", "1")):
        meta = {p.key: p.value for p in onnx.load(forest[key]).metadata_props}
        assert meta[DECODED_KEY] == expected and meta["yolox_strides"] == "8,16,32"
        assert meta["yolox_num_classes"] == "1"


def test_class_count_from_metadata_or_output_width():
    from yolox.deploy.metadata import classes_of, parse_metadata

    # a dynamic-batch export without a simplifier leaves the output width symbolic: the metadata gives the count
    assert parse_metadata({"yolox_num_classes": "3"}, "m.onnx") == (None, None, 3)
    assert classes_of(3, "unk__0", "m.onnx") == 3 and classes_of(None, 85, "m.onnx") == 80
    assert classes_of(None, None, "m.onnx") is None and classes_of(80, 85, "m.onnx") == 80
    with pytest.raises(ValueError, match="m.onnx: metadata yolox_num_classes=3 but the output has 85 columns"):
        classes_of(3, 85, "m.onnx")
    with pytest.raises(ValueError, match="m.onnx: metadata yolox_num_classes='x'; expected an integer"):
        parse_metadata({"yolox_num_classes": "x"}, "m.onnx")


def test_openvino_ir_keeps_the_metadata(forest, forest_ir):
    ov = pytest.importorskip("openvino")

    from yolox.deploy.openvino_backend import openvino_metadata

    model = ov.Core().read_model(forest_ir["xml_b1"])
    assert openvino_metadata(model)[DECODED_KEY] == "1"
    assert os.path.isfile(forest_ir["xml_b1"][:-4] + ".bin")
