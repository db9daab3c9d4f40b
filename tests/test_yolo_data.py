"""The Ultralytics YOLO-txt layout (data.yaml + labels/*.txt): the same data as the COCO json it was made from, the
same training and AP as COCO json and a Roboflow export, each planted defect named by file and line, the index cache."""
import contextlib
import io
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from loguru import logger

from data_layouts import FOREST, make_roboflow_copy, make_yolo_copy, roboflow_opts
from train_helpers import FOREST_EXP, ONE_EPOCH, read_metrics, run_dir, tiny_opts
from yolox.data import COCODataset, YOLODataset, read_data_yaml
from yolox.data.datasets.yolo_index import label_path_of
from yolox.exp import get_exp


@pytest.fixture(autouse=True)
def _reset_logger():
    yield
    logger.remove()
    logger.add(sys.stderr)


@pytest.fixture
def log_lines():
    """Messages logged during the test (info and above)."""
    lines = []
    handler = logger.add(lambda m: lines.append(m.record["message"]), level="INFO")
    yield lines
    logger.remove(handler)


def _coco(split, size):
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints
        return COCODataset(str(FOREST), f"{split}.json", split, img_size=size)


def _by_name(dataset):
    """{image file name: (labels (n, 5), (h, w))} of a dataset, independent of its order."""
    return {os.path.basename(str(f)): (dataset.load_anno(i), dataset.img_info(i))
            for i, f in enumerate(dataset._file_names)}


# ---------------------------------------------------------------------------------------------- same data
def test_yolo_copy_has_the_labels_sizes_and_classes_of_the_coco_original(tmp_path):
    yaml_path = make_yolo_copy(tmp_path / "yolo")
    exp = get_exp(FOREST_EXP)
    exp.merge(["data_yaml", str(yaml_path), "num_classes", "3"])
    for split in ("train", "val"):
        yolo = exp.get_split_dataset(split, img_size=(352, 300))
        coco = _coco(split, (352, 300))
        got, expected = _by_name(yolo), _by_name(coco)
        assert got.keys() == expected.keys() and len(yolo) == len(coco)
        for name, (labels, hw) in expected.items():
            assert got[name][1] == hw
            np.testing.assert_allclose(got[name][0], labels, atol=1e-3)
        assert yolo.class_names == coco.class_names == ("tree",)
    assert exp.num_classes == 1 and list(exp.class_names) == ["tree"]  # from the yaml, not the Exp
    assert yolo.truncated_images == [] and yolo.coco.getCatIds() == [0]


def test_a_split_the_yaml_lacks_names_the_yaml_and_the_key(tmp_path):
    yaml_path = make_yolo_copy(tmp_path)
    with pytest.raises(ValueError, match=r"data\.yaml has no 'test' split"):
        YOLODataset(yaml_path, "test", img_size=(64, 64))


# ---------------------------------------------------------------------------------------------- same training
def _losses_and_aps(folder):
    """(loss rows, AP rows) of a run's metrics.jsonl."""
    metrics = read_metrics(folder)
    losses = [(m["iteration"], m["total_loss"], m["iou_loss"], m["conf_loss"], m["cls_loss"])
              for m in metrics if "total_loss" in m]
    aps = [(m["AP50_95"], m["AP50"]) for m in metrics if "AP50" in m]
    return losses, aps


def _tiny_run(out, *opts):
    """One epoch of the forest Exp at 128 px through tools/train.py in this process, with the options of the
    session's COCO-json run (forest_one_epoch, conftest.py: -b 8, tiny_opts(**ONE_EPOCH)): (loss rows, AP rows)."""
    from yolox.tools.train import run_train_cli

    run_train_cli(["-f", FOREST_EXP, "-d", "1", "-b", "8", *tiny_opts(out, **ONE_EPOCH, save_history_ckpt=False),
                   *opts])
    return _losses_and_aps(run_dir(out))


def test_coco_yolo_txt_and_roboflow_layouts_train_to_the_same_losses_and_ap(tmp_path, forest_one_epoch):
    # .txt lists keep the json's image order, so that the three runs see the same batches
    yaml_path = make_yolo_copy(tmp_path / "yolo", as_lists=True)
    roboflow = make_roboflow_copy(tmp_path / "roboflow")
    runs = [_losses_and_aps(forest_one_epoch.folder),  # the COCO json original
            _tiny_run(tmp_path / "yolo_run", "data_yaml", str(yaml_path)),
            _tiny_run(tmp_path / "roboflow_run", *roboflow_opts(roboflow))]
    (losses, aps), others = runs[0], runs[1:]
    assert losses and aps
    for other_losses, other_aps in others:
        assert [r[0] for r in other_losses] == [r[0] for r in losses]
        np.testing.assert_allclose(np.array(other_losses), np.array(losses), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.array(other_aps), np.array(aps), atol=1e-6)


