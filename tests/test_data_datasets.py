"""COCODataset / VOCDetection on the bundled data and on folders made here: contents, caching, bad input."""
import json
import os
from collections import Counter

import cv2
import numpy as np
import pytest

from test_data_helpers import FOREST, captured_warnings, forest_json, make_coco, make_voc
from yolox.data import COCO_CLASSES, VOC_CLASSES, COCODataset, CorruptImageError, VOCDetection, get_yolox_datadir
from yolox.data.datasets import image_cache


# ---------------------------------------------------------------------------------------------- bundled forest data
@pytest.mark.parametrize("split", ["train", "val"])
def test_forest_dataset_matches_json(split):
    coco = forest_json(split)
    ds = COCODataset(str(FOREST), f"{split}.json", split, img_size=(416, 416))
    assert len(ds) == len(coco["images"])
    assert ds.class_ids == [1] and ds._classes == ("tree",)
    by_image = {}
    for ann in coco["annotations"]:
        x, y, w, h = ann["bbox"]
        by_image.setdefault(ann["image_id"], []).append([x, y, x + w, y + h])
    r = 416 / 400
    for i in range(len(ds)):
        img, target, img_info, img_id = ds.pull_item(i)
        expected = np.array(by_image.get(int(img_id[0]), []), dtype=np.float64).reshape(-1, 4) * r
        assert img.shape == (416, 416, 3) and img.dtype == np.uint8
        assert img_info == (400, 400)
        assert target.shape == (len(expected), 5)
        np.testing.assert_allclose(target[:, :4], expected, rtol=1e-9)
        assert (target[:, 4] == 0).all()
    negatives = sum(1 for im in coco["images"] if im["id"] not in by_image)
    assert sum(len(ds.load_anno(i)) == 0 for i in range(len(ds))) == negatives


def test_forest_counts_as_documented():
    train, val = forest_json("train"), forest_json("val")
    assert (len(train["images"]), len(train["annotations"])) == (49, 1017)
    assert (len(val["images"]), len(val["annotations"])) == (7, 134)
    for coco, split in ((train, "train"), (val, "val")):
        for im in coco["images"]:
            assert (FOREST / split / im["file_name"]).is_file()
        for ann in coco["annotations"]:
            x, y, w, h = ann["bbox"]
            assert w >= 2 and h >= 2 and x >= 0 and y >= 0 and x + w <= 400 and y + h <= 400
    assert "MIT License" in (FOREST / "LICENSE").read_text() and "Ben Weinstein" in (FOREST / "LICENSE").read_text()


def test_class_name_tables():
    assert len(COCO_CLASSES) == 80 and COCO_CLASSES[0] == "person" and COCO_CLASSES[-1] == "toothbrush"
    assert len(VOC_CLASSES) == 20 and VOC_CLASSES[0] == "aeroplane" and VOC_CLASSES[-1] == "tvmonitor"


def test_getitem_with_mosaic_flag_tuple_and_preproc(tmp_path):
    make_coco(tmp_path, [(40, 60), (50, 50)])
    seen = []
    ds = COCODataset(str(tmp_path), img_size=(64, 64), preproc=lambda img, t, dim: (seen.append(dim) or img, t))
    a = ds[(False, 1)]
    b = ds[1]
    assert np.array_equal(a[0], b[0]) and ds.enable_mosaic is False
    assert seen == [(64, 64), (64, 64)]
    assert b[3].tolist() == [2] and b[2] == (50, 50)


def test_category_ids_map_to_contiguous_classes(tmp_path):
    coco = make_coco(tmp_path, [(40, 60)], boxes_per_image=6)
    ds = COCODataset(str(tmp_path), img_size=(40, 60))
    assert ds.class_ids == [3, 7] and ds._classes == ("cat", "dog")
    got = ds.load_anno(0)[:, 4].tolist()
    assert got == [ds.class_ids.index(a["category_id"]) for a in coco["annotations"]]


def test_get_yolox_datadir(monkeypatch, tmp_path):
    monkeypatch.setenv("YOLOX_DATADIR", str(tmp_path))
    assert get_yolox_datadir() == str(tmp_path)
    monkeypatch.delenv("YOLOX_DATADIR")
    assert os.path.samefile(get_yolox_datadir(), FOREST.parent)


