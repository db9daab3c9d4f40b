"""Mistakes a user can make in train, eval, demo and export: one clear log line naming the file or value, exit 2."""
import json
import shutil
import sys

import pytest
import torch
from loguru import logger

from train_helpers import EVAL_PY, FOREST_EXP, ROOT, run_tool, train_argv
from yolox.tools.cli import run_cli
from yolox.tools.demo import run_demo_cli
from yolox.tools.eval import run_eval_cli
from yolox.tools.export_onnx import run_onnx_cli
from yolox.tools.train import run_train_cli
from yolox.exp import get_exp

S_EXP = str(ROOT / "exps" / "yolox_s.py")


@pytest.fixture(autouse=True)
def _reset_logger():
    logger.remove()
    logger.add(lambda message: sys.stderr.write(message), level="INFO")  # whatever stderr is when it writes
    yield
    logger.remove()
    logger.add(sys.stderr)


def user_error(capsys, main, argv):
    """Run a command's main as its tool does; returns its one error line (asserting exit 2, no traceback)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err[-3000:]
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "| ERROR" in line]
    assert len(errors) == 1, err[-3000:]
    return errors[0]


@pytest.fixture
def forest_copy(tmp_path):
    """A copy of datasets/forest (the val split only) that a test may break."""
    src = ROOT / "datasets" / "forest"
    dst = tmp_path / "forest"
    (dst / "annotations").mkdir(parents=True)
    shutil.copytree(src / "val", dst / "val")
    shutil.copy(src / "annotations" / "val.json", dst / "annotations" / "val.json")
    return dst


@pytest.fixture(scope="module")
def nano_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "yolox_nano.pth"
    torch.save({"model": get_exp(None, "yolox-nano").get_model().state_dict()}, path)
    return str(path)


@pytest.fixture(scope="module")
def forest_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "forest.pth"
    torch.save({"model": get_exp(FOREST_EXP).get_model().state_dict()}, path)
    return str(path)


def _corrupt_first_image(folder):
    images = json.loads((folder / "annotations" / "val.json").read_text())["images"]
    bad = folder / "val" / images[0]["file_name"]
    bad.write_bytes(b"this is not a jpeg")
    return bad


# ---------------------------------------------------------------------------------------------------- train
def test_train_missing_annotation_file(capsys, tmp_path):
    line = user_error(capsys, run_train_cli, train_argv(tmp_path, train_ann="missing.json"))
    assert "annotation file not found" in line and "missing.json" in line


def test_train_empty_annotation_file(capsys, tmp_path, forest_copy):
    (forest_copy / "annotations" / "val.json").write_text("")
    line = user_error(capsys, run_train_cli, train_argv(tmp_path, data_dir=forest_copy, train_ann="val.json",
                                                        train_name="val"))
    assert "val.json is not valid JSON" in line


def test_train_annotation_file_without_images(capsys, tmp_path, forest_copy):
    (forest_copy / "annotations" / "val.json").write_text(json.dumps(
        {"images": [], "annotations": [], "categories": [{"id": 1, "name": "tree"}]}))
    line = user_error(capsys, run_train_cli, train_argv(tmp_path, data_dir=forest_copy, train_ann="val.json",
                                                        train_name="val"))
    assert "the training set has no images" in line and "val.json" in line


def test_train_unwritable_output_folder(capsys, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    line = user_error(capsys, run_train_cli, train_argv(blocker / "out"))
    assert "cannot write to the output folder" in line and "a_file" in line and "output_dir" in line


def test_train_batch_not_divisible_by_the_processes(capsys, tmp_path):
    argv = train_argv(tmp_path, batch=7)
    argv[argv.index("-d") + 1] = "2"
    line = user_error(capsys, run_train_cli, argv)
    assert "-b 7" in line and "2 processes" in line and "-b 6" in line


def test_train_resume_without_a_checkpoint(capsys, tmp_path):
    line = user_error(capsys, run_train_cli, train_argv(tmp_path, "--resume"))
    assert "--resume found no checkpoint" in line and "latest_ckpt.pth" in line


def test_train_fine_tune_checkpoint_missing(capsys, tmp_path):
    line = user_error(capsys, run_train_cli, train_argv(tmp_path, "-c", str(tmp_path / "nope.pth")))
    assert "nope.pth" in line


def test_train_zero_devices_and_unknown_option(capsys, tmp_path):
    argv = train_argv(tmp_path)
    argv[argv.index("-d") + 1] = "0"
    assert "-d/--devices must be at least 1" in user_error(capsys, run_train_cli, argv)
    line = user_error(capsys, run_train_cli, train_argv(tmp_path, max_epochs=3))
    assert "no attribute 'max_epochs'" in line and "max_epoch" in line


def test_train_with_a_checkpoint_of_another_model_size(capsys, tmp_path, nano_ckpt):
    line = user_error(capsys, run_train_cli, ["-f", S_EXP, "-c", nano_ckpt, "-b", "8", "output_dir", str(tmp_path)])
    assert "holds another model" in line and "It holds a yolox-nano" in line


def test_train_corrupt_image_is_refused_or_skipped(capsys, tmp_path, forest_copy):
    shutil.copytree(forest_copy / "val", forest_copy / "val_clean")
    bad = _corrupt_first_image(forest_copy)
    opts = dict(data_dir=forest_copy, train_ann="val.json", train_name="val", val_ann="val.json",
                val_name="val_clean", data_num_workers=1, max_epoch=1)
    # workers re-raise errors with their traceback inside the message: the user still sees one line
    line = user_error(capsys, run_train_cli, train_argv(tmp_path / "raise", batch=4, **opts))
    assert "CorruptImageError" in line and bad.name in line
    # with "skip" training goes on without that image (evaluation always refuses: it would bias the AP)
    run_train_cli(train_argv(tmp_path / "skip", batch=4, on_corrupt_image="skip", **opts))
    log = (tmp_path / "skip" / "yolox_nano_forest" / "train_log.txt").read_text()  # the worker logged it
    assert f"skipping: cannot decode image {bad}" in log


# ---------------------------------------------------------------------------------------------------- eval, demo, export
def test_eval_corrupt_image_in_the_val_set(capsys, tmp_path, forest_copy, forest_ckpt):
    bad = _corrupt_first_image(forest_copy)
    line = user_error(capsys, run_eval_cli, ["-f", FOREST_EXP, "-c", forest_ckpt, "-b", "4", "data_dir",
                                             str(forest_copy), "data_num_workers", "1", "output_dir", str(tmp_path)])
    assert "CorruptImageError" in line and bad.name in line and "cannot decode" in line


def test_eval_corrupt_image_as_a_new_user_sees_it(tmp_path, forest_copy, forest_ckpt):
    _corrupt_first_image(forest_copy)
    result = run_tool(EVAL_PY, ["-f", FOREST_EXP, "-c", forest_ckpt, "-b", "4", "data_dir", str(forest_copy),
                                "output_dir", str(tmp_path)])
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.count("| ERROR") == 1


def test_demo_without_an_existing_path(capsys, tmp_path):
    # the official default --path ./assets/dog.jpg is not shipped: no --path is one line, before any model is built
    line = user_error(capsys, run_demo_cli, ["image", "-f", FOREST_EXP])
    assert "no --path given" in line and "give an image or a folder of images" in line and "with --path" in line
    line = user_error(capsys, run_demo_cli, ["video", "-f", FOREST_EXP, "--path", str(tmp_path / "clip.mp4")])
    assert "clip.mp4" in line and "does not exist" in line and "a video (demo video) with --path" in line


@pytest.mark.parametrize("main, extra", [(run_eval_cli, ["-b", "2"]), (run_demo_cli, None), (run_onnx_cli, None)])
def test_checkpoint_of_another_model_size(capsys, tmp_path, nano_ckpt, main, extra):
    if main is run_demo_cli:
        argv = ["image", "-f", S_EXP, "-c", nano_ckpt, "--path", str(ROOT / "datasets" / "forest" / "val"),
                "--device", "cpu"]
    elif main is run_onnx_cli:
        argv = ["-f", S_EXP, "-c", nano_ckpt, "--output-name", str(tmp_path / "m.onnx")]
    else:
        argv = ["-f", S_EXP, "-c", nano_ckpt, *extra, "output_dir", str(tmp_path)]
    line = user_error(capsys, main, argv)
    assert "holds another model than the one the Exp builds" in line
    assert "backbone.backbone.stem.conv.conv.weight: checkpoint (16, 12, 3, 3), model (32, 12, 3, 3)" in line
    assert "It holds a yolox-nano (-n yolox-nano, or exps/yolox_nano.py)" in line
    assert len(line) < 1500
