"""Pascal VOC 2007/2012 detection dataset (ImageSets lists, XML annotations), official layout and outputs.

`difficult` objects are left out of the training targets; they stay in the XML files, which the VOC evaluator reads.
"""
import os
import xml.etree.ElementTree as ET

import numpy as np
from loguru import logger

from ..dataloading import DATASETS_README
from .datasets_wrapper import CacheDataset, Dataset, read_image_file
from .voc_classes import VOC_CLASSES

__all__ = ["VOCDetection", "AnnotationTransform"]


class AnnotationTransform:
    """VOC XML root -> (labels (n, 5) x1y1x2y2 0-based + class index, (h, w)).

    class_to_ind: {name: index} (VOC_CLASSES by default). keep_difficult=False leaves difficult objects out.
    Counts of clipped / dropped boxes go to `self.clipped` / `self.dropped` (summarised by the dataset).
    """

    def __init__(self, class_to_ind=None, keep_difficult=False):
        self.class_to_ind = class_to_ind or dict(zip(VOC_CLASSES, range(len(VOC_CLASSES))))
        self.keep_difficult = keep_difficult
        self.clipped = []
        self.dropped = []

    def __call__(self, target, source="annotation"):
        size = target.find("size")
        try:
            width = int(float(size.find("width").text))
            height = int(float(size.find("height").text))
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"{source}: no valid <size><width>/<height>") from None
        rows = []
        for k, obj in enumerate(target.iter("object")):
            difficult = obj.find("difficult")
            difficult = difficult is not None and int(difficult.text) == 1
            if difficult and not self.keep_difficult:
                continue
            name = obj.find("name").text.strip()
            if name not in self.class_to_ind:
                raise ValueError(
                    f"{source}: object {k} has class {name!r}, which is not one of the dataset's classes "
                    f"({', '.join(self.class_to_ind)})"
                )
            bbox = obj.find("bndbox")
            try:
                # VOC pixels are 1-based: the official subtracts 1
                box = [int(float(bbox.find(pt).text)) - 1 for pt in ("xmin", "ymin", "xmax", "ymax")]
            except (AttributeError, TypeError, ValueError):
                raise ValueError(f"{source}: object {k} has no valid <bndbox>") from None
            x1, y1 = max(0, box[0]), max(0, box[1])
            x2, y2 = min(width, box[2]), min(height, box[3])
            if x2 <= x1 or y2 <= y1:
                self.dropped.append(f"{source}#{k}")
                continue
            if [x1, y1, x2, y2] != box:
                self.clipped.append(f"{source}#{k}")
            rows.append([x1, y1, x2, y2, self.class_to_ind[name]])
        res = np.array(rows, dtype=np.float64).reshape(-1, 5)
        return res, (height, width)