# ---------------------------------------------------------------------------------------------- defects
def _write_set(root, labels, names="[a, b, c]", extra="", images=None):
    """A small YOLO-txt set: images/train/<k>.jpg (48x64) with labels/train/<k>.txt = labels[k] (None: no file)."""
    root = Path(root)
    (root / "images" / "train").mkdir(parents=True, exist_ok=True)
    (root / "labels" / "train").mkdir(parents=True, exist_ok=True)
    ok, jpeg = cv2.imencode(".jpg", np.full((48, 64, 3), 127, np.uint8))
    for name, text in labels.items():
        (root / "images" / "train" / f"{name}.jpg").write_bytes((images or {}).get(name, jpeg.tobytes()))
        if text is not None:
            (root / "labels" / "train" / f"{name}.txt").write_text(text)
    yaml_path = root / "data.yaml"
    yaml_path.write_text(f"train: images/train\nval: images/train\nnames: {names}\n{extra}")
    return yaml_path


@pytest.mark.parametrize("line, message", [
    ("3 0.5 0.5 0.2 0.2", r"class id 3 is not among the class ids of .*data\.yaml \(0, 1, 2\)"),
    ("0 0.5 nan 0.2 0.2", r"'nan'; every value must be a finite number"),
    ("0 0.5 0.5 wide 0.2", r"'wide'; every value must be a finite number"),
    ("0 0.5 0.5 0.2", r"has 4 values; a box line needs class cx cy w h"),
    ("0 0.1 0.1 0.2 0.2 0.3", r"has 6 values"),
    ("1.5 0.5 0.5 0.2 0.2", r"not a whole number"),
    ("0 320 240 50 40", r"far outside \[0, 1\]; YOLO labels are normalised"),
])
def test_a_bad_label_line_is_one_error_naming_the_file_and_line(tmp_path, line, message):
    yaml_path = _write_set(tmp_path, {"a": "0 0.5 0.5 0.1 0.1\n", "b": f"1 0.2 0.2 0.1 0.1\n\n{line}\n"})
    with pytest.raises(ValueError, match=message) as e:
        YOLODataset(yaml_path, "train", img_size=(64, 64))
    assert f"{tmp_path / 'labels' / 'train' / 'b.txt'}, line 3:" in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("yaml_text, message", [
    ("train: images/train\nval: images/train\nnc: 2\nnames: [a, b, c]\n", r"nc is 2 but names has 3"),
    ("train: images/train\nnames: [a]\n", r"has no val"),
    ("train: images/nowhere\nval: images/train\nnames: [a]\n", r"train source 'images/nowhere' .* does not exist"),
])
def test_a_bad_yaml_is_one_error_naming_it(tmp_path, yaml_text, message):
    _write_set(tmp_path, {"a": None})
    (tmp_path / "data.yaml").write_text(yaml_text)
    with pytest.raises(ValueError, match=message) as e:
        YOLODataset(tmp_path / "data.yaml", "train", img_size=(64, 64))
    assert str(tmp_path / "data.yaml") in str(e.value)
    with pytest.raises(ValueError, match="data.yaml not found"):
        read_data_yaml(tmp_path / "missing.yaml")


def test_a_split_without_images_is_an_error(tmp_path):
    (tmp_path / "images" / "train").mkdir(parents=True)
    (tmp_path / "data.yaml").write_text("train: images/train\nval: images/train\nnames: [a]\n")
    with pytest.raises(ValueError, match="has no images"):
        YOLODataset(tmp_path / "data.yaml", "train", img_size=(64, 64))


def test_segments_background_images_and_clipping(tmp_path, log_lines):
    yaml_path = _write_set(tmp_path, {
        "a": "2 0.25 0.25 0.75 0.25 0.5 0.75\n",  # a triangle: its enclosing box
        "b": "",  # empty label file: background
        "c": None,  # no label file: background
        "d": "0 0.95 0.5 0.2 0.5\r\n",  # reaches past the right edge: clipped (and a CRLF line)
    })
    ds = YOLODataset(yaml_path, "train", img_size=(48, 64))  # the images' own size: labels in pixels
    got = {os.path.basename(str(f)): ds.load_anno(i) for i, f in enumerate(ds._file_names)}
    np.testing.assert_allclose(got["a.jpg"], [[16, 12, 48, 36, 2]], atol=1e-6)
    assert got["b.jpg"].shape == got["c.jpg"].shape == (0, 5)
    np.testing.assert_allclose(got["d.jpg"], [[54.4, 12, 64, 36, 0]], atol=1e-6)
    assert len(ds) == 4 and ds.class_names == ("a", "b", "c")
    assert any("1 box(es) reach outside their image and were clipped" in m and "d.txt, line 1" in m
               for m in log_lines)


