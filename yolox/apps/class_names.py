"""Class names for an Exp: set on the Exp, read from its COCO-format annotation file, or the COCO/VOC defaults."""
import json
import os

from loguru import logger

__all__ = ["class_names_for_exp", "class_names_from_coco_json"]


def class_names_from_coco_json(json_path):
    """Category names of a COCO-format annotation file, ordered by category id (the datasets' class order)."""
    with open(json_path) as f:
        categories = json.load(f).get("categories", [])
    return [c["name"] for c in sorted(categories, key=lambda c: c["id"])]


def _annotation_candidates(exp):
    """Where the Exp's val annotation file would be (see resolve_annotation_path: any COCO layout)."""
    val_ann = getattr(exp, "val_ann", None)
    if not val_ann:
        return []
    try:
        from yolox.data import get_yolox_datadir
        from yolox.data.datasets.coco import resolve_annotation_path
    except ImportError:
        return []
    data_dir = getattr(exp, "data_dir", None)
    if data_dir is None:
        data_dir = os.path.join(get_yolox_datadir(), "COCO")  # the default COCO location, as the dataset resolves it
    return [resolve_annotation_path(data_dir, val_ann)]


def class_names_for_exp(exp):
    """The class names a model of this Exp predicts, in class-index order, num_classes of them.

    Looked up in order: `exp.class_names` (from data_yaml when it is set); the categories of the Exp's val annotation file (custom COCO-format
    data); COCO_CLASSES for 80 classes, VOC_CLASSES for 20; otherwise "0", "1", ...
    """
    if hasattr(exp, "sync_classes_with_data"):
        exp.sync_classes_with_data()  # data_yaml: its names and num_classes
    num_classes = int(exp.num_classes)
    names = getattr(exp, "class_names", None)
    if names:
        names = list(names)
        if len(names) != num_classes:
            raise ValueError(
                f"Exp {getattr(exp, 'exp_name', '')!r} has {len(names)} class_names but num_classes = {num_classes}; "
                f"make them agree in the Exp file"
            )
        return names
    for path in _annotation_candidates(exp):
        if os.path.isfile(path):
            names = class_names_from_coco_json(path)
            if len(names) == num_classes:
                return names
            logger.warning(f"{path} has {len(names)} categories but the Exp has num_classes = {num_classes}; "
                           f"not using its names")
    try:
        from yolox.data import COCO_CLASSES, VOC_CLASSES
    except ImportError:
        COCO_CLASSES, VOC_CLASSES = (), ()
    if num_classes == len(COCO_CLASSES) and num_classes:
        return list(COCO_CLASSES)
    if num_classes == len(VOC_CLASSES) and num_classes:
        return list(VOC_CLASSES)
    logger.warning(f"no class names found for num_classes = {num_classes}; labelling boxes with class numbers "
                   f"(set `self.class_names` in the Exp to name them)")
    return [str(i) for i in range(num_classes)]
