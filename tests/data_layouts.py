"""Copies of the bundled forest dataset in other layouts: Ultralytics YOLO-txt (data.yaml), a Roboflow COCO export."""
import json
import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOREST = ROOT / "datasets" / "forest"
SPLITS = {"train": "train", "val": "val"}  # forest image folder -> split


def _forest_json(split):
    return json.loads((FOREST / "annotations" / f"{split}.json").read_text())


def _link_or_copy(src, dst):
    try:
        os.symlink(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def yolo_label_lines(data, class_of_category=None):
    """{file_name: [label lines]} of a COCO dict: `class cx cy w h` normalised, every image (empty list: none)."""
    class_of_category = class_of_category or {c["id"]: k for k, c in enumerate(data["categories"])}
    images = {img["id"]: img for img in data["images"]}
    lines = {img["file_name"]: [] for img in data["images"]}
    for ann in data["annotations"]:
        img = images[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        cx, cy = (x + w / 2) / img["width"], (y + h / 2) / img["height"]
        lines[img["file_name"]].append(
            f"{class_of_category[ann['category_id']]} {cx!r} {cy!r} {w / img['width']!r} {h / img['height']!r}")
    return lines


def make_yolo_copy(dest, names=None, as_lists=False):
    """The forest data as YOLO-txt under `dest`: images/{train,val} (symlinks), labels/{train,val}, data.yaml.
    Images without boxes get no label file (background). as_lists: the splits are train.txt / val.txt listing the
    images in the json's order (a folder split is sorted by path). Returns the data.yaml path."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for folder, split in SPLITS.items():
        data = _forest_json(folder)
        (dest / "images" / split).mkdir(parents=True, exist_ok=True)
        (dest / "labels" / split).mkdir(parents=True, exist_ok=True)
        for file_name, lines in yolo_label_lines(data).items():
            _link_or_copy(FOREST / folder / file_name, dest / "images" / split / file_name)
            if lines:
                (dest / "labels" / split / Path(file_name).with_suffix(".txt")).write_text("\n".join(lines) + "\n")
        if as_lists:
            listed = "".join(f"images/{split}/{img['file_name']}\n" for img in data["images"])
            (dest / f"{split}.txt").write_text(listed)
    names = names or [c["name"] for c in _forest_json("train")["categories"]]
    yaml_path = dest / "data.yaml"
    sources = ("train.txt", "val.txt") if as_lists else ("images/train", "images/val")
    yaml_path.write_text(f"path: .\ntrain: {sources[0]}\nval: {sources[1]}\n"
                         f"nc: {len(names)}\nnames: [{', '.join(names)}]\n")
    return yaml_path


def make_roboflow_copy(dest):
    """The forest data as a Roboflow COCO export: train/_annotations.coco.json with its images beside it, and
    valid/. Exp settings: data_dir=dest, train_ann train/_annotations.coco.json, val_ann valid/..., names train,
    valid."""
    dest = Path(dest)
    for folder, out in (("train", "train"), ("val", "valid")):
        data = _forest_json(folder)
        (dest / out).mkdir(parents=True, exist_ok=True)
        for img in data["images"]:
            _link_or_copy(FOREST / folder / img["file_name"], dest / out / img["file_name"])
        (dest / out / "_annotations.coco.json").write_text(json.dumps(data))
    return dest


def roboflow_opts(dest):
    """`key value` Exp options that point the forest Exp at a Roboflow copy."""
    return ["data_dir", str(dest), "train_ann", "train/_annotations.coco.json",
            "val_ann", "valid/_annotations.coco.json", "train_name", "train", "val_name", "valid"]
