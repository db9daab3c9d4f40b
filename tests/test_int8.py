"""INT8 by post-training quantisation (yolox.deploy.quantize, tools/export_openvino.py --int8): the IR keeps the
class names, evaluates like the other backends with an AP close to float32's, and calibrates on exactly what
evaluation feeds the model."""
import contextlib
import io
import os

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
ov = pytest.importorskip("openvino")
pytest.importorskip("nncf")

from benchmarks.fitted_weights import fit_head, forest_images, recalibrate_bn  # noqa: E402
from yolox.deploy import OpenVINOBackend  # noqa: E402
from yolox.deploy.openvino_backend import openvino_metadata  # noqa: E402
from yolox.deploy.quantize import CalibrationImages, calibration_images  # noqa: E402
from yolox.exp import get_exp  # noqa: E402
from yolox.tools.eval import run_eval_cli  # noqa: E402
from yolox.tools.export_openvino import main as openvino_main  # noqa: E402
from yolox.tools.export_openvino import run_openvino_cli  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOREST_EXP = os.path.join(ROOT, "exps", "example", "forest", "yolox_nano_forest.py")
SIZE = 160


def _opts(tmp):
    return ["test_size", f"{SIZE},{SIZE}", "test_conf", "0.001", "output_dir", str(tmp / "out")]


@pytest.fixture(scope="module")
def int8(tmp_path_factory):
    """A yolox-nano checkpoint fitted to the forest val tiles, and its INT8 IR written by the command line
    (-c -f --int8 --calib 8: the float ONNX lands beside it as model.onnx)."""
    tmp = tmp_path_factory.mktemp("int8")
    images, boxes, _ = forest_images(SIZE)
    torch.manual_seed(0)
    exp = get_exp(FOREST_EXP)
    # benchmarks.fitted_weights with min_var 0.1 (layers round like trained ones) and a light ridge: the default
    # fit (min_var 1e-2) reads the trees from feature differences of ~1e-3, below one INT8 step, and INT8 erases
    # them (AP50 0.13 -> 0.005), which says nothing about a trained model
    model = fit_head(recalibrate_bn(exp.get_model(), images, min_var=0.1), images, boxes, ridge=0.01).eval()
    ckpt = tmp / "forest.pth"
    torch.save({"model": model.state_dict()}, ckpt)
    xml = run_openvino_cli(["-c", str(ckpt), "-f", FOREST_EXP, "--int8", "--calib", "8",
                            "--output-name", str(tmp / "model_int8.xml"), *_opts(tmp)])
    return {"tmp": tmp, "xml": xml, "onnx": str(tmp / "model.onnx")}


def _eval(tmp, path):
    with contextlib.redirect_stdout(io.StringIO()):
        return run_eval_cli(["-f", FOREST_EXP, "-c", path, "-b", "4", *_opts(tmp)])


def test_cli_writes_an_int8_ir_with_the_class_names(int8):
    assert int8["xml"] == str(int8["tmp"] / "model_int8.xml") and os.path.isfile(int8["onnx"])
    model = ov.Core().read_model(int8["xml"])
    ops = model.get_ops()
    assert sum(op.get_type_name() == "FakeQuantize" for op in ops) > 50, "the IR must actually be quantised"
    # the head's prediction convolutions stay in float: no quantiser feeds them
    fed = {t.get_node().get_friendly_name() for op in ops if op.get_type_name() == "FakeQuantize"
           for t in op.output(0).get_target_inputs()}
    assert not [n for n in fed if "_preds." in n]
    source = openvino_metadata(ov.Core().read_model(int8["onnx"]))
    assert openvino_metadata(model) == source and source  # every yolox_* entry, the class names included
    assert OpenVINOBackend(int8["xml"]).class_names == ["tree"]


def test_int8_ap_is_close_to_float32(int8):
    ap, ap50, _ = _eval(int8["tmp"], int8["onnx"])
    assert ap50 > 0.04, "the fitted weights must find trees: equal zeros would prove nothing"
    got, got50, summary = _eval(int8["tmp"], int8["xml"])
    assert "Average forward time" in summary
    # 7 tiles, ~150 trees: one tree found or lost moves AP50 by ~0.01. The fitted weights are more sensitive to
    # rounding than trained ones (a trained forest nano at 192 px: AP 0.036 -> 0.034, AP50 0.135 -> 0.131 in
    # INT8), so the bound allows a loss of 0.03 AP50 / 0.015 AP and nothing like the 10 AP of a bad calibration.
    assert got50 == pytest.approx(ap50, abs=0.03) and got == pytest.approx(ap, abs=0.015)


def test_calibration_images_are_what_evaluation_feeds(int8):
    exp = get_exp(FOREST_EXP)
    exp.merge(_opts(int8["tmp"]))
    images = calibration_images(exp, 4)  # the val split: 7 tiles, 4 spread over them
    assert len(images) == 4 and images.indices == [0, 2, 4, 6]
    evalset = exp.get_eval_dataset()
    first = next(iter(images))
    assert first.shape == (1, 3, SIZE, SIZE) and first.dtype == np.float32
    np.testing.assert_array_equal(first[0], evalset[0][0])  # ValTransform: BGR 0-255 letterbox
    assert len(calibration_images(exp, 300, "train")) == 49  # all the training tiles when fewer than asked
    with pytest.raises(ValueError, match="no images"):
        CalibrationImages([], 8)


def test_user_errors_are_one_line(int8, tmp_path, monkeypatch):
    for argv, match in ((["--calib", "0"], r"--calib 0: .* at least 1"),
                        ([], r"pass its Exp with -f")):
        with pytest.raises(ValueError, match=match) as e:
            run_openvino_cli(["-i", int8["onnx"], "--int8", *argv] + (["-f", FOREST_EXP] if argv else []))
        assert "\n" not in str(e.value)
    with pytest.raises(SystemExit) as e:  # the command line: exit status 2, no traceback
        openvino_main(["-i", int8["onnx"], "-f", FOREST_EXP, "--int8", "--calib", "0"])
    assert e.value.code == 2
    monkeypatch.setitem(__import__("sys").modules, "nncf", None)  # nncf not installed
    with pytest.raises(ValueError, match=r'pip install -e "\.\[deploy\]"'):
        run_openvino_cli(["-i", int8["onnx"], "-f", FOREST_EXP, "--int8"])


def test_onnx_export_int8_writes_a_qdq_file_that_onnxruntime_evaluates(int8):
    pytest.importorskip("onnxruntime")
    from yolox.deploy import OnnxRuntimeBackend
    from yolox.tools.export_onnx import run_onnx_cli

    tmp = int8["tmp"]
    path = run_onnx_cli(["-c", str(tmp / "forest.pth"), "-f", FOREST_EXP, "--int8", "--calib", "8",
                         "--output-name", str(tmp / "ort.onnx"), *_opts(tmp)])
    assert path == str(tmp / "ort_int8.onnx") and os.path.isfile(tmp / "ort.onnx")
    onnx = pytest.importorskip("onnx")
    ops = {n.op_type for n in onnx.load(path).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops, "the file must actually be quantised"
    assert OnnxRuntimeBackend(path).class_names == ["tree"]
    ap, ap50, _ = _eval(tmp, int8["onnx"])
    got, got50, _ = _eval(tmp, path)
    assert got50 == pytest.approx(ap50, abs=0.03) and got == pytest.approx(ap, abs=0.015)  # as for OpenVINO above
    with pytest.raises(ValueError, match="--calib 0"):
        run_onnx_cli(["-c", str(tmp / "forest.pth"), "-f", FOREST_EXP, "--int8", "--calib", "0", *_opts(tmp)])
