"""COCOEvaluator on hand-made COCO data: its AP must equal pycocotools run directly on the same detections."""
import contextlib
import io
import json

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from yolox.evaluators import COCOEvaluator
from yolox.evaluators.coco_evaluator import coco_bbox_eval
from yolox.evaluators.inference import InferenceStats

TEST_SIZE = (64, 96)  # (h, w) of the network input
# Two categories with ids that are not 0..K-1, so the evaluator must map class index -> category id.
CATEGORIES = [{"id": 3, "name": "tree"}, {"id": 7, "name": "snag"}]
IMAGES = [  # original sizes differ from TEST_SIZE, so boxes must be scaled back
    {"id": 11, "width": 192, "height": 128, "file_name": "a.jpg"},
    {"id": 12, "width": 100, "height": 160, "file_name": "b.jpg"},
    {"id": 13, "width": 150, "height": 150, "file_name": "c.jpg"},
]
GT = [  # (image id, category id, x, y, w, h)
    (11, 3, 10, 20, 40, 30), (11, 3, 100, 50, 60, 60), (11, 7, 5, 80, 20, 30),
    (12, 7, 30, 30, 50, 90), (12, 3, 10, 100, 30, 40),
    (13, 3, 0, 0, 75, 75), (13, 7, 80, 90, 60, 50),
]


