"""COCO-format detection dataset: (img, target x1y1x2y2+class, (h, w), image id) like the official release.

Labels live in flat numpy arrays (no per-image Python objects), so DataLoader workers do not copy them on access.
"""
import json
import os

import numpy as np
from loguru import logger
from pycocotools.coco import COCO

from ..dataloading import DATASETS_README, get_yolox_datadir
from .datasets_wrapper import CacheDataset, Dataset, read_image_file

__all__ = ["COCODataset", "remove_useless_info", "resolve_annotation_path"]

_MAX_IDS_SHOWN = 10


def remove_useless_info(coco):
    """Drop what training and bbox evaluation never read (licences, urls, segmentations) to save memory."""
    dataset = coco.dataset
    dataset.pop("info", None)
    dataset.pop("licenses", None)
    for img in dataset.get("images", []):
        for key in ("license", "coco_url", "date_captured", "flickr_url"):
            img.pop(key, None)
    for anno in dataset.get("annotations", []):
        anno.pop("segmentation", None)


def _ids_text(ids):
    shown = ", ".join(str(i) for i in ids[:_MAX_IDS_SHOWN])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > _MAX_IDS_SHOWN else "")


def resolve_annotation_path(data_dir, json_file):
    """Where an annotation file is: an absolute path as given; else `<data_dir>/annotations/<json_file>` (the
    official layout) when it exists, else `<data_dir>/<json_file>` when that exists (a Roboflow export's
    `train/_annotations.coco.json`); else the official place, which the loader reports as missing."""
    if os.path.isabs(json_file):
        return json_file
    official = os.path.join(data_dir, "annotations", json_file)
    beside = os.path.join(data_dir, json_file)
    if not os.path.isfile(official) and os.path.isfile(beside):
        return beside
    return official


def _load_coco_json(ann_path, data_dir, require_annotations=True):
    """pycocotools COCO of ann_path, with one clear message when the folder, the file or its JSON is wrong."""
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(
            f"dataset folder not found: {data_dir}. Put the dataset there or point data_dir / $YOLOX_DATADIR "
            f"(now {get_yolox_datadir()}) at it; {DATASETS_README} tells where COCO, VOC and custom data go."
        )
    if not os.path.isfile(ann_path):
        raise FileNotFoundError(
            f"annotation file not found: {ann_path}. Give the annotation file as a name under "
            f"<data_dir>/annotations/, a path relative to data_dir or an absolute path; {DATASETS_README} and docs/custom_data.md show the layouts."
        )
    try:
        with open(ann_path) as f:
            dataset = json.load(f)
    except ValueError as e:
        raise ValueError(f"annotation file {ann_path} is not valid JSON: {e}") from e
    return coco_from_dict(dataset, ann_path, require_annotations)


def coco_from_dict(dataset, source, require_annotations=True):
    """An indexed pycocotools COCO of a COCO-format dict; ValueError naming `source` when a list is missing.

    require_annotations: a training or val file without an "annotations" list is an error (a test-dev image list
    has none legitimately); an export without boxes has "annotations": [].
    """
    if not isinstance(dataset, dict):
        raise ValueError(f"annotation file {source} is not COCO format: its top level is not an object")
    missing = [k for k in ("images", "categories") if k not in dataset]
    if missing:
        raise ValueError(f"annotation file {source} is not COCO format: it has no {' or '.join(missing)} list")
    if require_annotations and "annotations" not in dataset:
        raise ValueError(
            f"annotation file {source} has no 'annotations' list, so every image would train as background; "
            f"export it again with its boxes (a set without boxes has \"annotations\": [])"
        )
    dataset.setdefault("annotations", [])
    coco = COCO()
    coco.dataset = dataset
    remove_useless_info(coco)
    coco.createIndex()
    return coco


