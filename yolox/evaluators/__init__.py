"""Evaluators: COCO AP through pycocotools and PASCAL VOC AP."""
from .coco_evaluator import COCOEvaluator
from .voc_evaluator import VOCEvaluator

__all__ = ["COCOEvaluator", "VOCEvaluator"]
