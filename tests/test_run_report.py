"""The run report: matching, P/R/F1, AP50 against pycocotools, the confusion matrix, and its files."""
import csv
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks.bench_report import coco_from_dataset, make_problem, parse_args
from yolox.evaluators import report_plots
from yolox.evaluators.coco_evaluator import coco_bbox_eval
from yolox.evaluators.report_plots import write_report, write_val_batch
from yolox.evaluators.run_report import build_report, coco_per_class_ap, greedy_match
from yolox.utils import MatplotlibMissing

REPO = Path(__file__).resolve().parents[1]
NAMES = ["cat", "dog", "bird"]


def _coco(gts, num_images=4, num_classes=3):
    """COCO ground truth from [(image id, class index, xywh, iscrowd)], images 1..num_images."""
    anns = [{"id": i + 1, "image_id": img, "category_id": cls + 1, "bbox": list(map(float, box)),
             "area": float(box[2] * box[3]), "iscrowd": crowd} for i, (img, cls, box, crowd) in enumerate(gts)]
    return coco_from_dataset({
        "images": [{"id": i, "width": 100, "height": 100} for i in range(1, num_images + 1)],
        "annotations": anns,
        "categories": [{"id": c + 1, "name": NAMES[c] if c < len(NAMES) else f"c{c}"} for c in range(num_classes)],
    })


def _det(img, cls, box, score):
    return {"image_id": img, "category_id": cls + 1, "bbox": list(map(float, box)), "score": score}


GTS = [(1, 0, (10, 10, 30, 30), 0), (1, 1, (50, 50, 40, 40), 0), (2, 2, (5, 5, 20, 60), 0),
       (2, 0, (40, 10, 50, 30), 0), (3, 1, (0, 0, 99, 99), 0)]


def test_perfect_detector():
    report = build_report(_coco(GTS), [_det(i, c, b, 0.9) for i, c, b, _ in GTS], NAMES)
    assert np.allclose(report.precision, 1) and np.allclose(report.recall, 1)
    assert np.allclose(report.ap50, 1)
    assert report.best_f1 == pytest.approx(1.0) and report.best_conf <= 0.9
    assert np.array_equal(report.confusion, np.diag([2, 2, 1, 0]))
    assert report.instances.tolist() == [2, 2, 1] and report.images.tolist() == [2, 2, 1]
    assert report.num_images == 4  # image 4 has no gts and counts all the same


def test_swapped_classes_show_in_the_matrix():
    swap = {0: 1, 1: 0, 2: 2}
    report = build_report(_coco(GTS), [_det(i, swap[c], b, 0.9) for i, c, b, _ in GTS], NAMES, conf=0.5)
    expected = np.zeros((4, 4), dtype=np.int64)
    expected[1, 0] = 2  # predicted dog, true cat
    expected[0, 1] = 2
    expected[2, 2] = 1
    assert np.array_equal(report.confusion, expected)
    assert report.ap50[0] == 0 and report.ap50[1] == 0 and report.ap50[2] == 1


def test_detections_below_the_confidence_are_missed_gts():
    report = build_report(_coco(GTS), [_det(i, c, b, 0.1) for i, c, b, _ in GTS], NAMES, conf=0.5)
    assert report.confusion[3, :3].tolist() == [2, 2, 1]  # the background row: each gt missed
    assert report.confusion[:, 3].sum() == 0 and np.trace(report.confusion) == 0
    assert np.allclose(report.ap50, 1)  # the ranking itself is perfect


def test_crowd_gt_is_ignored():
    gts = [(1, 0, (10, 10, 30, 30), 0), (1, 0, (50, 50, 40, 40), 1)]
    dets = [_det(1, 0, (10, 10, 30, 30), 0.9), _det(1, 0, (55, 55, 20, 20), 0.8),  # inside the crowd: ignored
            _det(1, 1, (55, 55, 20, 20), 0.7)]  # another class over the crowd: a false positive
    report = build_report(_coco(gts, num_images=1), dets, NAMES, conf=0.5)
    assert report.instances.tolist() == [1, 0, 0]
    assert report.precision[0] == 1 and report.recall[0] == 1 and report.ap50[0] == 1
    assert report.confusion[0, 0] == 1 and report.confusion[1, 3] == 1 and report.confusion.sum() == 2
    coco_eval, _ = coco_bbox_eval(_coco(gts, num_images=1), dets)
    assert coco_per_class_ap(coco_eval)[0][0] == pytest.approx(report.ap50[0])


def test_detections_on_an_image_without_gts_are_false_positives():
    dets = [_det(i, c, b, 0.9) for i, c, b, _ in GTS] + [_det(4, 2, (1, 1, 20, 20), 0.95)]
    report = build_report(_coco(GTS), dets, NAMES, conf=0.5)
    assert report.confusion[2, 3] == 1 and report.confusion[3].sum() == 0
    assert report.precision[2] == pytest.approx(0.5) and report.recall[2] == 1


def test_class_confusion_found_after_the_same_class_matches():
    # a dog box on the cat gt that the cat detection already took stays a false positive; on a free gt it is a swap
    gts = [(1, 0, (10, 10, 30, 30), 0), (1, 0, (50, 50, 30, 30), 0)]
    dets = [_det(1, 0, (10, 10, 30, 30), 0.9), _det(1, 1, (11, 11, 30, 30), 0.8), _det(1, 1, (50, 50, 30, 30), 0.7)]
    report = build_report(_coco(gts, num_images=1), dets, NAMES, conf=0.5)
    assert report.confusion[0, 0] == 1 and report.confusion[1, 0] == 1 and report.confusion[1, 3] == 1
    assert report.confusion[3].sum() == 0