def test_names_as_a_dict_with_gaps_map_ids_in_sorted_order(tmp_path):
    yaml_path = _write_set(tmp_path, {"a": "7 0.5 0.5 0.5 0.5\n3 0.5 0.5 0.25 0.25\n"},
                           names="{7: truck, 3: car, 10: bus}")
    data = read_data_yaml(yaml_path)
    assert data.ids == (3, 7, 10) and data.names == ("car", "truck", "bus")
    ds = YOLODataset(data, "train", img_size=(48, 64))
    assert ds.class_names == ("car", "truck", "bus") and ds.class_ids == [3, 7, 10]
    assert ds.load_anno(0)[:, 4].tolist() == [1, 0]
    assert sorted(a["category_id"] for a in ds.coco.dataset["annotations"]) == [3, 7]


def test_txt_list_and_list_of_folders_splits(tmp_path):
    yaml_path = _write_set(tmp_path, {"a": "0 0.5 0.5 0.5 0.5\n", "b": None})
    (tmp_path / "images" / "more").mkdir()
    (tmp_path / "labels" / "more").mkdir()
    ok, jpeg = cv2.imencode(".jpg", np.zeros((20, 30, 3), np.uint8))
    (tmp_path / "images" / "more" / "c.PNG").write_bytes(cv2.imencode(".png", np.zeros((20, 30, 3), np.uint8))[1])
    (tmp_path / "labels" / "more" / "c.txt").write_text("1 0.5 0.5 1 1\n")
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "val.txt").write_text(f"../images/more/c.PNG\n\n{tmp_path / 'images' / 'train' / 'a.jpg'}\n")
    yaml_path.write_text("path: .\ntrain: [images/train, images/more]\nval: lists/val.txt\nnames: [x, y]\n")
    train = YOLODataset(yaml_path, "train", img_size=(64, 64))
    assert [os.path.basename(str(f)) for f in train._file_names] == ["a.jpg", "b.jpg", "c.PNG"]
    val = YOLODataset(yaml_path, "val", img_size=(64, 64))
    assert [os.path.basename(str(f)) for f in val._file_names] == ["c.PNG", "a.jpg"]
    assert val.img_info(0) == (20, 30)
    img, target, info, _ = val.pull_item(0)
    assert info == (20, 30) and target[:, 4].tolist() == [1]


def test_exif_rotated_image_has_the_size_cv2_reads(tmp_path):
    from PIL import Image

    buffers = {}
    for orientation in (1, 6, 8):
        exif = Image.Exif()
        exif[0x0112] = orientation
        out = io.BytesIO()
        Image.fromarray(np.zeros((30, 50, 3), np.uint8)).save(out, "JPEG", exif=exif.tobytes())
        buffers[f"o{orientation}"] = out.getvalue()
    yaml_path = _write_set(tmp_path, {k: None for k in buffers}, images=buffers)
    ds = YOLODataset(yaml_path, "train", img_size=(64, 64))
    for i, f in enumerate(ds._file_names):
        assert ds.img_info(i) == cv2.imread(str(f)).shape[:2]
    assert [ds.img_info(i) for i in range(3)] == [(30, 50), (50, 30), (50, 30)]
    assert ds.load_image(1).shape[:2] == (50, 30)  # the size check of the decode agrees


def test_unreadable_and_truncated_images(tmp_path, log_lines):
    ok, jpeg = cv2.imencode(".jpg", np.full((48, 64, 3), 127, np.uint8))
    images = {"bad": b"not an image", "cut": jpeg.tobytes()[:-40]}
    yaml_path = _write_set(tmp_path, {"bad": None, "cut": None, "good": "0 0.5 0.5 0.2 0.2\n"}, images=images)
    with pytest.raises(ValueError, match=r"cannot read the header of image .*bad\.jpg"):
        YOLODataset(yaml_path, "train", img_size=(64, 64))
    ds = YOLODataset(yaml_path, "train", img_size=(64, 64), on_corrupt_image="skip")
    assert len(ds) == 2 and ds.skipped_images == [str(tmp_path / "images" / "train" / "bad.jpg")]
    assert ds.truncated_images == [str(tmp_path / "images" / "train" / "cut.jpg")]
    assert any("1 image(s) whose header cannot be read are left out" in m for m in log_lines)


