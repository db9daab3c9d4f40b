"""MosaicDetection: the official Mosaic (4 images, random affine) and MixUp wrapper, rendered by fast warps.

Random numbers are drawn from `random` in the official order, so a seed gives the official parameters; the
images come from yolox.data.mosaic_warp (one warp per source image, uint8), equal to the official up to
interpolation (the tests compare it with the direct implementation in tests/oracles/mosaic.py).
"""
import random

import numpy as np

from ..data_augment import apply_affine_to_bboxes, get_affine_matrix
from ..mosaic_warp import blend_mixup_into, decode_reduction, mixup_inverse_matrix, warp_mosaic_tiles
from .datasets_wrapper import Dataset

__all__ = ["MosaicDetection", "get_mosaic_coordinate", "mixup_boxes"]


def get_mosaic_coordinate(mosaic_image, mosaic_index, xc, yc, w, h, input_h, input_w):
    """Where tile `mosaic_index` (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right) of a w x h image goes.

    Returns ((x1, y1, x2, y2) in the 2x canvas, (x1, y1, x2, y2) of the part of the image shown there).
    """
    if mosaic_index == 0:
        x1, y1, x2, y2 = max(xc - w, 0), max(yc - h, 0), xc, yc
        small_coord = w - (x2 - x1), h - (y2 - y1), w, h
    elif mosaic_index == 1:
        x1, y1, x2, y2 = xc, max(yc - h, 0), min(xc + w, input_w * 2), yc
        small_coord = 0, h - (y2 - y1), min(w, x2 - x1), h
    elif mosaic_index == 2:
        x1, y1, x2, y2 = max(xc - w, 0), yc, xc, min(input_h * 2, yc + h)
        small_coord = w - (x2 - x1), 0, w, min(y2 - y1, h)
    elif mosaic_index == 3:
        x1, y1, x2, y2 = xc, yc, min(xc + w, input_w * 2), min(input_h * 2, yc + h)
        small_coord = 0, 0, min(w, x2 - x1), min(y2 - y1, h)
    else:
        raise ValueError(f"mosaic_index must be 0-3, got {mosaic_index}")
    return (x1, y1, x2, y2), small_coord


def place_tile_labels(labels, scale, padw, padh):
    """xyxy labels of a source image moved into the mosaic canvas: scaled, then shifted by (padw, padh)."""
    out = labels.copy()
    if labels.size > 0:
        out[:, 0] = scale * labels[:, 0] + padw
        out[:, 1] = scale * labels[:, 1] + padh
        out[:, 2] = scale * labels[:, 2] + padw
        out[:, 3] = scale * labels[:, 3] + padh
    return out


def clip_to_canvas(labels, input_h, input_w):
    """Clip xyxy labels to the 2x mosaic canvas, in place."""
    np.clip(labels[:, 0], 0, 2 * input_w, out=labels[:, 0])
    np.clip(labels[:, 1], 0, 2 * input_h, out=labels[:, 1])
    np.clip(labels[:, 2], 0, 2 * input_w, out=labels[:, 2])
    np.clip(labels[:, 3], 0, 2 * input_h, out=labels[:, 3])
    return labels


def mixup_boxes(cp_labels, scale, jit_wh, flip, offset, target_wh):
    """Official MixUp labels: (n, 5) x1y1x2y2+class scaled, clipped to the jittered image, flipped, shifted, clipped."""
    ow, oh = jit_wh
    boxes = cp_labels[:, :4] * scale
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, ow)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, oh)
    if flip:
        boxes[:, 0::2] = ow - boxes[:, 0::2][:, ::-1]
    boxes[:, 0::2] = np.clip(boxes[:, 0::2] - offset[0], 0, target_wh[0])
    boxes[:, 1::2] = np.clip(boxes[:, 1::2] - offset[1], 0, target_wh[1])
    return np.hstack((boxes, cp_labels[:, 4:5]))


def _read_once(source, index, reads):
    """source(reduction) remembered in `reads` under (index, reduction): the warps only read the image, so the
    same array serves every tile of the sample that shows it."""

    def read(reduction=1):
        key = (index, reduction)
        if key not in reads:
            reads[key] = source(reduction)
        return reads[key]

    read.max_reduction = getattr(source, "max_reduction", 1)
    return read