# ---------------------------------------------------------------------------------------------- VOC
def test_voc_folder_reads_back(tmp_path):
    make_voc(tmp_path, [
        [("dog", 11, 21, 41, 51, 0), ("cat", 1, 1, 20, 20, 1)],  # the difficult cat is not a training target
        [("person", 5, 5, 80, 60, 0)],
    ])
    ds = VOCDetection(str(tmp_path), image_sets=[("2007", "trainval")], img_size=(120, 160))
    assert len(ds) == 2 and ds._classes == VOC_CLASSES
    img, target, img_info, index = ds.pull_item(0)
    assert img.shape == (120, 160, 3) and img_info == (60, 80) and index == 0
    # 1-based VOC pixels -> 0-based, then scaled by 2 to the input size
    np.testing.assert_allclose(target, [[20, 40, 80, 100, VOC_CLASSES.index("dog")]])
    target1 = ds.pull_item(1)[1]
    np.testing.assert_allclose(target1, [[8, 8, 158, 118, VOC_CLASSES.index("person")]])
    # what the VOC evaluator reads: ids, _annopath and the image set
    assert os.path.isfile(ds._annopath % ds.ids[0]) and ds.image_set == [("2007", "trainval")]


def test_voc_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="VOC folder not found.*README"):
        VOCDetection(str(tmp_path / "nope"), image_sets=[("2007", "trainval")])
    make_voc(tmp_path, [[("unicorn", 1, 1, 10, 10, 0)]])
    with pytest.raises(FileNotFoundError, match=r"ImageSets.Main.test\.txt"):
        VOCDetection(str(tmp_path), image_sets=[("2007", "test")])
    with pytest.raises(ValueError, match=r"000000\.xml: object 0 has class 'unicorn'"):
        VOCDetection(str(tmp_path), image_sets=[("2007", "trainval")])


# ---------------------------------------------------------------------------------------------- caching
def test_ram_cache_gives_the_same_images(tmp_path):
    make_coco(tmp_path, [(40, 60), (70, 30), (32, 32)])
    plain = COCODataset(str(tmp_path), img_size=(64, 64))
    cached = COCODataset(str(tmp_path), img_size=(64, 64), cache=True, cache_type="ram")
    for i in range(3):
        a, b = plain.pull_item(i)[0], cached.pull_item(i)[0]
        assert np.array_equal(a, b)
        b[:] = 0  # a copy: the cache itself is untouched
    assert np.array_equal(plain.pull_item(0)[0], cached.pull_item(0)[0])
    assert not cached.pull_item(0, copy=False)[0].flags.writeable


def test_disk_cache_reused_and_invalidated(tmp_path):
    make_coco(tmp_path, [(40, 60), (70, 30)])
    first = COCODataset(str(tmp_path), img_size=(64, 64), cache="disk")
    cache_dir = first.cache_dir
    data_file = os.path.join(cache_dir, "images.u8")
    assert os.path.getsize(data_file) == 42 * 64 * 3 + 64 * 27 * 3
    stamp = os.stat(data_file).st_mtime_ns

    again = COCODataset(str(tmp_path), img_size=(64, 64), cache="disk")
    assert os.stat(data_file).st_mtime_ns == stamp  # reused, not rewritten
    assert np.array_equal(again.pull_item(1)[0], first.pull_item(1)[0])

    resized = COCODataset(str(tmp_path), img_size=(32, 32), cache="disk")  # input size changed: rebuilt
    assert resized.pull_item(0)[0].shape == (21, 32, 3)

    img_path = tmp_path / "train2017" / "img001.png"
    cv2.imwrite(str(img_path), np.full((40, 60, 3), 7, np.uint8))  # an image changed: rebuilt
    os.utime(img_path, ns=(stamp + 10**9, stamp + 10**9))
    changed = COCODataset(str(tmp_path), img_size=(32, 32), cache="disk")
    assert (changed.pull_item(0)[0] == 7).all()


def test_cache_refused_when_it_does_not_fit(tmp_path, monkeypatch):
    make_coco(tmp_path, [(40, 60)])
    monkeypatch.setattr(image_cache, "available_memory_bytes", lambda: 1 << 20)
    with pytest.raises(MemoryError, match=r"caching 1 images .* in RAM needs .* available; use `--cache disk`"):
        COCODataset(str(tmp_path), img_size=(64, 64), cache=True)

    class Usage:
        free = 1 << 20

    monkeypatch.setattr(image_cache.shutil, "disk_usage", lambda path: Usage)
    with pytest.raises(MemoryError, match=r"on disk in .*cache.* needs .* free"):
        COCODataset(str(tmp_path), img_size=(64, 64), cache="disk")


# ---------------------------------------------------------------------------------------------- bad input
def test_missing_folder_and_annotation_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"dataset folder not found: .*nowhere.*datasets/README.md"):
        COCODataset(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"annotation file not found: .*instances_train2017\.json.*README"):
        COCODataset(str(tmp_path))


