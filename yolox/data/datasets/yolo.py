"""The Ultralytics YOLO-txt layout (data.yaml, images/ and labels/ folders) as a COCODataset: the split's label files
become an in-memory COCO ground truth, so training, caching, Mosaic and evaluation are those of COCO json."""
import contextlib
import gc

import numpy as np
from loguru import logger

from ..data_yaml import DataYaml, read_data_yaml
from .coco import COCODataset, coco_from_dict
from .datasets_wrapper import CORRUPT_IMAGE_POLICIES
from .yolo_index import class_id_error, load_split_index

__all__ = ["YOLODataset", "coco_dict_of_index"]


def coco_dict_of_index(index, data_yaml, rows):
    """A COCO-format dict of the images `rows` (int array) of a SplitIndex: image ids 1.. in that order, absolute
    file names, boxes in pixels with the label file's class id as category id, every class of the yaml."""
    hw = index.hw[rows]  # (N, 2)
    images = [{"id": i + 1, "file_name": index.image_paths[r], "width": int(w), "height": int(h)}
              for i, (r, (h, w)) in enumerate(zip(rows.tolist(), hw.tolist()))]
    image_id = np.zeros(len(index.image_paths), dtype=np.int64)  # row -> image id, 0 for left-out images
    image_id[rows] = np.arange(1, len(rows) + 1)
    ids = image_id[index.box_image]  # (M,)
    kept = ids > 0
    scale = np.zeros((len(index.image_paths), 2), dtype=np.float64)
    scale[rows] = hw[:, ::-1]  # (N_all, 2) width, height
    wh = scale[index.box_image[kept]]  # (K, 2)
    xyxy = index.boxes[kept] * np.tile(wh, 2)  # (K, 4) pixels
    xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)  # (K, 4)
    area = xywh[:, 2] * xywh[:, 3]
    annotations = [
        {"id": j + 1, "image_id": img, "category_id": cls, "bbox": box, "area": a, "iscrowd": 0}
        for j, (img, cls, box, a) in enumerate(zip(ids[kept].tolist(), index.box_class[kept].tolist(),
                                                   xywh.tolist(), area.tolist()))
    ]
    categories = [{"id": i, "name": n, "supercategory": n} for i, n in zip(data_yaml.ids, data_yaml.names)]
    return {"images": images, "annotations": annotations, "categories": categories}


@contextlib.contextmanager
def _gc_paused():
    """Pause the cyclic garbage collector: building a million small dicts (none of them cyclic) otherwise runs it
    hundreds of times over all of them, which tripled the time of the COCO dict."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _usable_rows(index, on_corrupt_image, where):
    """Rows of the images whose header was read; an unreadable one raises, or with "skip" is left out (warned)."""
    bad = np.flatnonzero(~index.readable)
    if len(bad) and on_corrupt_image == "raise":
        path = index.image_paths[bad[0]]
        raise ValueError(f"cannot read the header of image {path} ({where}): {index.header_errors.get(path, '?')}; "
                         f"replace or remove the file, or set on_corrupt_image skip to leave such images out"
                         + (f" ({len(bad)} such files)" if len(bad) > 1 else ""))
    if len(bad):
        path = index.image_paths[bad[0]]
        logger.warning(f"{where}: {len(bad)} image(s) whose header cannot be read are left out (on_corrupt_image "
                       f"skip), e.g. {path}: {index.header_errors.get(path, '?')}")
    rows = np.flatnonzero(index.readable)
    if not len(rows):
        raise ValueError(f"{where}: none of the {len(index.image_paths)} images can be read")
    return rows


class YOLODataset(COCODataset):
    """The `split` ("train", "val" or "test") of a YOLO-txt dataset described by `data_yaml` (a path or DataYaml).

    Class index k is the k-th class of the yaml in id order (DataYaml); category ids are the label files' ids.
    `truncated_images` lists the JPEGs cut short; `index_from_cache` says whether the index came from its cache.
    """

    def __init__(self, data_yaml, split, img_size=(416, 416), preproc=None, cache=False, cache_type="ram",
                 on_corrupt_image="raise"):
        if on_corrupt_image not in CORRUPT_IMAGE_POLICIES:
            raise ValueError(f"on_corrupt_image={on_corrupt_image!r} is not supported; choose one of "
                             f"{CORRUPT_IMAGE_POLICIES}")
        self.data_yaml = data_yaml if isinstance(data_yaml, DataYaml) else read_data_yaml(data_yaml)
        self.split = split
        source = f"{self.data_yaml.path} ({split})"
        index = load_split_index(self.data_yaml, split)
        error = class_id_error(index, self.data_yaml.ids, self.data_yaml.path)
        if error is not None:
            raise error
        rows = _usable_rows(index, on_corrupt_image, source)
        if index.clipped or index.dropped:
            logger.warning(f"{source}: {index.clipped} box(es) reach outside their image and were clipped, "
                           f"{index.dropped} of no area after clipping left out (the first at {index.first_clipped})")
        self.index_from_cache = index.from_cache
        self.index_seconds = index.seconds
        self.skipped_images = [index.image_paths[i] for i in np.flatnonzero(~index.readable).tolist()]
        self.truncated_images = [index.image_paths[rows[i]] for i in np.flatnonzero(index.truncated[rows]).tolist()]
        self._index, self._rows = index, rows  # for _load_coco_annotations, called by COCODataset.__init__
        with _gc_paused():
            coco = coco_from_dict(coco_dict_of_index(index, self.data_yaml, rows), source)
        super().__init__(data_dir=self.data_yaml.root, json_file=source, name="", img_size=img_size,
                         preproc=preproc, cache=cache, cache_type=cache_type, on_corrupt_image=on_corrupt_image,
                         coco=coco, cache_dir_name=f"yolo_{split}")

    def _load_coco_annotations(self):
        """The label arrays of COCODataset, straight from the split index: the same values as its loop over the
        COCO annotations (tests hold them equal), which costs ~30 us a box (half a minute for a million)."""
        index, rows = self._index, self._rows
        del self._index, self._rows  # the COCO dict holds the boxes from now on
        img_hw = index.hw[rows]  # (N, 2) h, w
        image_row = np.full(len(index.image_paths), -1, dtype=np.int64)
        image_row[rows] = np.arange(len(rows))
        box_row = image_row[index.box_image]  # (M,) row in this dataset, -1 for left-out images
        kept = box_row >= 0
        box_row = box_row[kept]
        ratios = np.minimum(self.img_size[0] / img_hw[:, 0], self.img_size[1] / img_hw[:, 1])  # (N,)
        scale = img_hw[:, ::-1] * ratios[:, None]  # (N, 2) resized w, h
        labels = np.empty((len(box_row), 5), dtype=np.float64)
        labels[:, :4] = index.boxes[kept] * np.tile(scale[box_row], 2)  # (K, 4) x1y1x2y2 in img_size pixels
        labels[:, 4] = np.searchsorted(np.asarray(self.class_ids), index.box_class[kept])  # (K,) class index
        labels.setflags(write=False)
        counts = np.bincount(box_row, minlength=len(rows))  # boxes are in image order already
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])

        self._labels = labels
        self._label_offsets = offsets
        self._img_hw = img_hw
        self._resized_hw = np.stack([(img_hw[:, 0] * ratios).astype(np.int64),
                                     (img_hw[:, 1] * ratios).astype(np.int64)], axis=1)
        self._file_names = np.array([index.image_paths[r] for r in rows.tolist()])