class MosaicDetection(Dataset):
    """Detection dataset wrapper doing Mosaic (with probability mosaic_prob) then MixUp (mixup_prob).

    dataset: a dataset with pull_item / load_anno / input_dim (COCODataset, VOCDetection, ...).
    img_size: output (h, w). preproc: e.g. TrainTransform; None returns the uint8 image and xyxy labels.
    """

    def __init__(
        self,
        dataset,
        img_size,
        mosaic=True,
        preproc=None,
        degrees=10.0,
        translate=0.1,
        mosaic_scale=(0.5, 1.5),
        mixup_scale=(0.5, 1.5),
        shear=2.0,
        enable_mixup=True,
        mosaic_prob=1.0,
        mixup_prob=1.0,
        *args,
    ):
        super().__init__(img_size, mosaic=mosaic)
        self._dataset = dataset
        self.preproc = preproc
        self.degrees = degrees
        self.translate = translate
        self.scale = mosaic_scale
        self.shear = shear
        self.mixup_scale = mixup_scale
        self.enable_mosaic = mosaic
        self.enable_mixup = enable_mixup
        self.mosaic_prob = mosaic_prob
        self.mixup_prob = mixup_prob
        self._mosaic_closed = False
        self._sample_reads = None
        # read-only cached images can be warped without a copy (only datasets that say so)
        self._views = bool(getattr(dataset, "_pull_item_views", False))

    def __len__(self):
        return len(self._dataset)

    def close_mosaic(self):
        """Turn Mosaic and MixUp off for good (the last no-aug epochs), whatever the batch sampler says."""
        self._mosaic_closed = True
        self.enable_mosaic = False

    def _pull(self, index):
        """(image, labels, resized (h, w), id) of a source image that is only read and warped, never written.

        Datasets with pull_unresized (COCO, VOC) give the decoded file unresized when there is no cache: the warps
        fold the resize to `resized (h, w)` in (the official resizes every image first, then warps the copy).
        """
        if hasattr(self._dataset, "pull_unresized"):
            return self._dataset.pull_unresized(index)
        img, labels, _, img_id = (self._dataset.pull_item(index, copy=False) if self._views
                                  else self._dataset.pull_item(index))
        return img, labels, img.shape[:2], img_id

    def _lazy_pull(self, index):
        """(source, labels, resized (h, w), source (h, w), id): source is the image, or, for datasets with
        lazy_pull (COCO, VOC), a function that reads it when called (see warp_mosaic_tiles). Within a sample, an
        image drawn twice (two tiles, or a tile and the MixUp image) is decoded once at each reduction."""
        lazy = getattr(self._dataset, "lazy_pull", None)
        pulled = lazy(index) if lazy is not None else None
        if pulled is not None:
            if callable(pulled[0]) and self._sample_reads is not None:
                pulled = (_read_once(pulled[0], index, self._sample_reads),) + tuple(pulled[1:])
            return pulled
        img, labels, resized_hw, img_id = self._pull(index)
        return img, labels, resized_hw, img.shape[:2], img_id

    def _finish(self, img, labels, input_dim):
        if self.preproc is None:
            return img, labels
        return self.preproc(img, labels, input_dim)

    @Dataset.mosaic_getitem
    def __getitem__(self, idx):
        self._sample_reads = {}  # (index, reduction) -> the image decoded for this sample
        try:
            return self._mosaic_or_plain(idx)
        finally:
            self._sample_reads = None

    def _mosaic_or_plain(self, idx):
        if self.enable_mosaic and not self._mosaic_closed and random.random() < self.mosaic_prob:
            input_h, input_w = self._dataset.input_dim[0], self._dataset.input_dim[1]
            yc = int(random.uniform(0.5 * input_h, 1.5 * input_h))
            xc = int(random.uniform(0.5 * input_w, 1.5 * input_w))
            indices = [idx] + [random.randint(0, len(self._dataset) - 1) for _ in range(3)]

            tiles, mosaic_labels = [], []
            for i_mosaic, index in enumerate(indices):
                # (h0, w0): size after the official resize; a tile's image is read only if it shows in the output
                source, _labels, (h0, w0), src_hw, img_id = self._lazy_pull(index)
                scale = min(1.0 * input_h / h0, 1.0 * input_w / w0)
                h, w = int(h0 * scale), int(w0 * scale)
                large, small = get_mosaic_coordinate(None, i_mosaic, xc, yc, w, h, input_h, input_w)
                tiles.append((source, src_hw, (h, w), large, small))
                padw, padh = large[0] - small[0], large[1] - small[1]
                mosaic_labels.append(place_tile_labels(_labels, scale, padw, padh))

            mosaic_labels = clip_to_canvas(np.concatenate(mosaic_labels, 0), input_h, input_w)

            target_size = (input_w, input_h)
            M, scale = get_affine_matrix(target_size, self.degrees, self.translate, self.scale, self.shear)
            mosaic_img = np.full((input_h, input_w, 3), 114, dtype=np.uint8)
            warp_mosaic_tiles(mosaic_img, tiles, M)
            if len(mosaic_labels) > 0:
                mosaic_labels = apply_affine_to_bboxes(mosaic_labels, target_size, M, scale)

            if self.enable_mixup and len(mosaic_labels) != 0 and random.random() < self.mixup_prob:
                mosaic_img, mosaic_labels = self.mixup(mosaic_img, mosaic_labels, self.input_dim)

            mix_img, padded_labels = self._finish(mosaic_img, mosaic_labels, self.input_dim)
            # img_info and img_id are not used for training (a mosaic has no single source image)
            img_info = (input_h, input_w)
            return mix_img, padded_labels, img_info, img_id

        self._dataset._input_dim = self.input_dim
        img, label, img_info, img_id = self._dataset.pull_item(idx)
        img, label = self._finish(img, label, self.input_dim)
        return img, label, img_info, img_id

    def mixup(self, origin_img, origin_labels, input_dim):
        """Blend origin_img (uint8, changed in place) 50/50 with a jittered, maybe flipped, labelled image."""
        jit_factor = random.uniform(*self.mixup_scale)
        flip = random.uniform(0, 1) > 0.5
        cp_labels = []
        while len(cp_labels) == 0:
            cp_index = random.randint(0, self.__len__() - 1)
            cp_labels = self._dataset.load_anno(cp_index)
        source, cp_labels, resized_hw, src_hw, _ = self._lazy_pull(cp_index)

        input_h, input_w = input_dim[0], input_dim[1]
        cp_scale_ratio = min(input_h / resized_hw[0], input_w / resized_hw[1])
        jit_w, jit_h = int(input_w * jit_factor), int(input_h * jit_factor)
        target_h, target_w = origin_img.shape[:2]
        x_offset, y_offset = 0, 0
        if max(jit_h, target_h) > target_h:
            y_offset = random.randint(0, jit_h - target_h - 1)
        if max(jit_w, target_w) > target_w:
            x_offset = random.randint(0, jit_w - target_w - 1)

        B, content_wh = mixup_inverse_matrix(
            resized_hw, (input_h, input_w), (jit_h, jit_w), (x_offset, y_offset), flip, pixels_hw=src_hw
        )
        img = source
        if callable(source):  # decoded reduced when the MixUp image is shrunk that much anyway
            img = source(decode_reduction(min(abs(B[0, 0]), abs(B[1, 1])), getattr(source, "max_reduction", 1)))
            if img.shape[:2] != tuple(src_hw):
                B, content_wh = mixup_inverse_matrix(resized_hw, (input_h, input_w), (jit_h, jit_w),
                                                     (x_offset, y_offset), flip, pixels_hw=img.shape[:2])
        blend_mixup_into(origin_img, img, B, content_wh)

        labels = mixup_boxes(
            cp_labels, cp_scale_ratio * jit_factor, (jit_w, jit_h), flip, (x_offset, y_offset), (target_w, target_h)
        )
        return origin_img, np.vstack((origin_labels, labels))