def test_invalid_json(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "a.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"a\.json is not valid JSON"):
        COCODataset(str(tmp_path), "a.json")
    (tmp_path / "annotations" / "a.json").write_text(json.dumps({"annotations": []}))
    with pytest.raises(ValueError, match="not COCO format: it has no images or categories"):
        COCODataset(str(tmp_path), "a.json")


def test_annotation_referencing_missing_image_or_category(tmp_path):
    bad_img = {"id": 901, "image_id": 55, "category_id": 3, "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 0}
    make_coco(tmp_path, [(40, 60)], extra_annotations=[bad_img])
    with pytest.raises(ValueError, match=r"annotation id\(s\) 901 reference an image id that is not in 'images'"):
        COCODataset(str(tmp_path))
    bad_cat = {"id": 902, "image_id": 1, "category_id": 99, "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 0}
    make_coco(tmp_path, [(40, 60)], extra_annotations=[bad_cat])
    with pytest.raises(ValueError, match=r"annotation id\(s\) 902 reference a category id"):
        COCODataset(str(tmp_path))


def test_bad_boxes_clipped_or_dropped_in_one_warning(tmp_path):
    extra = [
        {"id": 801, "image_id": 1, "category_id": 3, "bbox": [-5, 10, 20, 10], "area": 200, "iscrowd": 0},
        {"id": 802, "image_id": 1, "category_id": 3, "bbox": [50, 30, 30, 30], "area": 900, "iscrowd": 0},
        {"id": 803, "image_id": 1, "category_id": 7, "bbox": [5, 5, 0, 10], "area": 0, "iscrowd": 0},
        {"id": 804, "image_id": 1, "category_id": 7, "bbox": [70, 5, 10, 10], "area": 100, "iscrowd": 0},
    ]
    make_coco(tmp_path, [(40, 60)], boxes_per_image=0, extra_annotations=extra)
    with captured_warnings() as messages:
        ds = COCODataset(str(tmp_path), img_size=(40, 60))
    assert len(messages) == 1, messages
    assert "2 box(es) clipped" in messages[0] and "801, 802" in messages[0]
    assert "2 dropped" in messages[0] and "803, 804" in messages[0]
    np.testing.assert_allclose(ds.load_anno(0), [[0, 10, 15, 20, 0], [50, 30, 60, 40, 0]])


def test_corrupt_image_raises_naming_the_file(tmp_path):
    make_coco(tmp_path, [(40, 60), (40, 60), (40, 60)])
    (tmp_path / "train2017" / "img002.png").write_bytes(b"definitely not a png")
    os.remove(tmp_path / "train2017" / "img003.png")
    ds = COCODataset(str(tmp_path), img_size=(64, 64))
    with pytest.raises(CorruptImageError, match=r"cannot decode image .*img002\.png \(image id 2 of"):
        ds.pull_item(1)
    with pytest.raises(CorruptImageError, match=r"image file not found: .*img003\.png"):
        ds.pull_item(2)
    with pytest.raises(CorruptImageError, match=r"img002\.png"):
        COCODataset(str(tmp_path), img_size=(64, 64), cache=True)


def test_corrupt_image_skipped_and_counted(tmp_path):
    make_coco(tmp_path, [(40, 60), (40, 60), (40, 60), (40, 60)])
    (tmp_path / "train2017" / "img002.png").write_bytes(b"garbage")
    os.remove(tmp_path / "train2017" / "img003.png")
    ds = COCODataset(str(tmp_path), img_size=(64, 64), on_corrupt_image="skip")
    with captured_warnings() as messages:
        img, target, _, img_id = ds.pull_item(1)
    assert img_id.tolist() == [4] and np.array_equal(target, ds.load_anno(3))  # the next readable image, its labels
    assert ds.num_skipped_images == 2
    assert "img002.png" in messages[0] and "1 image(s) skipped so far" in messages[0]
    assert "img003.png" in messages[1] and "2 image(s) skipped so far" in messages[1]
    with captured_warnings() as messages:
        cached = COCODataset(str(tmp_path), img_size=(64, 64), cache=True, on_corrupt_image="skip")
    assert any("2 unreadable image(s) skipped while caching" in m for m in messages)
    assert cached.pull_item(2)[3].tolist() == [4]


def test_image_size_disagreeing_with_json(tmp_path):
    make_coco(tmp_path, [(40, 60)])
    cv2.imwrite(str(tmp_path / "train2017" / "img001.png"), np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(CorruptImageError, match=r"img001\.png is 10x10 but .* says 60x40"):
        COCODataset(str(tmp_path)).pull_item(0)


def test_images_without_annotations_are_negatives(tmp_path):
    make_coco(tmp_path, [(40, 60), (40, 60)], boxes_per_image=0)
    ds = COCODataset(str(tmp_path), img_size=(64, 64))
    assert len(ds) == 2 and ds.pull_item(1)[1].shape == (0, 5)
    counts = Counter(len(ds.load_anno(i)) for i in range(len(ds)))
    assert counts == {0: 2}
