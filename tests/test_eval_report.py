"""The run report of an evaluation: COCOEvaluator's report mode (same detections and COCOeval as the AP), eval
--report, and EvalReportPart at the end of a tiny forest run."""
import contextlib
import io
import sys

import numpy as np
import pytest
import torch
from loguru import logger
from pycocotools.cocoeval import COCOeval

from train_helpers import FOREST_EXP, read_metrics, run_dir, tiny_opts, train_argv
from yolox.core import EvalReportPart, save_eval_report
from yolox.core.eval_report import report_summary, val_batch_inputs
from yolox.core.results_table import read_results
from yolox.evaluators import COCOEvaluator, report_plots
from yolox.evaluators.inference import InferenceStats
from yolox.exp import get_exp, load_exp_weights
from yolox.tools.eval import run_eval_cli
from yolox.utils import MatplotlibMissing

REPORT_FILES = ["confusion_matrix.csv", "per_class_table.txt", "PR_curve.png", "F1_curve.png", "P_curve.png",
                "R_curve.png", "confusion_matrix.png", "confusion_matrix_normalized.png"]
VAL_BATCHES = [f"val_batch{i}_{kind}.jpg" for i in range(3) for kind in ("labels", "pred")]


@pytest.fixture(autouse=True)
def _reset_logger():
    yield
    logger.remove()
    logger.add(sys.stderr)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 2-epoch forest run at 128 px with the run report on (an evaluation after each epoch): (trainer, run
    folder)."""
    from yolox.tools.train import run_train_cli

    tmp = tmp_path_factory.mktemp("report_run")
    trainer = run_train_cli(train_argv(tmp, check_data=False, run_report=True))
    assert any(isinstance(p, EvalReportPart) for p in trainer.parts)
    logger.remove()
    logger.add(sys.stderr)
    return trainer, run_dir(tmp)


def _forest_exp(tmp_path):
    exp = get_exp(FOREST_EXP)
    exp.merge(tiny_opts(tmp_path))
    return exp


def _model(exp, ckpt):
    model = exp.get_model()
    load_exp_weights(model, str(ckpt), num_classes=exp.num_classes)
    return model.eval()


def _capture_detections(evaluator):
    """Keep the data_list that evaluate() hands to evaluate_prediction, in evaluator.captured."""
    inner = evaluator.evaluate_prediction

    def evaluate_prediction(data_dict, statistics):
        evaluator.captured = list(data_dict)
        return inner(data_dict, statistics)

    evaluator.evaluate_prediction = evaluate_prediction


def _pycocotools_ap50_per_class(coco_gt, detections):
    """pycocotools alone: AP at IoU 0.5 (area all, 100 detections) of each category sorted by id."""
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(coco_gt, coco_gt.loadRes([dict(d) for d in detections]), "bbox")
        ev.evaluate()
        ev.accumulate()
    out = []
    for k in range(len(coco_gt.getCatIds())):
        p = ev.eval["precision"][0, :, k, 0, -1]
        out.append(p[p > -1].mean() if (p > -1).any() else np.nan)
    return np.array(out)


def _jittered_gt(coco, seed, jitter=0.15):
    rng = np.random.default_rng(seed)
    dets = []
    for ann in coco.loadAnns(coco.getAnnIds()):
        x, y, w, h = ann["bbox"]
        d = rng.normal(0, jitter, 4) * [w, h, w, h]
        dets.append({"image_id": ann["image_id"], "category_id": ann["category_id"],
                     "bbox": [x + d[0], y + d[1], w + d[2], h + d[3]], "score": float(rng.uniform(0.05, 1.0))})
    for img in coco.getImgIds()[:4]:  # false positives
        dets.append({"image_id": img, "category_id": coco.getCatIds()[0], "bbox": [1.0, 1.0, 9.0, 9.0],
                     "score": 0.5})
    return dets


# ------------------------------------------------------------------------------------------------ the evaluator
def test_report_ap50_per_class_equals_pycocotools_on_the_forest_model(tiny_run, tmp_path):
    trainer, folder = tiny_run
    exp = _forest_exp(tmp_path)
    evaluator = exp.get_evaluator(batch_size=2, is_distributed=False)
    evaluator.report = True
    _capture_detections(evaluator)
    ap50_95, ap50, _ = evaluator.evaluate(_model(exp, folder / "latest_ckpt.pth"))
    report, dets = evaluator.last_report, evaluator.captured
    coco = evaluator.dataloader.dataset.coco
    per_image = np.bincount([d["image_id"] for d in dets])
    assert report.num_detections == np.minimum(per_image, 100).sum()  # pycocotools' maxDets, one class
    expected = _pycocotools_ap50_per_class(coco, dets)
    assert report.ap50 == pytest.approx(expected, abs=1e-12)
    assert report.coco_ap50 == pytest.approx(expected, abs=1e-12)
    assert report.mean(report.coco_ap50) == pytest.approx(ap50, abs=1e-12)
    assert report.mean(report.coco_ap50_95) == pytest.approx(ap50_95, abs=1e-12)
    assert report.class_names == list(evaluator.dataloader.dataset.class_names) == ["tree"]
    # the first batches of the loader (7 images, 2 a batch) and their detections, kept for the val_batch pictures
    ids = evaluator.dataloader.dataset.ids.tolist()
    assert report.extra["val_batches"] == [ids[0:2], ids[2:4], ids[4:6]]
    kept = report.extra["val_detections"]
    assert sum(len(v) for v in kept.values()) == sum(d["image_id"] in kept for d in dets)

    # hand-made detections of several scores, some false positives: AP well inside (0, 1)
    for seed in (1, 2):
        jittered = _jittered_gt(coco, seed)
        ap50_95, ap50, _ = evaluator.evaluate_prediction(jittered, InferenceStats())
        expected = _pycocotools_ap50_per_class(coco, jittered)
        assert 0.1 < ap50 < 0.99 and evaluator.last_report.ap50 == pytest.approx(expected, abs=1e-12)
        assert evaluator.last_report.extra["val_batches"] == []  # no pass over the images: no pictures


def test_default_evaluate_is_unchanged_when_report_is_off(tiny_run, tmp_path):
    trainer, folder = tiny_run
    exp = _forest_exp(tmp_path)
    model = _model(exp, folder / "latest_ckpt.pth")
    plain = exp.get_evaluator(batch_size=4, is_distributed=False)
    assert isinstance(plain, COCOEvaluator) and plain.report is False
    result, outputs = plain.evaluate(model, return_outputs=True)
    assert plain.last_report is None
    on = exp.get_evaluator(batch_size=4, is_distributed=False)
    on.report = True
    result_on, outputs_on = on.evaluate(model, return_outputs=True)
    assert result_on[:2] == result[:2] and outputs_on == outputs and on.last_report is not None
    # the summary: the same text but for the first line (the measured times)
    assert result_on[2].split("\n")[1:] == result[2].split("\n")[1:]
    assert "Average forward time" in result[2] and "per class AP" in result[2]


def test_no_detections_give_a_report_of_zeros(tmp_path):
    evaluator = COCOEvaluator(_forest_exp(tmp_path).get_eval_loader(2, False), (128, 128), 0.01, 0.5, 1, report=True)
    assert evaluator.evaluate_prediction([], InferenceStats())[:2] == (0, 0)
    report = evaluator.last_report
    assert report.instances.tolist() == [134] and report.recall.tolist() == [0.0]
    assert report.coco_ap50.tolist() == [0.0] and report.coco_ap50_95.tolist() == [0.0]
    evaluator.report = False
    evaluator.evaluate_prediction([], InferenceStats())
    assert evaluator.last_report is None


def test_val_batch_inputs_map_labels_back_to_the_original_image(tmp_path):
    exp = _forest_exp(tmp_path)
    dataset = exp.get_evaluator(batch_size=2, is_distributed=False).dataloader.dataset
    ids = dataset.ids.tolist()[:2]
    images, labels, preds, captions = val_batch_inputs(dataset, ids, {ids[0]: np.array([[1, 2, 30, 40, 0.9, 0]])})
    coco = dataset.coco
    for img_id, img, lab in zip(ids, images, labels):
        info = coco.imgs[img_id]
        assert img.shape[:2] == (info["height"], info["width"])
        boxes = sorted([a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                       for a in coco.imgToAnns[img_id])
        assert np.allclose(sorted(lab[:, :4].tolist()), np.clip(boxes, 0, 400), atol=1e-6)
    assert preds[0].shape == (1, 6) and preds[1].shape == (0, 6)
    assert captions[0] == coco.imgs[ids[0]]["file_name"].split("/")[-1]


# ------------------------------------------------------------------------------------------------ eval --report
def test_eval_report_writes_every_file(tiny_run, tmp_path):
    trainer, folder = tiny_run
    ckpt = str(folder / "latest_ckpt.pth")
    opts = ["test_size", "128,128", "test_conf", "1e-5", "output_dir", str(tmp_path / "out")]
    out = tmp_path / "report"
    ap50_95, ap50, _ = run_eval_cli(["-f", FOREST_EXP, "-c", ckpt, "-b", "2", "--report", str(out), *opts])
    assert sorted(p.name for p in out.iterdir()) == sorted(REPORT_FILES + VAL_BATCHES)
    log = (tmp_path / "out" / "yolox_nano_forest" / "val_log.txt").read_text()
    table = (out / "per_class_table.txt").read_text()
    assert "| class" in table and "AP50:95" in table and "| tree" in table
    assert f"{ap50:.3f}" in table.split("| tree")[1].split("\n")[0]
    assert "| tree" in log.split("run report, IoU 0.5")[1] and "deploy with --conf " in log
    assert f"run report written to {out}" in log

    # --report before the `key value` options takes no folder: the run folder, and the options still apply
    run_eval_cli(["-f", FOREST_EXP, "-c", ckpt, "-b", "2", "--report", *opts])
    run_folder = tmp_path / "out" / "yolox_nano_forest"
    assert all((run_folder / name).is_file() for name in REPORT_FILES + VAL_BATCHES)


def test_eval_report_of_an_exported_onnx_model(tiny_run, tmp_path):
    pytest.importorskip("onnxruntime")
    from yolox.tools.export_onnx import run_onnx_cli

    trainer, folder = tiny_run
    onnx_file = tmp_path / "forest.onnx"
    run_onnx_cli(["-f", FOREST_EXP, "-c", str(folder / "latest_ckpt.pth"), "--output-name", str(onnx_file),
                  "--no-onnxsim", "test_size", "128,128"])
    out = tmp_path / "report"
    opts = ["test_size", "128,128", "test_conf", "1e-5", "output_dir", str(tmp_path / "out")]
    run_eval_cli(["-f", FOREST_EXP, "-c", str(onnx_file), "-b", "1", "--report", str(out), *opts])
    assert {"confusion_matrix.csv", "PR_curve.png", "val_batch2_pred.jpg"} <= {p.name for p in out.iterdir()}


def test_without_matplotlib_the_csv_table_and_pictures_are_written(tiny_run, tmp_path, monkeypatch):
    trainer, folder = tiny_run
    part = next(p for p in trainer.parts if isinstance(p, EvalReportPart))

    def no_matplotlib():
        raise MatplotlibMissing("drawing the run report's curves needs matplotlib: pip install matplotlib")

    monkeypatch.setattr(report_plots, "_pyplot", no_matplotlib)
    lines = []
    logger.add(lambda m: lines.append(str(m)), level="INFO")
    paths = save_eval_report(part.report, trainer.evaluator.dataloader.dataset, str(tmp_path))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["confusion_matrix.csv", "per_class_table.txt", "val_batch0_labels.jpg",
                            "val_batch0_pred.jpg"])
    assert sorted(map(str, paths)) == sorted(str(tmp_path / n) for n in names)
    assert sum("pip install matplotlib" in line for line in lines) == 1


# ------------------------------------------------------------------------------------------------ the trainer part
def test_the_part_writes_the_report_at_the_end_of_a_run(tiny_run):
    trainer, folder = tiny_run
    part = next(p for p in trainer.parts if isinstance(p, EvalReportPart))
    assert trainer.evaluator.report is True and part.report is trainer.evaluator.last_report
    # one batch of 8 holds the 7 val images: one val_batch picture pair
    assert all((folder / name).is_file() for name in REPORT_FILES + VAL_BATCHES[:2])
    assert not (folder / "val_batch1_labels.jpg").exists()
    summary = trainer.last_eval_report
    assert summary == report_summary(part.report) and set(summary) == {"precision", "recall", "best_conf"}
    log = (folder / "train_log.txt").read_text()
    assert "deploy with --conf" in log and f"run report written to {folder}" in log
    # results.csv takes P and R of each evaluation; the last row holds the last one's
    rows = read_results(folder / "results.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"] and all(r["precision"] != "" for r in rows)
    assert float(rows[-1]["precision"]) == pytest.approx(summary["precision"], abs=1e-5)
    assert float(rows[-1]["recall"]) == pytest.approx(summary["recall"], abs=1e-5)
    evals = [m for m in read_metrics(folder) if "AP50" in m]
    assert len(evals) == 2  # no evaluation of its own


def test_the_part_does_not_change_training(tiny_run, forest_two_epochs):
    trainer, folder = tiny_run
    # the same run without the part: the session's train_argv(out) run (conftest.py; check_data and run_report off)
    plain = forest_two_epochs
    assert not (plain.folder / "PR_curve.png").exists()  # run_report False: no report
    with_part = torch.load(folder / "latest_ckpt.pth", map_location="cpu", weights_only=True)
    without = torch.load(plain.folder / "latest_ckpt.pth", map_location="cpu", weights_only=True)
    for k, v in with_part["model"].items():
        assert torch.equal(v, without["model"][k]), k
    assert plain.best_ap == trainer.best_ap