class COCODataset(CacheDataset):
    """A COCO-format dataset: the annotation file `json_file` (see `resolve_annotation_path`) and images under
    `<data_dir>/<name>/` (a `file_name` that is an absolute path is taken as it is).

    `coco` gives the annotations as an already built pycocotools COCO (the YOLO-txt layout builds one in memory);
    `json_file` then only names them in messages. `require_annotations=False` accepts an image list without an
    "annotations" list (COCO test-dev). `cache_dir_name`: the folder of the disk cache under `<data_dir>/cache/`
    (by default from `name` and `json_file`).

    Category ids map to contiguous class indices through `class_ids` (sorted ids; `class_ids[k]` gives the id back
    for evaluation). Images without annotations are kept as negatives. Boxes are clipped to the image; boxes of
    non-positive size (or area) are dropped; both are summarised in one warning.
    """

    _pull_item_views = True  # pull_item(index, copy=False) returns a read-only cached image (MosaicDetection)

    def __init__(
        self,
        data_dir=None,
        json_file="instances_train2017.json",
        name="train2017",
        img_size=(416, 416),
        preproc=None,
        cache=False,
        cache_type="ram",
        on_corrupt_image="raise",
        coco=None,
        require_annotations=True,
        cache_dir_name=None,
    ):
        if data_dir is None:
            data_dir = os.path.join(get_yolox_datadir(), "COCO")
        self.data_dir = data_dir
        self.json_file = json_file
        self.name = name
        self.img_size = img_size
        self.preproc = preproc
        if coco is None:
            self.ann_path = resolve_annotation_path(data_dir, json_file)
            self.coco = _load_coco_json(self.ann_path, data_dir, require_annotations)
        else:
            self.ann_path = json_file
            self.coco = coco
        self.ids = np.asarray(self.coco.getImgIds(), dtype=np.int64)
        self.num_imgs = len(self.ids)
        self.class_ids = sorted(self.coco.getCatIds())
        self.cats = self.coco.loadCats(self.class_ids)
        self._classes = tuple(c["name"] for c in self.cats)
        self._load_coco_annotations()

        path_filename = [os.path.join(name, f) for f in self._file_names.tolist()]
        super().__init__(
            input_dimension=img_size,
            num_imgs=self.num_imgs,
            data_dir=data_dir,
            cache_dir_name=cache_dir_name or f"{name}_{os.path.splitext(os.path.basename(json_file))[0]}",
            path_filename=path_filename,
            cache=cache,
            cache_type=cache_type,
            on_corrupt_image=on_corrupt_image,
        )

    def __len__(self):
        return self.num_imgs

    # ------------------------------------------------------------------ annotations
    def _check_references(self):
        """Every annotation must name an existing image and category; else one error naming the annotation ids."""
        anns = self.coco.dataset["annotations"]
        img_ids = set(self.coco.imgs)
        cat_ids = set(self.coco.cats)
        bad_img = [a.get("id") for a in anns if a.get("image_id") not in img_ids]
        bad_cat = [a.get("id") for a in anns if a.get("category_id") not in cat_ids]
        problems = []
        if bad_img:
            problems.append(f"annotation id(s) {_ids_text(bad_img)} reference an image id that is not in 'images'")
        if bad_cat:
            problems.append(
                f"annotation id(s) {_ids_text(bad_cat)} reference a category id that is not in 'categories' "
                f"(known: {sorted(cat_ids)})"
            )
        if problems:
            raise ValueError(f"{self.ann_path}: " + "; ".join(problems) + ". Fix or remove these annotations.")

    def _load_coco_annotations(self):
        """Fill the flat label arrays: labels (M, 5) x1y1x2y2 (scaled to img_size) + class, per-image offsets."""
        self._check_references()
        n = self.num_imgs
        img_hw = np.zeros((n, 2), dtype=np.int64)
        file_names = []
        for i, img_id in enumerate(self.ids.tolist()):
            im_ann = self.coco.imgs[img_id]
            try:
                img_hw[i] = (int(im_ann["height"]), int(im_ann["width"]))
            except (KeyError, TypeError, ValueError):
                raise ValueError(
                    f"{self.ann_path}: image id {img_id} has no valid 'width'/'height'; both are required"
                ) from None
            if img_hw[i].min() <= 0:
                raise ValueError(f"{self.ann_path}: image id {img_id} has size {im_ann['width']}x{im_ann['height']}")
            file_names.append(im_ann.get("file_name", f"{img_id:012}.jpg"))

        cat_index = {cat_id: k for k, cat_id in enumerate(self.class_ids)}
        per_image = [[] for _ in range(n)]
        row_of = {img_id: i for i, img_id in enumerate(self.ids.tolist())}
        clipped, dropped = [], []
        for ann in self.coco.dataset["annotations"]:
            if ann.get("iscrowd", 0):
                continue  # crowd regions are for evaluation only, as officially
            i = row_of[ann["image_id"]]
            height, width = img_hw[i]
            bbox = ann.get("bbox")
            if (not isinstance(bbox, (list, tuple)) or len(bbox) != 4
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)
                    or not np.isfinite(bbox).all()):
                raise ValueError(
                    f"{self.ann_path}: annotation id {ann.get('id')} has bbox {bbox!r}; a bbox is 4 finite numbers "
                    f"[x, y, width, height] in pixels: fix or remove this annotation"
                )
            x, y, w, h = (float(v) for v in bbox)
            x1, y1 = max(0.0, x), max(0.0, y)
            x2, y2 = min(float(width), x + max(0.0, w)), min(float(height), y + max(0.0, h))
            if ann.get("area", w * h) <= 0 or x2 <= x1 or y2 <= y1:
                dropped.append(ann.get("id"))
                continue
            if (x1, y1, x2, y2) != (x, y, x + w, y + h):
                clipped.append(ann.get("id"))
            per_image[i].append((x1, y1, x2, y2, cat_index[ann["category_id"]]))
        if clipped or dropped:
            logger.warning(
                f"{self.ann_path}: {len(clipped)} box(es) clipped to their image"
                + (f" (annotation ids {_ids_text(clipped)})" if clipped else "")
                + f", {len(dropped)} dropped for non-positive size or area"
                + (f" (annotation ids {_ids_text(dropped)})" if dropped else "")
            )
        # annotation ids per reason, for yolox.data.data_check's report
        self.box_report = {"clipped": clipped, "dropped": dropped}

        counts = np.array([len(p) for p in per_image], dtype=np.int64)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        labels = np.zeros((int(offsets[-1]), 5), dtype=np.float64)
        if len(labels):
            labels[:] = [box for p in per_image for box in p]
        ratios = np.minimum(self.img_size[0] / img_hw[:, 0], self.img_size[1] / img_hw[:, 1])  # (N,)
        labels[:, :4] *= np.repeat(ratios, counts)[:, None]
        labels.setflags(write=False)

        self._labels = labels
        self._label_offsets = offsets
        self._img_hw = img_hw
        self._resized_hw = np.stack(
            [(img_hw[:, 0] * ratios).astype(np.int64), (img_hw[:, 1] * ratios).astype(np.int64)], axis=1
        )
        self._file_names = np.array(file_names)

    @property
    def class_names(self):
        """The category names in class-index order (categories sorted by id)."""
        return self._classes

    @property
    def annotations(self):
        """Official layout: [(labels (n, 5), (h, w), (resized h, resized w), file_name)] per image (built on demand)."""
        return [
            (self.load_anno(i).copy(), self.img_info(i), tuple(self._resized_hw[i].tolist()), str(self._file_names[i]))
            for i in range(self.num_imgs)
        ]

    # ------------------------------------------------------------------ images
    def _image_paths(self):
        return [os.path.join(self.data_dir, p) for p in self.path_filename]

    def image_path(self, index):
        return os.path.join(self.data_dir, self.name, str(self._file_names[index]))

    def load_image(self, index, reduction=1):
        """Decode image `index` at its file size (at 1/reduction of it: see read_image_file)."""
        return read_image_file(self.image_path(index), self._img_hw[index],
                               f"image id {int(self.ids[index])} of {self.ann_path}", "fix 'width'/'height' in the json",
                               reduction)

    def pull_item(self, index, copy=True):
        """(img resized to img_size, labels (n, 5) x1y1x2y2+class, (orig h, orig w), np.array([image id])).

        With on_corrupt_image="skip", an unreadable image is replaced by the next readable one (its own labels).
        copy=False may return a read-only view of the cached image.
        """
        index, img = self.read_img_checked(index, copy=copy)
        return img, self.load_anno(index).copy(), self.img_info(index), self._item_id(index)

    def _item_id(self, index):
        return np.array([self.ids[index]])

    @Dataset.mosaic_getitem
    def __getitem__(self, index):
        img, target, img_info, img_id = self.pull_item(index)
        if self.preproc is not None:
            img, target = self.preproc(img, target, self.input_dim)
        return img, target, img_info, img_id
