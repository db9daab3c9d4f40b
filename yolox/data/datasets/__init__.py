"""Detection datasets: COCO-format, Pascal VOC, the Mosaic/MixUp wrapper, and the dataset base classes."""
from .coco import COCODataset
from .coco_classes import COCO_CLASSES
from .datasets_wrapper import CacheDataset, ConcatDataset, CorruptImageError, Dataset, MixConcatDataset
from .mosaicdetection import MosaicDetection
from .voc import AnnotationTransform, VOCDetection
from .voc_classes import VOC_CLASSES
from .yolo import YOLODataset
