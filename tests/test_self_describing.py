"""Checkpoints that describe themselves: a short forest run, then demo, ONNX export and eval from -c alone; the class
names in the pictures and the exported files; official-style checkpoints refused without -f / -n; the Exp rebuilt
from a checkpoint for the depthwise nano and the YOLOFPN yolov3."""
import io
import json
import sys
from pathlib import Path

import pytest
import torch
from loguru import logger

from train_helpers import ROOT, load, read_metrics, run_dir, run_tool
from yolox.apps.class_names import class_names_for_exp
from yolox.exp import CHECKPOINT_KEYS, describe_run, exp_from_checkpoint, get_exp_by_name
from yolox.tools.cli import EXIT_USER_ERROR

TILE = sorted((ROOT / "datasets" / "forest" / "val").glob("*.jpg"))[0]


@pytest.fixture(autouse=True)
def _reset_logger():
    yield
    logger.remove()
    logger.add(sys.stderr)


@pytest.fixture(scope="module")
def trained(forest_one_epoch):
    """One epoch of the forest Exp at 128 px (the session's forest_one_epoch run, conftest.py): its output folder,
    its latest checkpoint and the AP its evaluation logged."""
    folder = forest_one_epoch.folder
    ap = [m["AP50_95"] for m in read_metrics(folder) if "AP50_95" in m][-1]
    return forest_one_epoch.output_dir, folder / "latest_ckpt.pth", ap


@pytest.fixture()
def drawn_names(monkeypatch):
    """The class names the demo's Predictor passes to vis, one list per drawn picture."""
    import yolox.apps.predictor as predictor

    calls, original = [], predictor.vis

    def recording_vis(img, boxes, scores, cls_ids, conf=0.5, class_names=None):
        calls.append(list(class_names))
        return original(img, boxes, scores, cls_ids, conf, class_names)

    monkeypatch.setattr(predictor, "vis", recording_vis)
    return calls


def _demo(weights, *flags):
    from yolox.tools.demo import run_demo_cli

    return run_demo_cli(["image", "-c", str(weights), "--path", str(TILE), "--save_result", "--conf", "1e-5", *flags])


def test_the_checkpoint_carries_class_names_settings_and_model_config(trained):
    _, ckpt_file, _ = trained
    ckpt = load(ckpt_file)
    for key in ("model", "optimizer", "start_epoch", "raw_model", "iteration", "rng", *CHECKPOINT_KEYS):
        assert key in ckpt, key
    assert ckpt["class_names"] == ["tree"]
    settings, config = ckpt["exp"], ckpt["model_config"]
    assert settings["val_ann"] == "val.json" and settings["data_dir"].endswith("forest")
    assert tuple(settings["test_size"]) == (128, 128) and settings["exp_name"] == "yolox_nano_forest"
    assert config["neck"] == "YOLOPAFPN" and config["depthwise"] is True and config["num_classes"] == 1
    assert config["exp_file"].endswith("yolox_nano_forest.py")


def test_demo_from_the_checkpoint_alone_labels_trees(trained, drawn_names):
    out, ckpt_file, _ = trained
    written = _demo(ckpt_file)
    assert len(written) == 1 and Path(written[0]).is_file()
    assert str(run_dir(out) / "vis_res") in written[0]
    assert drawn_names == [["tree"]]


def test_eval_from_the_checkpoint_alone_prints_the_ap_table(trained):
    from yolox.tools.eval import run_eval_cli

    out, ckpt_file, ap = trained
    ap50_95, _, summary = run_eval_cli(["-c", str(ckpt_file), "-b", "8", "-d", "1"])
    assert ap50_95 == pytest.approx(ap, abs=1e-4)  # the checkpoint's own test_size (128) and test_conf
    assert "Average Precision  (AP) @[ IoU=0.50:0.95" in (run_dir(out) / "val_log.txt").read_text()
    assert "tree" in summary  # the per-class table names the class
    with pytest.raises(FileNotFoundError, match="nowhere"):  # `key value` options override its data settings
        run_eval_cli(["-c", str(ckpt_file), "-b", "8", "-d", "1", "data_dir", str(out / "nowhere")])