def _sequential_greedy(det_key, det_box, gt_key, gt_box, thr):
    """The direct algorithm: detections in order, each takes its free gt of equal key with the highest IoU."""
    from yolox.evaluators.run_report import _pair_iou

    match, taken = np.full(len(det_key), -1), np.zeros(len(gt_key), bool)
    for d in range(len(det_key)):
        cand = np.flatnonzero((gt_key == det_key[d]) & ~taken)
        if cand.size:
            iou = _pair_iou(np.repeat(det_box[d:d + 1], cand.size, 0), gt_box[cand])
            best = np.flatnonzero(iou == iou.max())[-1]
            if iou[best] >= thr:
                match[d], taken[cand[best]] = cand[best], True
    return match


def test_vectorised_greedy_matching_equals_the_sequential_one():
    rng = np.random.default_rng(0)
    # crowded clusters: many detections compete for the same few gts, chains of several rounds
    gt_key = rng.integers(0, 5, 60)
    gt_box = np.c_[rng.uniform(0, 20, (60, 2)), rng.uniform(20, 30, (60, 2))]
    det_key = np.sort(rng.integers(0, 5, 300))  # rank order within each key = index order
    det_box = np.c_[rng.uniform(0, 20, (300, 2)), rng.uniform(20, 30, (300, 2))]
    match, rounds = greedy_match(det_key, det_box, gt_key, gt_box, 0.5)
    assert rounds > 2
    assert np.array_equal(match, _sequential_greedy(det_key, det_box, gt_key, gt_box, 0.5))


def test_ap50_agrees_with_pycocotools():
    # identical up to float rounding when pycocotools keeps every detection (at most 100 per image and class here)
    coco_gt, dets = make_problem(num_images=50, num_classes=6, dets_per_image=60, seed=1)
    coco_eval, _ = coco_bbox_eval(coco_gt, dets)
    report = build_report(coco_gt, dets, coco_eval=coco_eval)
    assert np.allclose(report.ap50, report.coco_ap50, atol=1e-9, equal_nan=True)
    assert np.all(report.coco_ap50_95 <= report.coco_ap50 + 1e-12)
    assert "AP50:95" in report.table() and "class0" in report.table()


def test_ap50_differs_only_by_pycocotools_max_dets():
    coco_gt, dets = make_problem(num_images=12, num_classes=2, dets_per_image=260, seed=2)  # ~130 per image-class
    coco_eval, _ = coco_bbox_eval(coco_gt, dets)
    coco_ap50, _ = coco_per_class_ap(coco_eval)
    assert np.allclose(build_report(coco_gt, dets, max_dets=100).ap50, coco_ap50, atol=1e-9)
    uncapped = build_report(coco_gt, dets).ap50  # the extra low-score detections can only add recall
    assert np.all(uncapped >= coco_ap50 - 0.02) and np.abs(uncapped - coco_ap50).max() < 0.05


def test_unknown_image_is_named():
    with pytest.raises(ValueError, match="image_id 99"):
        build_report(_coco(GTS), [_det(99, 0, (1, 1, 5, 5), 0.5)], NAMES)


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_files_written(tmp_path):
    report = build_report(_coco(GTS), [_det(i, c, b, 0.9) for i, c, b, _ in GTS], NAMES)
    out = tmp_path / "report"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        with pytest.raises(MatplotlibMissing):
            write_report(report, str(out))
    else:
        paths = write_report(report, str(out))
        names = sorted(os.path.basename(p) for p in paths)
        assert names == sorted(["confusion_matrix.csv", "per_class_table.txt", "PR_curve.png", "F1_curve.png",
                                "P_curve.png", "R_curve.png", "confusion_matrix.png",
                                "confusion_matrix_normalized.png"])
        for p in paths:
            if p.endswith(".png"):
                assert cv2.imread(p) is not None, p
    rows = _read_csv(out / "confusion_matrix.csv")
    assert rows[0] == ["predicted \\ true", "cat", "dog", "bird", "background"]
    assert rows[1] == ["cat", "2", "0", "0", "0"] and rows[4][0] == "background"
    assert "bird" in (out / "per_class_table.txt").read_text()
    assert not [p for p in os.listdir(out) if p.startswith(".")]  # no temporary file left


def test_csv_and_table_without_matplotlib(tmp_path, monkeypatch):
    def missing():
        raise MatplotlibMissing("no matplotlib")

    monkeypatch.setattr(report_plots, "_pyplot", missing)
    report = build_report(_coco(GTS), [_det(i, c, b, 0.9) for i, c, b, _ in GTS], NAMES)
    with pytest.raises(MatplotlibMissing):
        write_report(report, str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["confusion_matrix.csv", "per_class_table.txt"]


def test_val_batch_pictures(tmp_path):
    images = [np.full((100, 100, 3), 90, np.uint8), np.full((60, 140, 3), 160, np.uint8)]
    labels = [np.array([[10, 10, 40, 40, 0]]), np.zeros((0, 5))]
    preds = [np.array([[11, 11, 40, 42, 0.9, 0], [1, 1, 5, 5, 0.01, 1]]), np.array([[5, 5, 50, 30, 0.6, 2]])]
    paths = write_val_batch(str(tmp_path), 0, images, labels, preds, NAMES)
    assert [os.path.basename(p) for p in paths] == ["val_batch0_labels.jpg", "val_batch0_pred.jpg"]
    assert all(cv2.imread(p) is not None for p in paths)


def test_benchmark_launcher_and_arguments():
    text = (REPO / "tools" / "bench_report.py").read_text()
    assert "from benchmarks.bench_report import main" in text
    args = parse_args(["--images", "20", "--json"])
    assert args.images == 20 and args.classes == 80 and args.dets == 100 and args.json
