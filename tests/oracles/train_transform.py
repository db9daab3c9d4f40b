"""The direct implementation of the official TrainTransform: int16 HSV arithmetic, copies, letterbox on a new canvas.

The baseline of benchmarks/bench_data.py's "+ TrainTransform" stage beside DirectMosaicDetection, and the oracle that
yolox.data.TrainTransform (lookup tables, no copies) is tested against: the same random draws in the same order
give the same bytes. One difference is kept on purpose: when every box is degenerate after the transform, the
official falls back to the un-augmented image and keeps all its (degenerate) boxes; TrainTransform keeps none.
"""
import random

import cv2
import numpy as np

from yolox.utils.boxes import xyxy2cxcywh

__all__ = ["DirectTrainTransform"]


def _augment_hsv_int16(img, hgain=5, sgain=30, vgain=30):
    """The official HSV shift, in place: the gains, then an int16 HSV copy shifted channel by channel."""
    gains = np.random.uniform(-1, 1, 3) * [hgain, sgain, vgain]
    gains *= np.random.randint(0, 2, 3)
    gains = gains.astype(np.int16)
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV).astype(np.int16)
    hsv[..., 0] = (hsv[..., 0] + gains[0]) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] + gains[1], 0, 255)
    hsv[..., 2] = np.clip(hsv[..., 2] + gains[2], 0, 255)
    cv2.cvtColor(hsv.astype(img.dtype), cv2.COLOR_HSV2BGR, dst=img)


def _letterbox_float(img, input_size, swap=(2, 0, 1)):
    """The official preproc: a new 114 canvas, always a cv2.resize, then a transposed float32 copy."""
    shape = (input_size[0], input_size[1], 3) if img.ndim == 3 else tuple(input_size)
    canvas = np.ones(shape, dtype=np.uint8) * 114
    r = min(input_size[0] / img.shape[0], input_size[1] / img.shape[1])
    new_h, new_w = int(img.shape[0] * r), int(img.shape[1] * r)
    canvas[:new_h, :new_w] = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR).astype(np.uint8)
    return np.ascontiguousarray(canvas.transpose(swap), dtype=np.float32), r


class DirectTrainTransform:
    """TrainTransform as the official release computes it (same arguments, draws and outputs)."""

    def __init__(self, max_labels=50, flip_prob=0.5, hsv_prob=1.0):
        self.max_labels = max_labels
        self.flip_prob = flip_prob
        self.hsv_prob = hsv_prob

    def __call__(self, image, targets, input_dim):
        boxes = targets[:, :4].copy()
        labels = targets[:, 4].copy()
        if len(boxes) == 0:
            image, _ = _letterbox_float(image, input_dim)
            return image, np.zeros((self.max_labels, 5), dtype=np.float32)

        image_o = image.copy()
        targets_o = targets.copy()
        boxes_o = xyxy2cxcywh(targets_o[:, :4])
        labels_o = targets_o[:, 4]

        if random.random() < self.hsv_prob:
            _augment_hsv_int16(image)
        if random.random() < self.flip_prob:
            width = image.shape[1]
            image = image[:, ::-1]
            boxes[:, 0::2] = width - boxes[:, 2::-2]
        image_t, r_ = _letterbox_float(image, input_dim)
        boxes = xyxy2cxcywh(boxes) * r_

        keep = np.minimum(boxes[:, 2], boxes[:, 3]) > 1
        boxes_t, labels_t = boxes[keep], labels[keep]
        if len(boxes_t) == 0:
            image_t, r_o = _letterbox_float(image_o, input_dim)
            boxes_t, labels_t = boxes_o * r_o, labels_o

        targets_t = np.hstack((labels_t[:, None], boxes_t))[: self.max_labels]
        padded = np.zeros((self.max_labels, 5))
        padded[: len(targets_t)] = targets_t
        return image_t, np.ascontiguousarray(padded, dtype=np.float32)