def _write_coco(path):
    anns = [
        {"id": i + 1, "image_id": im, "category_id": c, "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0}
        for i, (im, c, x, y, w, h) in enumerate(GT)
    ]
    path.write_text(json.dumps({"images": IMAGES, "annotations": anns, "categories": CATEGORIES}))
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def _direct_pycocotools(coco_gt, detections):
    """AP50:95 and AP50 with pycocotools alone, from a results json file, as a user would run it."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(json.loads(json.dumps(detections)))
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[0], ev.stats[1]


class _Dataset(torch.utils.data.Dataset):
    """Minimal COCO-format eval dataset: a blank letterboxed image, (h, w) info and the image id."""

    def __init__(self, coco):
        self.coco = coco
        self.class_ids = sorted(coco.getCatIds())
        self.ids = [im["id"] for im in IMAGES]

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        info = self.coco.loadImgs(self.ids[i])[0]
        return torch.zeros(3, *TEST_SIZE), np.zeros((1, 5)), (info["height"], info["width"]), np.array([self.ids[i]])


class _GtModel(torch.nn.Module):
    """Outputs the (optionally jittered) gt boxes of each image in the decoded (B, A, 5 + K) format, at the
    letterboxed scale, padded with zero-score anchors; a stand-in for a detector with known answers."""

    def __init__(self, coco, jitter=0.0, seed=0, anchors=16):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.coco, self.jitter, self.anchors = coco, jitter, anchors
        self.rng = np.random.default_rng(seed)
        self.cat_index = {c: i for i, c in enumerate(sorted(coco.getCatIds()))}
        self.batch_ids = []

    def forward(self, imgs):
        out = torch.zeros(len(self.batch_ids), self.anchors, 5 + len(self.cat_index))
        for b, img_id in enumerate(self.batch_ids):
            info = self.coco.loadImgs(img_id)[0]
            r = min(TEST_SIZE[0] / info["height"], TEST_SIZE[1] / info["width"])
            for a, ann in enumerate(self.coco.loadAnns(self.coco.getAnnIds(imgIds=[img_id]))):
                x, y, w, h = np.asarray(ann["bbox"], dtype=np.float64) * r
                dx, dy, dw, dh = self.rng.normal(0, self.jitter, 4) * np.array([w, h, w, h])
                out[b, a, :4] = torch.tensor([x + w / 2 + dx, y + h / 2 + dy, w + dw, h + dh])
                out[b, a, 4] = 0.9 - 0.05 * a  # distinct scores, so the ranking is fixed
                out[b, a, 5 + self.cat_index[ann["category_id"]]] = 1.0
        return out


class _IdsLoader:
    """Wraps a DataLoader and tells the stand-in model which images the next batch holds."""

    def __init__(self, loader, model):
        self.loader, self.model = loader, model
        self.dataset, self.batch_size = loader.dataset, loader.batch_size

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            self.model.batch_ids = [int(i) for i in batch[3].reshape(-1)]
            yield batch


def _evaluator(coco, model, **kwargs):
    loader = torch.utils.data.DataLoader(_Dataset(coco), batch_size=2, shuffle=False)
    return COCOEvaluator(_IdsLoader(loader, model), TEST_SIZE, confthre=0.01, nmsthre=0.65, num_classes=2, **kwargs)


@pytest.fixture()
def coco_gt(tmp_path):
    return _write_coco(tmp_path / "instances_val.json")


def _gt_as_detections(coco, jitter=0.0, seed=0):
    rng = np.random.default_rng(seed)
    dets = []
    for k, ann in enumerate(coco.loadAnns(coco.getAnnIds())):
        x, y, w, h = ann["bbox"]
        noise = rng.normal(0, jitter, 4) * np.array([w, h, w, h])
        dets.append({"image_id": ann["image_id"], "category_id": ann["category_id"],
                     "bbox": [float(v) for v in np.array([x, y, w, h]) + noise], "score": 0.9 - 0.01 * k,
                     "segmentation": []})
    return dets


def test_hand_made_detections_match_pycocotools(coco_gt):
    ev = COCOEvaluator(type("L", (), {"dataset": _Dataset(coco_gt)})(), TEST_SIZE, 0.01, 0.65, 2)
    ap, ap50, summary = ev.evaluate_prediction(_gt_as_detections(coco_gt), InferenceStats())
    assert (ap, ap50) == (1.0, 1.0)
    assert "Average forward time" in summary and "per class AP" in summary and "snag" in summary

    jittered = _gt_as_detections(coco_gt, jitter=0.08, seed=3)
    ap, ap50, _ = ev.evaluate_prediction(jittered, InferenceStats())
    ref_ap, ref_ap50 = _direct_pycocotools(coco_gt, jittered)
    assert ap < 1.0 and ap == pytest.approx(ref_ap, abs=1e-12) and ap50 == pytest.approx(ref_ap50, abs=1e-12)


def test_full_pass_gt_model_gives_one_and_boxes_map_back(coco_gt):
    model = _GtModel(coco_gt)
    ev = _evaluator(coco_gt, model)
    (ap, ap50, summary), outputs = ev.evaluate(model, return_outputs=True)
    assert (ap, ap50) == pytest.approx((1.0, 1.0))
    for ann in coco_gt.loadAnns(coco_gt.getAnnIds()):
        x, y, w, h = ann["bbox"]
        got = outputs[ann["image_id"]]
        assert ann["category_id"] in got["categories"]
        assert np.min(np.abs(np.asarray(got["bboxes"]) - [x, y, x + w, y + h]).max(axis=1)) < 1e-3


def test_full_pass_jittered_model_equals_direct_pycocotools(coco_gt):
    model = _GtModel(coco_gt, jitter=0.1, seed=1)
    ev = _evaluator(coco_gt, model)
    loader = ev.dataloader
    data = []
    for imgs, _, info, ids in loader:  # the same detections, converted by the evaluator, scored directly
        from yolox.utils import postprocess
        data += ev.convert_to_coco_format(postprocess(model(imgs), 2, 0.01, 0.65), info, ids)
    model.rng = np.random.default_rng(1)
    ap, ap50, _ = ev.evaluate(model)
    ref_ap, ref_ap50 = _direct_pycocotools(coco_gt, data)
    assert 0.0 < ap < 1.0
    assert ap == pytest.approx(ref_ap, abs=1e-12) and ap50 == pytest.approx(ref_ap50, abs=1e-12)


def test_testdev_writes_json_instead_of_evaluating(coco_gt, tmp_path):
    model = _GtModel(coco_gt)
    out = tmp_path / "out" / "testdev.json"
    ev = _evaluator(coco_gt, model, testdev=True, testdev_file=str(out))
    ap, ap50, summary = ev.evaluate(model)
    written = json.loads(out.read_text())
    assert (ap, ap50) == (0, 0) and len(written) == len(GT) and str(out) in summary
    assert {d["image_id"] for d in written} == {im["id"] for im in IMAGES}


def test_no_detections_gives_zero_and_speed_line(coco_gt):
    model = _GtModel(coco_gt)
    ev = _evaluator(coco_gt, model)
    ev.confthre = 0.99  # above every score of the stand-in model
    ap, ap50, summary = ev.evaluate(model)
    assert (ap, ap50) == (0, 0) and "no detections" in summary
    line = ev.speed_test(model)
    assert line.startswith("Average forward time: ") and "Average NMS time: " in line and "inference time" in line


def test_coco_bbox_eval_leaves_detections_unchanged(coco_gt):
    dets = _gt_as_detections(coco_gt)
    before = json.dumps(dets)
    coco_bbox_eval(coco_gt, dets)
    assert json.dumps(dets) == before
