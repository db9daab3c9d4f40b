"""PASCAL VOC average precision: the VOC07 11-point and the area-under-curve variants, one class at a time.

Boxes follow the VOC pixel convention of the official devkit: a box from x1 to x2 is x2 - x1 + 1 pixels wide.
"""
import os
import xml.etree.ElementTree as ET

import numpy as np

__all__ = ["parse_rec", "voc_ap", "class_pr_curve", "voc_eval"]


def parse_rec(filename):
    """Objects of one VOC annotation XML: [{"name", "difficult", "bbox": [x1, y1, x2, y2]}, ...]."""
    try:
        tree = ET.parse(filename)
    except (OSError, ET.ParseError) as e:
        raise ValueError(f"cannot read VOC annotation {filename!r}: {e}") from e
    objects = []
    for obj in tree.findall("object"):
        bbox = obj.find("bndbox")
        if bbox is None or obj.find("name") is None:
            raise ValueError(f"VOC annotation {filename!r} has an <object> without <name> or <bndbox>")
        difficult = obj.find("difficult")
        objects.append({
            "name": obj.find("name").text.strip(),
            "difficult": int(difficult.text) if difficult is not None and difficult.text else 0,
            "bbox": [int(float(bbox.find(tag).text)) for tag in ("xmin", "ymin", "xmax", "ymax")],
        })
    return objects


def voc_ap(rec, prec, use_07_metric=False):
    """AP from recall and precision arrays (detections sorted by falling score).

    use_07_metric: mean over recall 0, 0.1, ..., 1 of the best precision at that recall or more (VOC2007).
    Otherwise: area under the precision envelope (precision made non-increasing in recall), VOC2010 onwards.
    """
    rec, prec = np.asarray(rec, dtype=np.float64), np.asarray(prec, dtype=np.float64)
    if use_07_metric:
        ap = 0.0
        for t in np.linspace(0.0, 1.0, 11):
            p = prec[rec >= t]
            ap += (p.max() if p.size else 0.0) / 11.0
        return float(ap)
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # envelope: best precision at this recall or beyond
    steps = np.where(mrec[1:] != mrec[:-1])[0]  # indices where recall moves
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def _overlaps(box, gts):
    """IoU of one box (4,) with gts (G, 4), VOC +1 pixel convention."""
    ixmin = np.maximum(gts[:, 0], box[0])
    iymin = np.maximum(gts[:, 1], box[1])
    ixmax = np.minimum(gts[:, 2], box[2])
    iymax = np.minimum(gts[:, 3], box[3])
    iw = np.maximum(ixmax - ixmin + 1.0, 0.0)
    ih = np.maximum(iymax - iymin + 1.0, 0.0)
    inters = iw * ih
    union = ((box[2] - box[0] + 1.0) * (box[3] - box[1] + 1.0)
             + (gts[:, 2] - gts[:, 0] + 1.0) * (gts[:, 3] - gts[:, 1] + 1.0) - inters)
    return inters / union


def class_pr_curve(detections, ground_truth, ovthresh=0.5):
    """Recall and precision of one class's detections, and the number of non-difficult gts.

    detections: list of (image key, score, [x1, y1, x2, y2]).
    ground_truth: {image key: (boxes (G, 4), difficult (G,) bool)} for this class (images without it may be absent).
    A detection is a true positive when its best-overlapping gt (IoU > ovthresh) is not difficult and not yet
    taken by a higher-scored detection; matching a difficult gt counts neither way.
    """
    npos = sum(int(np.sum(~np.asarray(d, dtype=bool))) for _, d in ground_truth.values())
    taken = {k: np.zeros(len(b), dtype=bool) for k, (b, _) in ground_truth.items()}
    order = sorted(range(len(detections)), key=lambda i: -detections[i][1])  # stable: ties keep input order
    tp = np.zeros(len(order))
    fp = np.zeros(len(order))
    for rank, i in enumerate(order):
        key, _, box = detections[i]
        box = np.asarray(box, dtype=np.float64)
        gt_boxes, difficult = ground_truth.get(key, (np.zeros((0, 4)), np.zeros(0, dtype=bool)))
        gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
        ovmax, jmax = -np.inf, -1
        if len(gt_boxes):
            ious = _overlaps(box, gt_boxes)
            jmax = int(np.argmax(ious))
            ovmax = ious[jmax]
        if ovmax > ovthresh:
            if not difficult[jmax]:
                if not taken[key][jmax]:
                    tp[rank] = 1.0
                    taken[key][jmax] = True
                else:
                    fp[rank] = 1.0
        else:
            fp[rank] = 1.0
    fp, tp = np.cumsum(fp), np.cumsum(tp)
    rec = tp / float(npos) if npos > 0 else np.full_like(tp, np.nan)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return rec, prec, npos


def voc_eval(detpath, annopath, imagesetfile, classname, cachedir=None, ovthresh=0.5, use_07_metric=False):
    """Official file-based entry point: (rec, prec, ap) of `classname`.

    detpath: format string with the class name, each line "image score x1 y1 x2 y2";
    annopath: format string with the image name giving its XML; imagesetfile: one image name per line.
    AP is nan when the class has no non-difficult gt. cachedir is accepted for compatibility and unused.
    """
    with open(imagesetfile) as f:
        names = [x.strip() for x in f if x.strip()]
    ground_truth = {}
    for name in names:
        objs = [o for o in parse_rec(annopath.format(name)) if o["name"] == classname]
        ground_truth[name] = (
            np.asarray([o["bbox"] for o in objs], dtype=np.float64).reshape(-1, 4),
            np.asarray([o["difficult"] for o in objs], dtype=bool),
        )
    detfile = detpath.format(classname)
    detections = []
    if os.path.isfile(detfile):
        with open(detfile) as f:
            for line in f:
                parts = line.split()
                if parts:
                    detections.append((parts[0], float(parts[1]), [float(v) for v in parts[2:6]]))
    rec, prec, npos = class_pr_curve(detections, ground_truth, ovthresh)
    ap = voc_ap(rec, prec, use_07_metric) if npos > 0 else float("nan")
    return rec, prec, ap
