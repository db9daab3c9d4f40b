"""PASCAL VOC evaluation of a model: per-class AP at IoU 0.5 and 0.5:0.95, mAP over classes, a per-class table."""
import numpy as np
from loguru import logger
from tabulate import tabulate

from yolox.utils import is_main_process

from .inference import image_id, run_inference, scale_to_original
from .voc_eval import class_pr_curve, parse_rec, voc_ap

__all__ = ["VOCEvaluator", "voc_map", "IOU_THRESHOLDS"]

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)


def voc_map(detections, ground_truth, num_classes, use_07_metric=True, iou_thresholds=IOU_THRESHOLDS):
    """AP table (num_classes, len(iou_thresholds)); nan for a class without non-difficult gt.

    detections: {image key: (boxes (n, 4) x1y1x2y2, classes (n,), scores (n,))};
    ground_truth: {image key: (boxes (G, 4), classes (G,), difficult (G,) bool)}; both in the same pixel frame.
    """
    aps = np.full((num_classes, len(iou_thresholds)), np.nan)
    for c in range(num_classes):
        dets = [
            (key, float(s), b)
            for key, (boxes, classes, scores) in detections.items()
            for b, k, s in zip(np.asarray(boxes).reshape(-1, 4), np.asarray(classes).reshape(-1), np.asarray(scores).reshape(-1))
            if int(k) == c
        ]
        gts = {}
        for key, (boxes, classes, difficult) in ground_truth.items():
            mask = np.asarray(classes).reshape(-1) == c
            gts[key] = (np.asarray(boxes, dtype=np.float64).reshape(-1, 4)[mask], np.asarray(difficult, dtype=bool)[mask])
        for t, thr in enumerate(iou_thresholds):
            rec, prec, npos = class_pr_curve(dets, gts, ovthresh=thr)
            if npos > 0:
                aps[c, t] = voc_ap(rec, prec, use_07_metric)
    return aps


def _default_use_07_metric(dataset):
    """VOC2007 data is scored with the 11-point metric, later years with the area (official rule: year < 2010)."""
    image_sets = getattr(dataset, "image_set", None) or getattr(dataset, "image_sets", None)
    try:
        return int(image_sets[0][0]) < 2010
    except (TypeError, ValueError, IndexError, KeyError):
        return True


def read_voc_ground_truth(dataset, class_names):
    """{dataset index: (boxes, classes, difficult)} read from each image's VOC XML (official VOCDetection layout:
    dataset.ids[i] = (root, name) and dataset._annopath = "%s/Annotations/%s.xml"). Objects of unknown classes
    are skipped."""
    if not (hasattr(dataset, "ids") and hasattr(dataset, "_annopath")):
        raise TypeError(
            f"{type(dataset).__name__} does not expose `ids` and `_annopath` like VOCDetection; the VOC evaluator "
            f"reads each image's XML annotation through them (difficult flags are needed for VOC AP)"
        )
    index_of = {name: i for i, name in enumerate(class_names)}
    ground_truth = {}
    for i in range(len(dataset.ids)):
        objs = [o for o in parse_rec(dataset._annopath % tuple(dataset.ids[i])) if o["name"] in index_of]
        ground_truth[i] = (
            np.asarray([o["bbox"] for o in objs], dtype=np.float64).reshape(-1, 4),
            np.asarray([index_of[o["name"]] for o in objs], dtype=np.int64),
            np.asarray([o["difficult"] for o in objs], dtype=bool),
        )
    return ground_truth


