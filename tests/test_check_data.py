"""The data check (yolox.data.data_check, tools/check_data.py, the trainer's data report) on copies of the bundled
forest tiles with one planted defect each."""
import json
import shutil
import sys

import cv2
import numpy as np
import pytest
import torch
from loguru import logger

from train_helpers import FOREST_EXP, ONE_EPOCH, ROOT, load, read_metrics, run_dir, run_tool, train_argv
from yolox.data import CorruptImageError, check_exp_data
from yolox.data.data_check import format_report, write_data_pictures
from yolox.exp import get_exp

FOREST = ROOT / "datasets" / "forest"
CHECK_PY = str(ROOT / "tools" / "check_data.py")
TRAIN_JSON = json.loads((FOREST / "annotations" / "train.json").read_text())


@pytest.fixture(autouse=True)
def _reset_logger():
    yield
    logger.remove()
    logger.add(sys.stderr)


@pytest.fixture
def forest(tmp_path):
    """A private copy of datasets/forest."""
    copy = tmp_path / "forest"
    shutil.copytree(FOREST, copy)
    return copy


def _exp(data_dir, *opts):
    exp = get_exp(FOREST_EXP)
    exp.merge(["data_dir", str(data_dir), "input_size", "128,128", "test_size", "128,128",
               "output_dir", str(data_dir.parent / "out"), *opts])
    return exp


def _edit_json(data_dir, split, edit):
    path = data_dir / "annotations" / f"{split}.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return path


def _image(data_dir, split="train", k=0):
    return data_dir / split / sorted(json.loads((data_dir / "annotations" / f"{split}.json").read_text())["images"],
                                     key=lambda im: im["id"])[k]["file_name"]


def _check_argv(data_dir, *extra):
    return ["-f", FOREST_EXP, "--output", str(data_dir.parent / "pics"), "data_dir", str(data_dir),
            "input_size", "128,128", "test_size", "128,128", *extra]


def _check_cmd(data_dir, *extra):
    """tools/check_data.py in a new process, as a user runs it."""
    return run_tool(CHECK_PY, _check_argv(data_dir, *extra), timeout=600)


def _check_main(capsys, data_dir, *extra):
    """The command's main in this process (what tools/check_data.py runs, without seconds of imports in a new
    interpreter; _check_cmd runs the script itself): (exit status, stderr)."""
    from yolox.tools.check_data import main

    logger.remove()
    logger.add(lambda message: sys.stderr.write(message), level="INFO")  # whatever stderr is when it writes
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(_check_argv(data_dir, *extra))
    return exit_info.value.code, capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- clean data
def test_the_clean_forest_summary(forest):
    report = check_exp_data(_exp(forest))
    train, val = report.splits["train"], report.splits["val"]
    annotated = {a["image_id"] for a in TRAIN_JSON["annotations"]}
    assert (train.images, train.boxes) == (49, len(TRAIN_JSON["annotations"])) == (49, 1017)
    assert train.background_images == 49 - len(annotated)
    assert train.boxes_per_class.tolist() == [1017] and train.images_per_class.tolist() == [len(annotated)]
    assert (val.images, val.boxes) == (7, 134)
    assert train.class_names == ("tree",) and train.category_ids == (1,)
    # box sizes at 128 px: the json's widths scaled by 128 / 400
    widths = np.array([a["bbox"][2] for a in TRAIN_JSON["annotations"]]) * 128 / 400
    assert train.width_quantiles == pytest.approx(np.percentile(widths, [5, 50, 95]))
    assert report.warnings() == [] and report.fatal() == [] and report.notes() == []
    assert train.duplicates == [] and train.truncated == [] and train.size_mismatch == []
    assert train.box_changes == {"clipped": [], "dropped": []}
    text = format_report(report)
    assert "tree" in text and "1017" in text and "box width 5%/50%/95%" in text


# ---------------------------------------------------------------------------------------------- defects
def test_zero_based_category_ids_are_fine_and_reported(forest):
    def zero_based(data):
        data["categories"][0]["id"] = 0
        for a in data["annotations"]:
            a["category_id"] = 0

    _edit_json(forest, "train", zero_based)
    report = check_exp_data(_exp(forest))
    train = report.splits["train"]
    assert train.category_ids == (0,) and train.boxes_per_class.tolist() == [1017]
    assert report.fatal() == [] and report.warnings() == []
    assert any("category ids 0 are class indices 0..0" in n for n in report.notes())


