"""COCOEvaluator and tools/eval.py on the bundled tree-crown val set: AP equal to pycocotools run directly on the
same detections, for hand-made detections and for a (briefly) trained model."""
import contextlib
import io
import json
import os

import numpy as np
import pytest
import torch
from pycocotools.cocoeval import COCOeval

from yolox.tools.eval import run_eval_cli
from yolox.data import COCODataset, TrainTransform, ValTransform
from yolox.evaluators import COCOEvaluator
from yolox.evaluators.inference import InferenceStats
from yolox.utils import CheckpointError, postprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "datasets", "forest")
SIZE = (224, 224)
CONF, NMS = 1e-6, 0.65  # a low threshold: the briefly trained model's scores are small

EXP_TEXT = '''
from yolox.exp import Exp as BaseExp


class Exp(BaseExp):
    def __init__(self):
        super().__init__()
        self.depth = 0.33
        self.width = 0.25
        self.num_classes = 1
        self.data_dir = {data!r}
        self.val_ann = "val.json"
        self.test_size = {size!r}
        self.test_conf = {conf!r}
        self.nmsthre = {nms!r}
        self.data_num_workers = 0
        self.output_dir = {out!r}

    def get_eval_dataset(self, **kwargs):
        from yolox.data import COCODataset, ValTransform

        return COCODataset(data_dir=self.data_dir, json_file=self.val_ann, name="val", img_size=self.test_size,
                           preproc=ValTransform(legacy=kwargs.get("legacy", False)))
'''


def _quiet(fn, *args):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args)


@pytest.fixture(scope="module")
def val_set():
    return _quiet(COCODataset, DATA, "val.json", "val", SIZE, ValTransform())


def _loader(dataset, batch_size=4):
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)


