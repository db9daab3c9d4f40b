"""COCO-style evaluation: detections mapped back to the original images and scored by pycocotools."""
import contextlib
import copy
import io
import json
import os

import numpy as np
from loguru import logger
from tabulate import tabulate

from yolox.utils import is_main_process, xyxy2xywh

from .inference import image_id, run_inference, scale_to_original
from .run_report import build_report

__all__ = ["COCOEvaluator", "per_class_AP_table", "per_class_AR_table", "coco_bbox_eval", "REPORT_PREVIEW_BATCHES",
           "REPORT_PREVIEW_IMAGES"]

# what the run report's val_batch pictures show: the first batches of the loader (rank 0's), up to 16 images each
REPORT_PREVIEW_BATCHES = 3
REPORT_PREVIEW_IMAGES = 16


def _pairs_table(names, values, headers, columns):
    """Lay (name, value) pairs side by side, `columns` cells (columns // 2 pairs) per row."""
    cells = [c for pair in zip(names, values) for c in pair]
    rows = [cells[i:i + columns] for i in range(0, len(cells), columns)]
    return tabulate(rows, tablefmt="pipe", floatfmt=".3f", headers=list(headers) * (columns // len(headers)),
                    numalign="left")


def per_class_AP_table(coco_eval, class_names, headers=("class", "AP"), colums=6):
    """AP (IoU 0.50:0.95, all areas, 100 detections) of each category, in percent; nan when it has no gt."""
    precisions = coco_eval.eval["precision"]  # (T iou, R recall, K cat, A area, M maxdets)
    assert len(class_names) == precisions.shape[2], "class names must follow the evaluated categories"
    values = []
    for k in range(len(class_names)):
        p = precisions[:, :, k, 0, -1]
        p = p[p > -1]
        values.append(float(np.mean(p) * 100) if p.size else float("nan"))
    return _pairs_table(class_names, values, headers, colums)


def per_class_AR_table(coco_eval, class_names, headers=("class", "AR"), colums=6):
    """AR (IoU 0.50:0.95, all areas, 100 detections) of each category, in percent; nan when it has no gt."""
    recalls = coco_eval.eval["recall"]  # (T iou, K cat, A area, M maxdets)
    assert len(class_names) == recalls.shape[1], "class names must follow the evaluated categories"
    values = []
    for k in range(len(class_names)):
        r = recalls[:, k, 0, -1]
        r = r[r > -1]
        values.append(float(np.mean(r) * 100) if r.size else float("nan"))
    return _pairs_table(class_names, values, headers, colums)


def coco_bbox_eval(coco_gt, detections):
    """Run pycocotools' bbox evaluation of `detections` (list of COCO result dicts) against COCO `coco_gt`.

    Returns the finished COCOeval and the text that summarize() printed.
    """
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress; keep it out of the user's log
        # loadRes adds keys to the dicts it is given; keep the caller's list as it was.
        coco_dt = coco_gt.loadRes(copy.deepcopy(list(detections)))
        coco_eval = COCOeval(coco_gt, coco_dt, "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        coco_eval.summarize()
    return coco_eval, buffer.getvalue()


def _merge_batches(results):
    """Concatenate per-batch (data_list, image_wise) results, keeping each image once: a DistributedSampler pads
    the ranks' shards by repeating images, and a repeated image's detections would count as false positives."""
    data_list, output_data, seen = [], {}, set()
    for batch_list, image_wise in results:
        batch_ids = {d["image_id"] for d in batch_list} | set(image_wise)
        data_list.extend(d for d in batch_list if d["image_id"] not in seen)
        output_data.update({k: v for k, v in image_wise.items() if k not in seen})
        seen |= batch_ids
    return data_list, output_data


def _preview_detections(data_list, image_ids, class_ids):
    """{image id: (n, 6) x1y1x2y2 (original pixels), score, class index} of the detections of image_ids."""
    wanted = set(image_ids)
    cls_index = {c: k for k, c in enumerate(class_ids)}
    rows = {i: [] for i in wanted}
    for d in data_list:
        if d["image_id"] in wanted:
            x, y, w, h = d["bbox"]
            rows[d["image_id"]].append((x, y, x + w, y + h, d["score"], cls_index[d["category_id"]]))
    return {i: np.asarray(r, dtype=np.float64).reshape(-1, 6) for i, r in rows.items()}


class COCOEvaluator:
    """COCO AP evaluation of a model over a validation loader built on a COCO-format dataset.

    The loader yields (imgs, targets, info_imgs, ids) with info_imgs = (heights, widths) of the original images;
    its dataset has `coco` (a pycocotools COCO) and `class_ids` (contiguous class index -> category id).

    report=True (off by default) also builds `last_report` on rank 0 after each evaluation: the run report
    (yolox.evaluators.run_report) of the same detections and COCOeval, with the image ids and detections of the
    first batches in its extra["val_batches"] and extra["val_detections"] for the val_batch pictures.
    """

    report = False
    last_report = None

    def __init__(self, dataloader, img_size, confthre, nmsthre, num_classes, testdev=False, per_class_AP=True,
                 per_class_AR=True, testdev_file="./yolox_testdev_2017.json", report=False):
        class_ids = getattr(getattr(dataloader, "dataset", None), "class_ids", None)
        if class_ids is not None and len(class_ids) != num_classes:
            where = getattr(dataloader.dataset, "ann_path", "the evaluation set")
            raise ValueError(
                f"{where} has {len(class_ids)} categories but the model predicts num_classes = {num_classes}; set "
                f"num_classes {len(class_ids)} in the Exp (or on the command line) or evaluate on matching data"
            )
        self.dataloader = dataloader
        self.img_size = img_size
        self.confthre = confthre
        self.nmsthre = nmsthre
        self.num_classes = num_classes
        self.testdev = testdev
        self.per_class_AP = per_class_AP
        self.per_class_AR = per_class_AR
        self.testdev_file = testdev_file
        self.report = report
        self.last_report = None
        self._preview_ids = []  # image ids of the first batches of this process's last pass (report mode)

    def evaluate(self, model, distributed=False, half=False, trt_file=None, decoder=None, test_size=None,
                 return_outputs=False):
        """(AP50:95, AP50, summary text) on rank 0 ((0, 0, None) elsewhere); with return_outputs, also the
        per-image outputs {image id: {"bboxes", "scores", "categories"}}."""
        if trt_file is not None:
            raise NotImplementedError("TensorRT evaluation is not part of this release; export to ONNX instead")
        self._preview_ids = []
        results, stats = run_inference(
            model, self.dataloader, self.num_classes, self.confthre, self.nmsthre, half=half, decoder=decoder,
            on_batch=self._on_batch, distributed=distributed,
        )
        data_list, output_data = _merge_batches(results)
        eval_results = self.evaluate_prediction(data_list, stats)
        if return_outputs:
            return eval_results, output_data
        return eval_results

    def _on_batch(self, outputs, info_imgs, ids):
        """One batch's (data_list, image_wise); in report mode the ids of the first batches are kept too."""
        if self.report and len(self._preview_ids) < REPORT_PREVIEW_BATCHES:
            self._preview_ids.append([image_id(i) for i in ids][:REPORT_PREVIEW_IMAGES])
        return self.convert_to_coco_format(outputs, info_imgs, ids, return_outputs=True)

    def speed_test(self, model, distributed=False, half=False, decoder=None):
        """Only time forward and NMS over the loader; returns the official time line (on rank 0)."""
        _, stats = run_inference(model, self.dataloader, self.num_classes, self.confthre, self.nmsthre, half=half,
                                 decoder=decoder, distributed=distributed)
        return stats.time_info()

    def convert_to_coco_format(self, outputs, info_imgs, ids, return_outputs=False):
        """Post-processed outputs of one batch -> COCO result dicts in original-image pixels, xywh boxes."""
        data_list, image_wise = [], {}
        class_ids = self.dataloader.dataset.class_ids
        for output, img_h, img_w, img_id in zip(outputs, info_imgs[0], info_imgs[1], ids):
            if output is None:
                continue
            img_id = image_id(img_id)
            bboxes = scale_to_original(output[:, 0:4], float(img_h), float(img_w), self.img_size)  # (n, 4) xyxy
            cls = output[:, 6]
            scores = output[:, 4] * output[:, 5]
            image_wise[img_id] = {
                "bboxes": bboxes.tolist(),
                "scores": scores.tolist(),
                "categories": [class_ids[int(c)] for c in cls],
            }
            bboxes = xyxy2xywh(bboxes.clone())
            for ind in range(bboxes.shape[0]):
                data_list.append({
                    "image_id": img_id,
                    "category_id": class_ids[int(cls[ind])],
                    "bbox": [float(v) for v in bboxes[ind].tolist()],
                    "score": float(scores[ind]),
                    "segmentation": [],
                })
        if return_outputs:
            return data_list, image_wise
        return data_list

    def evaluate_prediction(self, data_dict, statistics):
        """Score the gathered detections on rank 0: (AP50:95, AP50, summary text with per-class tables); in report
        mode also sets last_report from the same detections and COCOeval."""
        self.last_report = None
        if not is_main_process():
            return 0, 0, None
        logger.info("Evaluate in main process...")
        info = statistics.time_info() + "\n"
        if self.testdev:
            os.makedirs(os.path.dirname(os.path.abspath(self.testdev_file)), exist_ok=True)
            with open(self.testdev_file, "w") as f:
                json.dump(data_dict, f)
            info += f"wrote {len(data_dict)} detections to {self.testdev_file} (test-dev: no AP computed here)\n"
            return 0, 0, info
        if len(data_dict) == 0:
            info += "no detections above the confidence threshold: AP is 0\n"
            if self.report:
                self.last_report = self._build_report(self.dataloader.dataset.coco, data_dict, None)
            return 0, 0, info

        coco_gt = self.dataloader.dataset.coco
        coco_eval, summary = coco_bbox_eval(coco_gt, data_dict)
        if self.report:
            self.last_report = self._build_report(coco_gt, data_dict, coco_eval)
        info += summary
        cat_names = [coco_gt.cats[cat_id]["name"] for cat_id in sorted(coco_gt.cats.keys())]
        if self.per_class_AP:
            info += "per class AP:\n" + per_class_AP_table(coco_eval, cat_names) + "\n"
        if self.per_class_AR:
            info += "per class AR:\n" + per_class_AR_table(coco_eval, cat_names) + "\n"
        return float(coco_eval.stats[0]), float(coco_eval.stats[1]), info

    def _build_report(self, coco_gt, data_list, coco_eval):
        """The RunReport of data_list (coco_eval None: no detections, the AP columns are 0), with the val_batch
        previews of the first batches; the ids kept for them are used up."""
        names = getattr(self.dataloader.dataset, "class_names", None)
        if names is not None and len(names) != len(coco_gt.getCatIds()):
            names = None  # the ground truth's own names then
        max_dets = coco_eval.params.maxDets[-1] if coco_eval is not None else 100
        report = build_report(coco_gt, data_list, names, coco_eval=coco_eval, max_dets=max_dets)
        if coco_eval is None:
            report.coco_ap50 = np.where(report.has_instances, 0.0, np.nan)
            report.coco_ap50_95 = report.coco_ap50.copy()
        batches, self._preview_ids = getattr(self, "_preview_ids", []), []
        class_ids = sorted(coco_gt.getCatIds())
        report.extra["val_batches"] = batches
        report.extra["val_detections"] = _preview_detections(data_list, [i for b in batches for i in b], class_ids)
        return report
