"""The run report of an evaluation (per-class table, PR/F1/P/R curves, confusion matrices, val_batch pictures) written
to a folder, as `tools/eval.py --report` and the end of a training run (EvalReportPart) do."""
import os

import numpy as np
from loguru import logger

from yolox.evaluators.report_plots import CONFUSION_CSV_FILE, REPORT_TABLE_FILE, write_report, write_val_batch
from yolox.utils import MatplotlibMissing

from .parts import TrainerPart

__all__ = ["EvalReportPart", "save_eval_report", "report_summary", "val_batch_inputs", "enable_report",
           "VAL_BATCH_CONF"]

VAL_BATCH_CONF = 0.25  # predictions drawn in val_batch*_pred.jpg: the usual picture threshold, not the AP's 0.001


def enable_report(evaluator):
    """Switch an evaluator to report mode; False when it has none (not a COCO-style evaluator)."""
    if not hasattr(evaluator, "report"):
        return False
    evaluator.report = True
    return True


def report_summary(report):
    """The numbers results.csv takes from a report: {"precision", "recall"} (means at the best F1), "best_conf"."""
    if report is None:
        return None
    return {"precision": report.mean(report.precision), "recall": report.mean(report.recall),
            "best_conf": float(report.best_conf)}


def _original_labels(dataset, index):
    """(n, 5) x1y1x2y2 + class of image `index` in its file's pixels (the dataset scales them to its img_size)."""
    labels = np.array(dataset.load_anno(index), dtype=np.float64).reshape(-1, 5)
    h, w = dataset.img_info(index)
    labels[:, :4] /= min(dataset.img_size[0] / h, dataset.img_size[1] / w)
    return labels


def val_batch_inputs(dataset, image_ids, detections):
    """(images, labels, preds, captions) of the images image_ids of dataset for write_val_batch; detections:
    {image id: (n, 6) x1y1x2y2, score, class index} in original pixels."""
    index_of = {int(i): k for k, i in enumerate(np.asarray(dataset.ids).reshape(-1).tolist())}
    images, labels, preds, captions = [], [], [], []
    for img_id in image_ids:
        k = index_of[int(img_id)]
        images.append(dataset.load_image(k))
        labels.append(_original_labels(dataset, k))
        preds.append(detections.get(int(img_id), np.zeros((0, 6))))
        path = dataset.image_path(k) if hasattr(dataset, "image_path") else f"id {img_id}"
        captions.append(os.path.basename(str(path)))
    return images, labels, preds, captions


def _can_draw(dataset):
    return all(hasattr(dataset, a) for a in ("ids", "load_image", "load_anno", "img_info", "img_size"))


def _write_val_batches(report, dataset, out_dir):
    """val_batch{i}_labels.jpg / _pred.jpg of the batches the evaluator kept; their paths."""
    batches = [b for b in report.extra.get("val_batches", []) if b]
    if batches and not _can_draw(dataset):
        logger.info(f"val_batch pictures left out: {type(dataset).__name__} is not a COCO-style dataset")
        return []
    paths = []
    for i, ids in enumerate(batches):
        images, labels, preds, captions = val_batch_inputs(dataset, ids, report.extra.get("val_detections", {}))
        paths += write_val_batch(out_dir, i, images, labels, preds, report.class_names, conf=VAL_BATCH_CONF,
                                 captions=captions)
    return paths


def save_eval_report(report, dataset, out_dir):
    """Write the report's files into out_dir and log the per-class table, the confidence to deploy with and where
    the files are; without matplotlib the pictures of curves are left out (one line). Returns the paths."""
    missing = None
    try:
        paths = write_report(report, out_dir)
    except MatplotlibMissing as e:
        missing = str(e)
        paths = [os.path.join(out_dir, name) for name in (CONFUSION_CSV_FILE, REPORT_TABLE_FILE)]
    paths += _write_val_batches(report, dataset, out_dir)
    logger.info(f"run report, IoU {report.iou} ({report.num_detections} detections, AP from pycocotools):\n"
                f"{report.table()}")
    logger.info(f"deploy with --conf {report.best_conf:.3f} (best mean F1 {report.best_f1:.3f})")
    if missing:
        logger.info(f"run report: curves and confusion matrix pictures left out: {missing}")
    logger.info(f"run report written to {os.path.abspath(out_dir)}: {', '.join(os.path.basename(p) for p in paths)}")
    return paths


class EvalReportPart(TrainerPart):
    """Puts the trainer's evaluator in report mode; after each evaluation sets trainer.last_eval_report (the
    report_summary dict, for results.csv); at the end of a finished run rank 0 writes the last evaluation's report
    into the run folder. It reads what the evaluation made: no extra pass, no random numbers."""

    def __init__(self):
        self.report = None  # the RunReport of the last evaluation (rank 0)
        self.enabled = False

    def before_train(self, trainer):
        trainer.last_eval_report = None
        if not getattr(trainer.exp, "run_report", True):
            return  # Exp.run_report False: no report, results.csv without precision and recall
        self.enabled = enable_report(trainer.evaluator)
        if not self.enabled and trainer.rank == 0:
            logger.info(f"run report off: {type(trainer.evaluator).__name__} has no report mode (COCO-style "
                        "evaluators have)")

    def evaluated(self, trainer, ap50_95, ap50):
        """Right after the evaluation, before the other parts' after_epoch (results.csv reads the summary there)."""
        self._take(trainer)

    def after_epoch(self, trainer, evaluated):
        if evaluated:
            self._take(trainer)

    def _take(self, trainer):
        report = getattr(trainer.evaluator, "last_report", None) if self.enabled else None
        if report is not None:
            self.report = report
        trainer.last_eval_report = report_summary(report)

    def after_train(self, trainer, finished):
        if not finished or trainer.rank != 0 or self.report is None:
            return
        dataset = getattr(getattr(trainer.evaluator, "dataloader", None), "dataset", None)
        try:
            save_eval_report(self.report, dataset, trainer.file_name)
        except (OSError, ValueError) as e:  # training is done and saved: say why the report is missing, end cleanly
            logger.warning(f"run report not written to {trainer.file_name}: {type(e).__name__}: {e}")