def _pycocotools_from_file(coco_gt, detections, path):
    """AP50:95 and AP50 as a user gets them: a results json on disk, loadRes, COCOeval."""
    path.write_text(json.dumps(detections))
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(coco_gt, coco_gt.loadRes(str(path)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[0], ev.stats[1]


def _gt_detections(coco, jitter=0.0, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for k, ann in enumerate(coco.loadAnns(coco.getAnnIds())):
        x, y, w, h = ann["bbox"]
        d = rng.normal(0, jitter, 4) * [w, h, w, h]
        out.append({"image_id": ann["image_id"], "category_id": ann["category_id"],
                    "bbox": [x + d[0], y + d[1], w + d[2], h + d[3]], "score": float(rng.uniform(0.1, 1.0))})
    return out


def test_hand_made_detections_on_bundled_val(val_set, tmp_path):
    ev = COCOEvaluator(_loader(val_set), SIZE, CONF, NMS, 1)
    ap, ap50, summary = ev.evaluate_prediction(_gt_detections(val_set.coco), InferenceStats())
    assert (ap, ap50) == (1.0, 1.0)
    assert "| tree" in summary
    for seed, jitter in ((1, 0.05), (2, 0.15)):
        dets = _gt_detections(val_set.coco, jitter, seed)
        ap, ap50, _ = ev.evaluate_prediction(dets, InferenceStats())
        ref = _pycocotools_from_file(val_set.coco, dets, tmp_path / f"j{seed}.json")
        assert 0 < ap < 1 and (ap, ap50) == pytest.approx(ref, abs=1e-12)


class _GtModel(torch.nn.Module):
    """Outputs each image's gt boxes in the decoded (B, A, 6) format at the letterboxed scale (ids set per batch)."""

    def __init__(self, dataset):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.coco, self.ids = dataset.coco, []

    def forward(self, imgs):
        out = torch.zeros(len(self.ids), 64, 6)
        for b, img_id in enumerate(self.ids):
            info = self.coco.loadImgs(img_id)[0]
            r = min(SIZE[0] / info["height"], SIZE[1] / info["width"])
            for a, ann in enumerate(self.coco.loadAnns(self.coco.getAnnIds(imgIds=[img_id]))):
                x, y, w, h = (v * r for v in ann["bbox"])
                out[b, a] = torch.tensor([x + w / 2, y + h / 2, w, h, 1.0 - a / 100, 1.0])
        return out


def test_gt_model_through_real_loader_gives_one(val_set):
    model = _GtModel(val_set)

    class Loader:  # tells the stand-in which images the batch holds
        dataset, batch_size = val_set, 3

        def __len__(self):
            return len(_loader(val_set, 3))

        def __iter__(self):
            for batch in _loader(val_set, 3):
                model.ids = [int(i) for i in batch[3].reshape(-1)]
                yield batch

    ev = COCOEvaluator(Loader(), SIZE, CONF, NMS, 1)
    ap, ap50, _ = ev.evaluate(model)
    assert ap == pytest.approx(1.0, abs=1e-9) and ap50 == pytest.approx(1.0, abs=1e-9)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """YOLOX (width 0.25) fitted for 60 SGD steps on bundled train images, its checkpoint and an Exp file."""
    from yolox.exp import get_exp

    tmp = tmp_path_factory.mktemp("bundled")
    exp_file = tmp / "forest_tiny.py"
    exp_file.write_text(EXP_TEXT.format(data=DATA, size=SIZE, conf=CONF, nms=NMS, out=str(tmp / "out")))
    exp = get_exp(str(exp_file))
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = exp.get_model()
    # no flip, no HSV: the fit depends on the seeds above only, not on the random state other tests leave
    train = _quiet(COCODataset, DATA, "train.json", "train", SIZE,
                   TrainTransform(max_labels=60, flip_prob=0.0, hsv_prob=0.0))
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, nesterov=True)
    model.train()
    for _ in range(60):
        batch = [train[int(i)] for i in rng.choice(len(train), 8, replace=False)]
        imgs = torch.from_numpy(np.stack([b[0] for b in batch]))
        targets = torch.from_numpy(np.stack([b[1] for b in batch]))
        loss = model(imgs, targets)["total_loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    ckpt = tmp / "forest_tiny.pth"
    torch.save({"model": model.state_dict(), "start_epoch": 1}, ckpt)
    return model, exp_file, ckpt, tmp


def test_trained_model_ap_equals_pycocotools(trained, val_set, tmp_path):
    model = trained[0]
    ap, ap50, summary = COCOEvaluator(_loader(val_set), SIZE, CONF, NMS, 1).evaluate(model)
    # The same detections, converted here independently of the evaluator, scored by pycocotools alone.
    dets = []
    with torch.no_grad():
        for imgs, _, (heights, widths), ids in _loader(val_set):
            for out, h, w, img_id in zip(postprocess(model(imgs), 1, CONF, NMS), heights, widths, ids):
                if out is None:
                    continue
                r = min(SIZE[0] / float(h), SIZE[1] / float(w))
                for x1, y1, x2, y2, obj, cls_conf, cls in out.tolist():
                    dets.append({"image_id": int(img_id), "category_id": val_set.class_ids[int(cls)],
                                 "bbox": [x1 / r, y1 / r, (x2 - x1) / r, (y2 - y1) / r], "score": obj * cls_conf})
    ref_ap, ref_ap50 = _pycocotools_from_file(val_set.coco, dets, tmp_path / "trained.json")
    print(f"trained model on the bundled val set: AP50:95 {ap:.4f}, AP50 {ap50:.4f}")
    assert ap50 > 0.01, "the briefly trained model should find some trees"
    assert ap == pytest.approx(ref_ap, abs=1e-9) and ap50 == pytest.approx(ref_ap50, abs=1e-9)
    assert "Average forward time" in summary and "per class AR" in summary


def test_eval_cli_on_bundled_val(trained, val_set):
    model, exp_file, ckpt, tmp = trained
    ap, ap50, _ = COCOEvaluator(_loader(val_set, 2), SIZE, CONF, NMS, 1).evaluate(model)
    got = run_eval_cli(["-f", str(exp_file), "-c", str(ckpt), "-b", "2"])
    assert got[:2] == pytest.approx((ap, ap50), abs=1e-9)
    fused = run_eval_cli(["-f", str(exp_file), "-c", str(ckpt), "-b", "2", "--fuse", "--fp16"])  # fp16: CPU warns
    assert fused[:2] == pytest.approx((ap, ap50), abs=1e-3)
    assert os.path.isfile(tmp / "out" / "forest_tiny" / "val_log.txt")
    line = run_eval_cli(["-f", str(exp_file), "-c", str(ckpt), "-b", "2", "--speed"])
    assert line.startswith("Average forward time:") and line.count(" ms") == 3
    with pytest.raises(CheckpointError, match="trained for 1 classes but the Exp has num_classes = 2"):
        run_eval_cli(["-f", str(exp_file), "-c", str(ckpt), "num_classes", "2"])