def test_train_command_with_a_bad_label_exits_2_with_one_line(tmp_path, capsys):
    # the command's main in this process (a fresh interpreter costs seconds of imports; tools/train.py itself runs as
    # a new process in test_train and test_bad_input)
    from yolox.tools.train import main as train_main

    yaml_path = _write_set(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n", "b": "5 0.5 0.5 0.2 0.2\n"}, names="[tree]")
    logger.remove()
    logger.add(lambda message: sys.stderr.write(message), level="INFO")  # whatever stderr is when it writes
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        train_main(["-f", FOREST_EXP, "-d", "1", "-b", "2", "data_yaml", str(yaml_path),
                    "output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err[-2000:]
    errors = [line for line in err.splitlines() if "| ERROR" in line]
    assert len(errors) == 1 and "Traceback" not in err
    assert f"{tmp_path / 'labels' / 'train' / 'b.txt'}, line 1: class id 5" in errors[0]


# ---------------------------------------------------------------------------------------------- cache
def test_the_index_is_cached_and_rebuilt_when_a_label_or_image_changes(tmp_path, log_lines):
    yaml_path = _write_set(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n", "b": None})
    first = YOLODataset(yaml_path, "train", img_size=(64, 64))
    assert not first.index_from_cache
    assert (tmp_path / "labels" / "train.yolox_cache.npz").is_file()
    assert not [p for p in (tmp_path / "labels").iterdir() if p.name.endswith(".tmp")]
    second = YOLODataset(yaml_path, "train", img_size=(64, 64))
    assert second.index_from_cache and any("read from cache" in m for m in log_lines)
    np.testing.assert_array_equal(second._labels, first._labels)

    label = tmp_path / "labels" / "train" / "a.txt"
    label.write_text("1 0.5 0.5 0.4 0.4\n")
    os.utime(label, ns=(label.stat().st_mtime_ns + 10**9,) * 2)  # a later mtime even on coarse clocks
    changed = YOLODataset(yaml_path, "train", img_size=(64, 64))
    assert not changed.index_from_cache and changed.load_anno(0)[:, 4].tolist() == [1]
    (tmp_path / "labels" / "train" / "b.txt").write_text("2 0.5 0.5 0.2 0.2\n")  # a label file added
    added = YOLODataset(yaml_path, "train", img_size=(64, 64))
    assert not added.index_from_cache and added.load_anno(1)[:, 4].tolist() == [2]
    (tmp_path / "images" / "train" / "b.jpg").unlink()  # an image removed
    removed = YOLODataset(yaml_path, "train", img_size=(64, 64))
    assert not removed.index_from_cache and len(removed) == 1
    assert YOLODataset(yaml_path, "train", img_size=(64, 64)).index_from_cache


def test_the_cache_keeps_a_class_error_and_skips_an_unwritable_folder(tmp_path, monkeypatch):
    yaml_path = _write_set(tmp_path, {"a": "2 0.5 0.5 0.2 0.2\n"})
    YOLODataset(yaml_path, "train", img_size=(64, 64))
    yaml_path.write_text("train: images/train\nval: images/train\nnames: [a, b]\n")  # class 2 is gone
    with pytest.raises(ValueError, match=r"a\.txt, line 1: class id 2 is not among"):
        YOLODataset(yaml_path, "train", img_size=(64, 64))

    import yolox.data.datasets.yolo_index as yolo_index

    def refuse(*args, **kwargs):
        raise PermissionError("read-only")

    monkeypatch.setattr(yolo_index.tempfile, "mkstemp", refuse)
    (tmp_path / "labels" / "train.yolox_cache.npz").unlink()
    yaml_path.write_text("train: images/train\nval: images/train\nnames: [a, b, c]\n")
    assert len(YOLODataset(yaml_path, "train", img_size=(64, 64))) == 1
    assert not (tmp_path / "labels" / "train.yolox_cache.npz").exists()


def test_label_path_replaces_the_last_images_folder():
    sep = os.sep
    assert label_path_of(f"{sep}d{sep}images{sep}x{sep}images{sep}a{sep}b.jpeg") == \
        f"{sep}d{sep}images{sep}x{sep}labels{sep}a{sep}b.txt"
    assert label_path_of(f"{sep}d{sep}pics{sep}b.png") == f"{sep}d{sep}pics{sep}b.txt"