class VOCDetection(CacheDataset):
    """VOC dataset from `<data_dir>/VOC<year>/{ImageSets/Main/<set>.txt, Annotations/*.xml, JPEGImages/*.jpg}`.

    image_sets: [(year, set name)], e.g. [("2007", "trainval"), ("2012", "trainval")].
    pull_item returns (img, labels (n, 5), (h, w), index) as officially; `ids[i]` = (VOC<year> folder, image name).
    target_transform: None (the default) gives each dataset its own AnnotationTransform(). The official default is one
    AnnotationTransform() instance created once and shared by every dataset, whose clipped / dropped box counts
    then add up across datasets; same result otherwise.
    """

    _pull_item_views = True

    def __init__(
        self,
        data_dir,
        image_sets=(("2007", "trainval"), ("2012", "trainval")),
        img_size=(416, 416),
        preproc=None,
        target_transform=None,
        dataset_name="VOC0712",
        cache=False,
        cache_type="ram",
        on_corrupt_image="raise",
    ):
        self.root = data_dir
        self.image_set = [tuple(s) for s in image_sets]
        self.img_size = img_size
        self.preproc = preproc
        self.target_transform = target_transform or AnnotationTransform()
        self.name = dataset_name
        self._annopath = os.path.join("%s", "Annotations", "%s.xml")
        self._imgpath = os.path.join("%s", "JPEGImages", "%s.jpg")
        self._classes = tuple(self.target_transform.class_to_ind)
        self.cats = [{"id": idx, "name": val} for idx, val in enumerate(self._classes)]
        self.class_ids = list(range(len(self._classes)))

        if not os.path.isdir(data_dir):
            raise FileNotFoundError(
                f"VOC folder not found: {data_dir}. It should hold VOC2007/ (and VOC2012/) as in the VOCdevkit; "
                f"see {DATASETS_README}."
            )
        self.ids = []
        for year, set_name in self.image_set:
            rootpath = os.path.join(self.root, "VOC" + year)
            list_file = os.path.join(rootpath, "ImageSets", "Main", set_name + ".txt")
            if not os.path.isfile(list_file):
                raise FileNotFoundError(
                    f"VOC image list not found: {list_file} (image set ({year!r}, {set_name!r})); "
                    f"see {DATASETS_README}."
                )
            with open(list_file) as f:
                self.ids.extend((rootpath, line.strip()) for line in f if line.strip())
        self.num_imgs = len(self.ids)
        self._load_voc_annotations()

        path_filename = [os.path.relpath(self._imgpath % self.ids[i], self.root) for i in range(self.num_imgs)]
        super().__init__(
            input_dimension=img_size,
            num_imgs=self.num_imgs,
            data_dir=self.root,
            cache_dir_name=f"{self.name}_{'_'.join(y + s for y, s in self.image_set)}",
            path_filename=path_filename,
            cache=cache,
            cache_type=cache_type,
            on_corrupt_image=on_corrupt_image,
        )

    def __len__(self):
        return self.num_imgs

    def _load_voc_annotations(self):
        transform = self.target_transform
        if isinstance(transform, AnnotationTransform):
            transform.clipped, transform.dropped = [], []
        labels, img_hw = [], np.zeros((self.num_imgs, 2), dtype=np.int64)
        for i, img_id in enumerate(self.ids):
            xml_file = self._annopath % img_id
            if not os.path.isfile(xml_file):
                raise FileNotFoundError(f"VOC annotation not found: {xml_file} (image {img_id[1]!r} of the image set)")
            try:
                root = ET.parse(xml_file).getroot()
            except ET.ParseError as e:
                raise ValueError(f"VOC annotation {xml_file} is not valid XML: {e}") from e
            if isinstance(transform, AnnotationTransform):
                res, img_hw[i] = transform(root, xml_file)
            else:  # a user's target_transform(root) -> (labels, (h, w)), as officially
                res, img_hw[i] = transform(root)
            labels.append(np.asarray(res, dtype=np.float64).reshape(-1, 5))
        if isinstance(transform, AnnotationTransform) and (transform.clipped or transform.dropped):
            logger.warning(
                f"VOC annotations of {self.root}: {len(transform.clipped)} box(es) clipped to their image, "
                f"{len(transform.dropped)} dropped for non-positive size"
                + (f" (first: {(transform.dropped or transform.clipped)[0]})")
            )

        counts = np.array([len(x) for x in labels], dtype=np.int64)
        offsets = np.zeros(self.num_imgs + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        flat = np.concatenate(labels, 0) if labels else np.zeros((0, 5))
        ratios = np.minimum(self.img_size[0] / img_hw[:, 0], self.img_size[1] / img_hw[:, 1])
        flat[:, :4] *= np.repeat(ratios, counts)[:, None]
        flat.setflags(write=False)
        self._labels, self._label_offsets, self._img_hw = flat, offsets, img_hw
        self._resized_hw = np.stack(
            [(img_hw[:, 0] * ratios).astype(np.int64), (img_hw[:, 1] * ratios).astype(np.int64)], axis=1
        )

    @property
    def annotations(self):
        """Official layout: [(labels (n, 5), (h, w), (resized h, resized w))] per image (built on demand)."""
        return [
            (self.load_anno(i).copy(), self.img_info(i), tuple(self._resized_hw[i].tolist()))
            for i in range(self.num_imgs)
        ]

    def _image_paths(self):
        return [self._imgpath % img_id for img_id in self.ids]

    def image_path(self, index):
        return self._imgpath % self.ids[index]

    def load_image(self, index, reduction=1):
        """Decode image `index` at its file size (at 1/reduction of it: see read_image_file)."""
        return read_image_file(self.image_path(index), self._img_hw[index],
                               f"{self._annopath % self.ids[index]} (VOC image set)", "fix <size> in the XML", reduction)

    def pull_item(self, index, copy=True):
        """(img resized to img_size, labels (n, 5) x1y1x2y2+class, (orig h, orig w), index)."""
        index, img = self.read_img_checked(index, copy=copy)
        return img, self.load_anno(index).copy(), self.img_info(index), index

    @Dataset.mosaic_getitem
    def __getitem__(self, index):
        img, target, img_info, img_id = self.pull_item(index)
        if self.preproc is not None:
            img, target = self.preproc(img, target, self.input_dim)
        return img, target, img_info, img_id
