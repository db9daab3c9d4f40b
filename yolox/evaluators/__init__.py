"""Evaluators: COCO AP through pycocotools and PASCAL VOC AP."""
from .coco_evaluator import COCOEvaluator
from .voc_evaluator import VOCEvaluator
from .report_plots import draw_val_batch, write_report, write_val_batch
from .run_report import RunReport, build_report, coco_per_class_ap

__all__ = ["COCOEvaluator", "VOCEvaluator"]
__all__ += ["RunReport", "build_report", "coco_per_class_ap", "write_report", "draw_val_batch", "write_val_batch"]