def test_a_nan_coordinate_stops_the_command_with_one_line(forest):
    path = _edit_json(forest, "train", lambda d: d["annotations"][3]["bbox"].__setitem__(1, float("nan")))
    result = _check_cmd(forest)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and str(path) in errors[0] and "nan" in errors[0]
    assert "Traceback" not in result.stderr


def test_a_string_coordinate_is_fatal(forest):
    _edit_json(forest, "train", lambda d: d["annotations"][0]["bbox"].__setitem__(2, "18"))
    with pytest.raises(ValueError, match=r"train\.json: annotation id 1 has bbox .*'18'"):
        check_exp_data(_exp(forest))


def test_an_annotation_file_without_annotations_stops_the_command(forest, capsys):
    path = _edit_json(forest, "val", lambda d: d.pop("annotations"))
    code, err = _check_main(capsys, forest)
    assert code == 2, err[-2000:]
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and str(path) in errors[0] and "no 'annotations' list" in errors[0]


def test_a_truncated_jpeg_is_a_warning_naming_it(forest):
    img = _image(forest, k=5)
    data = img.read_bytes()
    img.write_bytes(data[: len(data) // 2])
    report = check_exp_data(_exp(forest))
    assert report.splits["train"].truncated == [str(img)]
    assert report.fatal() == []
    assert [w for w in report.warnings() if "truncated JPEG" in w and str(img) in w]


def test_a_missing_image_stops_as_training_would_and_is_a_warning_with_skip(forest, capsys):
    img = _image(forest, k=2)
    img.unlink()
    report = check_exp_data(_exp(forest))  # on_corrupt_image "raise": training would stop at it
    assert report.splits["train"].missing == [str(img)]
    (error, message), = report.fatal()
    assert error is CorruptImageError and str(img) in message and "on_corrupt_image" in message

    report = check_exp_data(_exp(forest, "on_corrupt_image", "skip"))
    assert report.fatal() == []
    assert [w for w in report.warnings() if str(img) in w and "skipped" in w]

    code, err = _check_main(capsys, forest)
    assert code == 2, err[-2000:]
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and f"image file not found: {img}" in errors[0]


def test_an_image_of_another_size_than_the_json_says(forest):
    img = _image(forest, "val", k=1)
    cv2.imwrite(str(img), cv2.resize(cv2.imread(str(img)), (300, 200)))
    report = check_exp_data(_exp(forest))
    assert report.splits["val"].size_mismatch == [(str(img), (200, 300), (400, 400), False)]
    (error, message), = report.fatal()  # evaluation always stops at such an image
    assert error is CorruptImageError and f"{img} is 300x200 but" in message and "400x400" in message


def test_duplicate_images_within_and_across_splits(forest):
    a, b = _image(forest, k=0), _image(forest, k=7)
    shutil.copyfile(a, b)
    val = _image(forest, "val", k=0)
    shutil.copyfile(_image(forest, k=10), val)
    report = check_exp_data(_exp(forest))
    assert report.splits["train"].duplicates == [[str(a), str(b)]]
    assert report.cross_duplicates == [(("train", str(_image(forest, k=10))), ("val", str(val)))]
    warnings = report.warnings()
    assert [w for w in warnings if "identical image files" in w and str(b) in w]
    assert [w for w in warnings if str(val) in w and "trained on" in w]
    assert report.fatal() == []


def test_clipped_and_dropped_boxes_are_counted_with_their_ids(forest):
    def edit(data):
        data["annotations"][0]["bbox"] = [390.0, 10.0, 30.0, 20.0]  # reaches 20 px past the right edge
        data["annotations"][1]["bbox"] = [10.0, 10.0, 0.0, 20.0]  # no width
        data["annotations"][1]["area"] = 0

    _edit_json(forest, "train", edit)
    ids = [a["id"] for a in TRAIN_JSON["annotations"][:2]]
    report = check_exp_data(_exp(forest), scan_files=False)
    train = report.splits["train"]
    assert train.box_changes == {"clipped": [ids[0]], "dropped": [ids[1]]}
    assert train.boxes == 1016
    assert [w for w in report.warnings() if "1 box(es) clipped" in w and str(ids[0]) in w]
    assert "boxes clipped" in format_report(report)


# ---------------------------------------------------------------------------------------------- pictures
def _decoded(path):
    img = cv2.imread(str(path))
    assert img is not None, path
    return img


def test_batch_pictures_after_mosaic_and_of_val(forest, tmp_path):
    exp = _exp(forest)
    report = check_exp_data(exp, scan_files=False)
    exp.dataset = report.datasets["train"]
    source = exp.get_data_loader(batch_size=4, is_distributed=False).dataset
    state = (torch.get_rng_state(), np.random.get_state()[1].copy())
    paths = write_data_pictures(tmp_path / "pics", source, report.datasets["val"], ("tree",), batch_size=4)
    assert torch.equal(state[0], torch.get_rng_state()) and (state[1] == np.random.get_state()[1]).all()
    assert sorted(p.rsplit("/", 1)[1] for p in map(str, paths)) == [
        "train_batch0.jpg", "train_batch1.jpg", "train_batch2.jpg", "val_batch0.jpg"]
    assert _decoded(tmp_path / "pics" / "train_batch0.jpg").shape == (256, 256, 3)  # 2 x 2 tiles of 128
    assert _decoded(tmp_path / "pics" / "val_batch0.jpg").shape == (384, 384, 3)  # 7 images: 3 x 3 tiles
    assert not [p for p in (tmp_path / "pics").iterdir() if ".tmp" in p.name]


def test_the_command_writes_labels_png_and_the_batches_into_the_run_folder(forest):
    pytest.importorskip("matplotlib")
    from yolox.tools.check_data import run_check_data_cli

    run_check_data_cli(["-f", FOREST_EXP, "-b", "4", "data_dir", str(forest), "input_size", "128,128",
                        "test_size", "128,128", "output_dir", str(forest.parent / "out")])
    folder = forest.parent / "out" / "yolox_nano_forest" / "data_check"
    assert {p.name for p in folder.iterdir()} == {"labels.png", "train_batch0.jpg", "train_batch1.jpg",
                                                  "train_batch2.jpg", "val_batch0.jpg"}
    h, w = _decoded(folder / "labels.png").shape[:2]
    assert 300 < h < w < 2000


# ---------------------------------------------------------------------------------------------- before training
def test_a_seeded_run_trains_the_same_with_and_without_the_data_check(tmp_path, forest_one_epoch):
    from yolox.tools.train import run_train_cli

    # without: the session's one-epoch run (forest_one_epoch, conftest.py: check_data False, batch 8, ONE_EPOCH).
    # This run skips its evaluation (eval_interval 5) and history checkpoints: both come after the epoch's training
    # and change neither its losses nor its weights
    run_train_cli(train_argv(tmp_path / "with", batch=8, check_data=True, **ONE_EPOCH, eval_interval=5,
                             save_history_ckpt=False))
    with_check, without = run_dir(tmp_path / "with"), forest_one_epoch.folder

    keys = ("iteration", "total_loss", "iou_loss", "conf_loss", "cls_loss", "l1_loss", "lr")
    a = [tuple(m.get(k) for k in keys) for m in read_metrics(with_check) if "total_loss" in m]
    b = [tuple(m.get(k) for k in keys) for m in read_metrics(without) if "total_loss" in m]
    assert len(a) == 7 and a == b  # bit-identical losses
    wa, wb = load(with_check / "latest_ckpt.pth")["model"], load(without / "latest_ckpt.pth")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)

    assert {"train_batch0.jpg", "val_batch0.jpg"} <= {p.name for p in (with_check / "data_check").iterdir()}
    assert not (without / "data_check").exists()
    log = (with_check / "train_log.txt").read_text()
    assert "data check (pictures in" in log and "1017" in log and "Model Summary: Params:" in log
    assert ", input size 128x128" in log
    assert "(backbone): YOLOPAFPN(" not in log  # the module tree is at debug level now
