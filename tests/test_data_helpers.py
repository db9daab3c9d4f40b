"""Builders of small synthetic COCO / VOC folders for the data tests (no tests here)."""
import contextlib
import json
from pathlib import Path

import cv2
import numpy as np
from loguru import logger

REPO = Path(__file__).resolve().parents[1]
FOREST = REPO / "datasets" / "forest"


def smooth_image(h, w, seed):
    """A smooth random BGR image (interpolation differences stay small on it)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(max(h // 16, 2), max(w // 16, 2), 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def make_coco(root, sizes, boxes_per_image=2, name="train2017", json_file="instances_train2017.json", seed=0,
              extra_annotations=(), extra_images=()):
    """Write <root>/<name>/*.png and <root>/annotations/<json_file>; sizes: [(h, w)]. Returns the json dict."""
    root = Path(root)
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for i, (h, w) in enumerate(sizes, start=1):
        file_name = f"img{i:03d}.png"
        cv2.imwrite(str(root / name / file_name), smooth_image(h, w, seed + i))
        images.append({"id": i, "file_name": file_name, "width": w, "height": h})
        for _ in range(boxes_per_image):
            bw, bh = rng.uniform(0.2, 0.5) * w, rng.uniform(0.2, 0.5) * h
            x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": int(rng.choice([3, 7])),
                                "bbox": [x, y, bw, bh], "area": bw * bh, "iscrowd": 0})
    images.extend(extra_images)
    annotations.extend(extra_annotations)
    coco = {"images": images, "annotations": annotations,
            "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]}
    (root / "annotations" / json_file).write_text(json.dumps(coco))
    return coco


def make_voc(root, objects_per_image, year="2007", set_name="trainval", size=(60, 80)):
    """Write a VOC<year> folder; objects_per_image: [[(name, xmin, ymin, xmax, ymax, difficult)]] per image."""
    base = Path(root) / f"VOC{year}"
    for sub in ("Annotations", "ImageSets/Main", "JPEGImages"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    h, w = size
    names = []
    for i, objects in enumerate(objects_per_image):
        stem = f"{i:06d}"
        names.append(stem)
        cv2.imwrite(str(base / "JPEGImages" / f"{stem}.jpg"), smooth_image(h, w, i))
        objs = "".join(
            f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
            f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
            for n, x1, y1, x2, y2, d in objects
        )
        xml = f"<annotation><size><width>{w}</width><height>{h}</height><depth>3</depth></size>{objs}</annotation>"
        (base / "Annotations" / f"{stem}.xml").write_text(xml)
    (base / "ImageSets" / "Main" / f"{set_name}.txt").write_text("\n".join(names) + "\n")
    return names


@contextlib.contextmanager
def captured_warnings():
    """Collect loguru messages of level WARNING and above into a list."""
    messages = []
    sink = logger.add(lambda m: messages.append(str(m)), level="WARNING", format="{message}")
    try:
        yield messages
    finally:
        logger.remove(sink)


def forest_json(split):
    return json.loads((FOREST / "annotations" / f"{split}.json").read_text())

