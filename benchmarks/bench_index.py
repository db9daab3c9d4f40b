#!/usr/bin/env python
"""Indexing speed of a YOLO-txt split (yolox.data.YOLODataset): N generated images with random label files, the
first index (headers read, labels parsed, cache written) and the cached one (files only stat-ed), medians of rounds.

    python benchmarks/bench_index.py                      # 100000 images in a temp folder, table
    python benchmarks/bench_index.py -n 20000 --rounds 5 --json result.json
    python benchmarks/bench_index.py --dir /data/bench    # generate (once) and keep the files there
"""
import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root: run anywhere

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from loguru import logger  # noqa: E402
from tabulate import tabulate  # noqa: E402

from yolox.data import YOLODataset, read_data_yaml  # noqa: E402
from yolox.data.datasets.yolo_index import cache_path_of, list_split_images, load_split_index  # noqa: E402

__all__ = ["parse_args", "generate_split", "main"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", "--images", type=int, default=100000, help="images in the generated split")
    p.add_argument("--dir", default=None, help="folder to generate into and keep (default: a temp folder, removed)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds of each measurement (median reported)")
    p.add_argument("--threads", type=int, default=None, help="header-reading threads (default: the library's)")
    p.add_argument("--max-boxes", type=int, default=20, help="boxes per label file: 0 to this, uniformly")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the result as JSON to this file")
    return p.parse_args(argv)


def _label_text(rng, n):
    """A label file of n random boxes (class cx cy w h), the way exporters write them."""
    wh = rng.uniform(0.01, 0.3, size=(n, 2))
    cxy = rng.uniform(wh / 2, 1 - wh / 2)
    cls = rng.integers(0, 3, size=n)
    return "".join(f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, (x, y), (w, h) in zip(cls, cxy, wh))


def generate_split(root, n, max_boxes=20, seed=0):
    """images/train (the same small JPEG n times), labels/train (0..max_boxes boxes; empty or missing for some)
    and data.yaml under root; returns the yaml path. Files already there from an earlier run are kept."""
    yaml_path = os.path.join(root, "data.yaml")
    images, labels = os.path.join(root, "images", "train"), os.path.join(root, "labels", "train")
    if os.path.isfile(yaml_path) and len(os.listdir(images)) == n:
        return yaml_path
    os.makedirs(images, exist_ok=True)
    os.makedirs(labels, exist_ok=True)
    rng = np.random.default_rng(seed)
    ok, jpeg = cv2.imencode(".jpg", rng.integers(0, 255, size=(48, 64, 3), dtype=np.uint8))
    jpeg = jpeg.tobytes()
    counts = rng.integers(0, max_boxes + 1, size=n)
    for i, count in enumerate(counts.tolist()):
        name = f"{i:07d}"
        with open(os.path.join(images, name + ".jpg"), "wb") as f:
            f.write(jpeg)
        if count or i % 2:  # of the images without boxes, half have an empty label file and half none
            with open(os.path.join(labels, name + ".txt"), "w") as f:
                f.write(_label_text(rng, count))
    with open(yaml_path, "w") as f:
        f.write("train: images/train\nval: images/train\nnames: [a, b, c]\n")
    return yaml_path


def _timed(fn, rounds, before=None):
    """Median seconds of `rounds` calls of fn (before() runs untimed ahead of each)."""
    seconds = []
    for _ in range(rounds):
        if before is not None:
            before()
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def measure(yaml_path, rounds, threads=None):
    """Rows (what, images, seconds, images/s): first index, cached index, whole dataset from the cached index."""
    data_yaml = read_data_yaml(yaml_path)
    n = len(list_split_images(data_yaml, "train"))
    cache = cache_path_of(list_split_images(data_yaml, "train"))

    def drop_cache():
        if os.path.exists(cache):
            os.remove(cache)

    def dataset():
        with contextlib.redirect_stdout(sys.stderr):  # pycocotools prints
            YOLODataset(data_yaml, "train", img_size=(640, 640))

    first = _timed(lambda: load_split_index(data_yaml, "train", threads=threads), rounds, before=drop_cache)
    cached = _timed(lambda: load_split_index(data_yaml, "train", threads=threads), rounds)
    whole = _timed(dataset, rounds)
    return [(what, n, s, n / s) for what, s in (("first index (headers, labels, cache written)", first),
                                                 ("cached index (stat only)", cached),
                                                 ("YOLODataset from the cached index", whole))]


def main(argv=None):
    """Generate, measure, print the table (and write the JSON); returns the rows."""
    args = parse_args(argv)
    logger.remove()
    logger.add(sys.stderr, level="WARNING")  # one info line per index would drown the table
    root = args.dir or tempfile.mkdtemp(prefix="bench_index_")
    try:
        start = time.perf_counter()
        yaml_path = generate_split(root, args.images, args.max_boxes, args.seed)
        print(f"{args.images} images under {root} ready in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        rows = measure(yaml_path, args.rounds, args.threads)
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    print(tabulate([(w, n, f"{s:.2f}", f"{r:,.0f}") for w, n, s, r in rows],
                   headers=["measurement", "images", "seconds", "images/s"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rounds": args.rounds, "cpu_count": os.cpu_count(),
                       "rows": [dict(zip(("measurement", "images", "seconds", "images_per_s"), r)) for r in rows]},
                      f, indent=1)
    return rows


if __name__ == "__main__":
    main()
