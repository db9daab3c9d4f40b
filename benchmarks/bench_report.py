#!/usr/bin/env python
"""Cost of the run report (matching, curves, confusion matrix) against pycocotools' evaluation of the same
detections, on a generated COCO-val-sized problem; the PNG drawing is timed apart.

    python benchmarks/bench_report.py                       # 5000 images, 80 classes, 100 detections per image
    python benchmarks/bench_report.py --images 500 --json   # smaller, machine-readable
    python benchmarks/bench_report.py --no-plots            # without the drawing (or without matplotlib)
"""
import argparse
import contextlib
import copy
import io
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root: run anywhere

import numpy as np  # noqa: E402
from tabulate import tabulate  # noqa: E402

from yolox.evaluators.run_report import build_report  # noqa: E402

__all__ = ["make_problem", "coco_from_dataset", "parse_args", "main"]


def coco_from_dataset(dataset):
    """pycocotools COCO built from an in-memory dataset dict, without its prints."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _random_boxes(rng, n, width, height):
    """(n, 4) plausible xywh boxes inside a width x height image."""
    w = np.clip(rng.lognormal(np.log(width / 8), 0.7, n), 4, width - 1)
    h = np.clip(w * rng.lognormal(0, 0.4, n), 4, height - 1)
    x = rng.uniform(0, 1, n) * (width - w)
    y = rng.uniform(0, 1, n) * (height - h)
    return np.stack([x, y, w, h], 1)


def _jitter(rng, boxes, scale):
    """boxes (n, 4) xywh moved and resized by about `scale` of their size."""
    wh = boxes[:, 2:]
    xy = boxes[:, :2] + rng.normal(0, scale, (len(boxes), 2)) * wh
    wh = wh * np.exp(rng.normal(0, scale, (len(boxes), 2)))
    return np.concatenate([xy, wh], 1)


def make_problem(num_images=5000, num_classes=80, gts_per_image=7, dets_per_image=100, seed=0, crowd_rate=0.01,
                 width=640, height=480):
    """(COCO ground truth, detections list) with category ids 1..num_classes: Poisson(gts_per_image) gts per image
    (some images empty, ~1% crowd), and dets_per_image detections per image, 1-3 jittered copies of most gts (the
    class right 80% of the time, high scores) topped up with random boxes of random classes and low scores."""
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for i in range(1, num_images + 1):
        images.append({"id": i, "width": width, "height": height, "file_name": f"{i:06d}.jpg"})
        n_gt = rng.poisson(gts_per_image)
        boxes = _random_boxes(rng, n_gt, width, height)  # (n_gt, 4)
        classes = rng.integers(0, num_classes, n_gt)
        crowd = rng.random(n_gt) < crowd_rate
        for b, c, cr in zip(boxes, classes, crowd):
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(c) + 1, "bbox": [float(v) for v in b],
                         "area": float(b[2] * b[3]), "iscrowd": int(cr)})
        copies = rng.choice([0, 1, 2, 3], n_gt, p=[0.15, 0.5, 0.25, 0.1])  # (n_gt,)
        src = np.repeat(np.arange(n_gt), copies)[:dets_per_image]
        d_box = _jitter(rng, boxes[src], 0.08)
        d_cls = np.where(rng.random(len(src)) < 0.8, classes[src], rng.integers(0, num_classes, len(src)))
        d_score = rng.beta(5, 2, len(src))
        n_rand = dets_per_image - len(src)
        d_box = np.concatenate([d_box, _random_boxes(rng, n_rand, width, height)])
        d_cls = np.concatenate([d_cls, rng.integers(0, num_classes, n_rand)])
        d_score = np.concatenate([d_score, rng.beta(1, 6, n_rand)])
        for b, c, s in zip(d_box.tolist(), d_cls.tolist(), d_score.tolist()):
            dets.append({"image_id": i, "category_id": c + 1, "bbox": b, "score": s, "segmentation": []})
    cats = [{"id": c + 1, "name": f"class{c}"} for c in range(num_classes)]
    dataset = {"images": images, "annotations": anns, "categories": cats}
    return coco_from_dataset(dataset), dets


def time_pycocotools(coco_gt, dets):
    """(seconds, finished COCOeval) of loadRes + evaluate + accumulate + summarize."""
    from pycocotools.cocoeval import COCOeval

    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(copy.deepcopy(dets))  # as the evaluator does: loadRes adds keys to the dicts
        coco_eval = COCOeval(coco_gt, coco_dt, "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return time.perf_counter() - t0, coco_eval


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--classes", type=int, default=80)
    p.add_argument("--gts", type=float, default=7.0, help="mean gts per image")
    p.add_argument("--dets", type=int, default=100, help="detections per image")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3, help="report timings repeated; the median is kept")
    p.add_argument("--no-plots", action="store_true", help="skip timing the PNG drawing")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    coco_gt, dets = make_problem(args.images, args.classes, args.gts, args.dets, args.seed)
    coco_s, coco_eval = time_pycocotools(coco_gt, dets)
    times = []
    for _ in range(max(1, args.repeats)):
        t0 = time.perf_counter()
        report = build_report(coco_gt, dets, coco_eval=coco_eval)
        times.append(time.perf_counter() - t0)
    report_s = float(np.median(times))
    plots_s = None
    if not args.no_plots:
        from yolox.evaluators.report_plots import write_report
        from yolox.utils import MatplotlibMissing

        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            try:
                write_report(report, out)
                plots_s = time.perf_counter() - t0
            except MatplotlibMissing:
                pass
    ap_gap = float(np.nanmax(np.abs(report.ap50 - report.coco_ap50)))
    result = {
        "images": args.images, "classes": args.classes, "detections": len(dets),
        "gts": len(coco_gt.anns), "pycocotools_s": coco_s, "report_s": report_s,
        "report_over_pycocotools": report_s / coco_s, "write_report_s": plots_s,
        "match_rounds": report.match_rounds, "max_ap50_gap": ap_gap,
    }
    if args.json:
        print(json.dumps(result))
        return result
    rows = [["pycocotools (loadRes, evaluate, accumulate, summarize)", f"{coco_s:.2f}", "1.000"],
            ["run report (matching, curves, confusion matrix)", f"{report_s:.3f}", f"{report_s / coco_s:.3f}"]]
    if plots_s is not None:
        rows.append(["write_report (csv, table, 6 PNGs), apart", f"{plots_s:.2f}", f"{plots_s / coco_s:.3f}"])
    print(f"{args.images} images, {args.classes} classes, {len(coco_gt.anns)} gts, {len(dets)} detections; "
          f"matching rounds {report.match_rounds}; max |AP50 report - pycocotools| {ap_gap:.2e}")
    print(tabulate(rows, headers=["step", "seconds", "/ pycocotools"], tablefmt="github"))
    return result


if __name__ == "__main__":
    main()
