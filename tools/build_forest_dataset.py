#!/usr/bin/env python
"""Build datasets/forest (400x400 COCO-format tiles of tree crowns) from the deepforest 2.1.0 wheel (MIT licence).

    python tools/build_forest_dataset.py                  # pip download the wheel, write datasets/forest
    python tools/build_forest_dataset.py --wheel X.whl    # use a wheel already downloaded
"""
import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile

import cv2
import numpy as np
from loguru import logger

from yolox.data.tiling import parse_voc_boxes, tile_region, write_coco_split

WHEEL = "deepforest==2.1.0"
TILE = 400
# (image, its VOC xml) under deepforest/data/ of the wheel, and which region of it goes to which split. The YELL
# crop2 gives its bottom strip (one tile high) to val; the split is by region, so no tile of val overlaps train.
SOURCES = [
    ("2019_YELL_2_528000_4978000_image_crop2.png", "2019_YELL_2_528000_4978000_image_crop2.xml", "bottom_to_val"),
    ("2019_YELL_2_541000_4977000_image_crop.png", "2019_YELL_2_541000_4977000_image_crop.xml", "train"),
    ("OSBS_029.png", "OSBS_029.xml", "train"),
    ("SOAP_061.png", "SOAP_061.xml", "val"),
]


def download_wheel(dest):
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", WHEEL, "-d", dest], check=True)
    wheels = [f for f in os.listdir(dest) if f.startswith("deepforest-") and f.endswith(".whl")]
    if not wheels:
        raise FileNotFoundError(f"pip download put no deepforest wheel in {dest}")
    return os.path.join(dest, wheels[0])


def split_regions(rule, width, height):
    """[(split, (x0, y0, x1, y1))] for one source image."""
    if rule == "bottom_to_val":
        return [("train", (0, 0, width, height - TILE)), ("val", (0, height - TILE, width, height))]
    return [(rule, (0, 0, width, height))]


def build(wheel_path, out_dir):
    with open(wheel_path, "rb") as f:
        sha256 = hashlib.sha256(f.read()).hexdigest()
    splits = {"train": [], "val": []}
    total_source_boxes = 0
    with zipfile.ZipFile(wheel_path) as wheel:
        for image_name, xml_name, rule in SOURCES:
            data = np.frombuffer(wheel.read(f"deepforest/data/{image_name}"), dtype=np.uint8)
            image = cv2.imdecode(data, cv2.IMREAD_COLOR)
            boxes, _, (width, height) = parse_voc_boxes(wheel.read(f"deepforest/data/{xml_name}").decode())
            if image is None or image.shape[:2] != (height, width):
                raise ValueError(f"{image_name} in {wheel_path} does not decode to the {width}x{height} of {xml_name}")
            total_source_boxes += len(boxes)
            stem = os.path.splitext(image_name)[0]
            for split, region in split_regions(rule, width, height):
                for x, y, crop, tile_boxes in tile_region(image, boxes, region, TILE):
                    splits[split].append((f"{stem}_x{x}_y{y}.jpg", crop, tile_boxes))
        license_text = wheel.read("deepforest-2.1.0.dist-info/licenses/LICENSE").decode()

    info = {
        "description": "Tree crowns in aerial RGB images, 400x400 tiles, from the deepforest 2.1.0 wheel",
        "source": f"{os.path.basename(wheel_path)} (sha256 {sha256}), deepforest/data/",
        "license": "MIT, Copyright (c) 2019, Ben Weinstein",
    }
    for split, tiles in splits.items():
        n_img, n_box = write_coco_split(out_dir, split, tiles, "tree", jpeg_quality=90, info=info)
        logger.info(f"{split}: {n_img} tiles, {n_box} boxes")
    with open(os.path.join(out_dir, "LICENSE"), "w") as f:
        f.write(license_text)
    logger.info(f"{total_source_boxes} boxes in the source images; wheel sha256 {sha256}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheel", help="path of deepforest-2.1.0-py3-none-any.whl (downloaded with pip if omitted)")
    parser.add_argument("--out", default=os.path.join("datasets", "forest"), help="output folder")
    args = parser.parse_args(argv)
    if args.wheel:
        build(args.wheel, args.out)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            build(download_wheel(tmp), args.out)


if __name__ == "__main__":
    main()