def test_onnx_export_from_the_checkpoint_alone_carries_the_names(trained, drawn_names, tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from yolox.tools.export_onnx import run_onnx_cli

    _, ckpt_file, _ = trained
    path = run_onnx_cli(["-c", str(ckpt_file), "--output-name", str(tmp_path / "forest.onnx")])
    metadata = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert json.loads(metadata["yolox_class_names"]) == ["tree"] and metadata["yolox_num_classes"] == "1"

    written = _demo(path)
    assert len(written) == 1 and "/forest/vis_res/" in written[0]  # named after the file
    assert drawn_names == [["tree"]]

    # OpenVINO from the checkpoint alone (-c: ONNX first, then the IR), in another process: openvino is kept out of
    # this one (see conftest.py)
    script = ("import sys; from yolox.tools.export_openvino import run_openvino_cli; "
              "from yolox.deploy import OpenVINOBackend; "
              "print('NAMES', OpenVINOBackend(run_openvino_cli(['-c', sys.argv[1], '--output-name', sys.argv[2]]))"
              ".class_names)")
    if _has("openvino"):
        result = run_tool("-c", [script, str(ckpt_file), str(tmp_path / "ir" / "forest.xml")])
        assert result.returncode == 0, result.stderr[-2000:]
        assert "NAMES ['tree']" in result.stdout


def _has(module):
    import importlib.util

    return importlib.util.find_spec(module) is not None


def test_an_official_style_checkpoint_without_exp_exits_2_with_one_line(trained, tmp_path):
    from yolox.tools.demo import main as demo_main
    from yolox.tools.eval import main as eval_main
    from yolox.tools.export_onnx import main as onnx_main

    official = tmp_path / "official.pth"
    torch.save({"model": load(trained[1])["model"]}, official)
    with pytest.raises(ValueError, match="pass its Exp with -f <exp file> or -n <model name>. It holds a yolox-nano"):
        exp_from_checkpoint(str(official))
    for main, argv in ((demo_main, ["image", "-c", str(official), "--path", str(TILE)]),
                       (eval_main, ["-c", str(official)]),
                       (onnx_main, ["-c", str(official), "--output-name", str(tmp_path / "x.onnx")])):
        errors = []
        sink = logger.add(lambda m: errors.append(str(m)), level="ERROR", format="{message}")
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        logger.remove(sink)
        assert exit_info.value.code == EXIT_USER_ERROR
        assert len(errors) == 1 and errors[0].strip().count("\n") == 0, errors
        assert "official.pth" in errors[0] and "-f" in errors[0]


@pytest.mark.parametrize("name", ["yolox-nano", "yolov3"])
def test_exp_from_checkpoint_rebuilds_the_model(name):
    exp = get_exp_by_name(name)
    exp.num_classes, exp.class_names = 3, ["a", "b", "c"]
    exp.test_size, exp.test_conf, exp.nmsthre, exp.data_dir = (320, 288), 0.2, 0.4, "/data/mine"
    model = exp.get_model().eval()
    buffer = io.BytesIO()  # the description survives a weights-only load
    torch.save(describe_run(exp, model, class_names_for_exp(exp)), buffer)
    buffer.seek(0)
    ckpt = {"model": model.state_dict(), **torch.load(buffer, weights_only=True)}

    rebuilt = exp_from_checkpoint(ckpt)
    again = rebuilt.get_model().eval()
    again.load_state_dict(ckpt["model"], strict=True)
    assert (rebuilt.test_size, rebuilt.test_conf, rebuilt.nmsthre) == ((320, 288), 0.2, 0.4)
    assert (rebuilt.class_names, rebuilt.data_dir, rebuilt.exp_name) == (["a", "b", "c"], "/data/mine", exp.exp_name)
    x = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():  # the same activations too, not only the same tensors
        assert torch.equal(model(x), again(x))