class VOCEvaluator:
    """VOC AP evaluation over a loader on a VOCDetection-like dataset (ids are dataset indices, as officially)."""

    def __init__(self, dataloader, img_size, confthre, nmsthre, num_classes, use_07_metric=None):
        self.dataloader = dataloader
        self.img_size = img_size
        self.confthre = confthre
        self.nmsthre = nmsthre
        self.num_classes = num_classes
        self.use_07_metric = use_07_metric

    def evaluate(self, model, distributed=False, half=False, trt_file=None, decoder=None, test_size=None,
                 return_outputs=False):
        """(mAP50:95, mAP50, summary text) on rank 0 ((0, 0, None) elsewhere); with return_outputs also the
        per-image detections {index: (boxes, classes, scores)} in original-image pixels."""
        if trt_file is not None:
            raise NotImplementedError("TensorRT evaluation is not part of this release; export to ONNX instead")
        results, stats = run_inference(model, self.dataloader, self.num_classes, self.confthre, self.nmsthre,
                                       half=half, decoder=decoder, on_batch=self.convert_to_voc_format,
                                       distributed=distributed)
        data_dict = {k: v for batch in results for k, v in batch.items()}
        eval_results = self.evaluate_prediction(data_dict, stats)
        if return_outputs:
            return eval_results, data_dict
        return eval_results

    def speed_test(self, model, distributed=False, half=False, decoder=None):
        _, stats = run_inference(model, self.dataloader, self.num_classes, self.confthre, self.nmsthre, half=half,
                                 decoder=decoder, distributed=distributed)
        return stats.time_info()

    def convert_to_voc_format(self, outputs, info_imgs, ids):
        """One batch -> {image index: (boxes (n, 4) original pixels, classes (n,), scores (n,))} as numpy."""
        out = {}
        for output, img_h, img_w, img_id in zip(outputs, info_imgs[0], info_imgs[1], ids):
            if output is None:
                out[image_id(img_id)] = (np.zeros((0, 4)), np.zeros(0, dtype=np.int64), np.zeros(0))
                continue
            boxes = scale_to_original(output[:, 0:4], float(img_h), float(img_w), self.img_size)
            out[image_id(img_id)] = (boxes.numpy(), output[:, 6].long().numpy(), (output[:, 4] * output[:, 5]).numpy())
        return out

    def evaluate_prediction(self, data_dict, statistics):
        if not is_main_process():
            return 0, 0, None
        logger.info("Evaluate in main process...")
        info = statistics.time_info() + "\n"
        dataset = self.dataloader.dataset
        class_names = list(getattr(dataset, "_classes", None) or [str(i) for i in range(self.num_classes)])
        use_07 = _default_use_07_metric(dataset) if self.use_07_metric is None else self.use_07_metric
        ground_truth = read_voc_ground_truth(dataset, class_names)
        # Predictions are 0-based pixels (the dataset subtracts 1 from the XML); the XML is 1-based.
        detections = {k: (b + 1.0, c, s) for k, (b, c, s) in data_dict.items()}
        aps = voc_map(detections, ground_truth, self.num_classes, use_07_metric=use_07)
        info += self.summary(aps, class_names, use_07)
        if np.all(np.isnan(aps)):
            return 0, 0, info
        return float(np.nanmean(np.nanmean(aps, axis=1))), float(np.nanmean(aps[:, 0])), info

    @staticmethod
    def summary(aps, class_names, use_07_metric):
        """Per-class table of AP50 and AP50:95 (percent) and the mAP line over the classes that have gts."""
        rows = [[name, aps[i, 0] * 100, np.mean(aps[i]) * 100] for i, name in enumerate(class_names[:len(aps)])]
        table = tabulate(rows, headers=["class", "AP50", "AP50:95"], tablefmt="pipe", floatfmt=".2f", numalign="left")
        metric = "VOC07 11-point" if use_07_metric else "area under the PR curve"
        with np.errstate(all="ignore"):
            m50 = np.nanmean(aps[:, 0]) * 100 if not np.all(np.isnan(aps)) else 0.0
            m5095 = np.nanmean(np.nanmean(aps, axis=1)) * 100 if not np.all(np.isnan(aps)) else 0.0
        return f"VOC AP ({metric}):\n{table}\nmAP50: {m50:.2f}, mAP50:95: {m5095:.2f}\n"
