"""Augmentations and transforms of the official YOLOX: random affine, HSV, flip, letterbox, Train/ValTransform.

Random numbers are drawn from `random` and `np.random` in the official order, so a seed gives the official parameters.
"""
import math
import random

import cv2
import numpy as np

from yolox.utils.boxes import xyxy2cxcywh

__all__ = [
    "augment_hsv",
    "get_aug_params",
    "get_affine_matrix",
    "apply_affine_to_bboxes",
    "random_affine",
    "preproc",
    "TrainTransform",
    "ValTransform",
    "xyxy2cxcywh",
]


def _hue_lut(dh):
    """(256,) uint8 table: hue shifted by dh modulo 180 (the official int16 arithmetic; OpenCV's hue is 0-179)."""
    return ((np.arange(256, dtype=np.int16) + dh) % 180).astype(np.uint8)


def _draw_hsv_gains(hgain=5, sgain=30, vgain=30):
    """The official random HSV shift: (3,) int16 gains, each one kept or zeroed at random."""
    hsv_augs = np.random.uniform(-1, 1, 3) * [hgain, sgain, vgain]  # random gains
    hsv_augs *= np.random.randint(0, 2, 3)  # random selection of h, s, v
    return hsv_augs.astype(np.int16)


def _shift_hsv(img, hsv_augs, dst=None):
    """BGR uint8 image shifted in HSV by hsv_augs (official arithmetic), written to dst (a new array if None).

    The official shifts an int16 copy of the HSV image and clips it; saturating uint8 arithmetic and a hue table give
    the same bytes (a zero gain leaves its channel as it is: hue is below 180, saturation and value within 0-255).
    """
    img_hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
    dh, ds, dv = (int(v) for v in hsv_augs[:3])
    # saturation and value: clip(x + gain, 0, 255) is OpenCV's saturating add (subtract for a negative gain), one
    # pass over the interleaved image with a per-channel scalar (a mixed-sign scalar takes a slow path: two calls)
    if ds > 0 or dv > 0:
        cv2.add(img_hsv, (0, max(ds, 0), max(dv, 0), 0), dst=img_hsv)
    if ds < 0 or dv < 0:
        cv2.subtract(img_hsv, (0, max(-ds, 0), max(-dv, 0), 0), dst=img_hsv)
    if dh:  # hue modulo 180: a one-channel table on the hue plane alone
        hue = cv2.extractChannel(img_hsv, 0)
        cv2.LUT(hue, _hue_lut(dh), dst=hue)
        cv2.insertChannel(hue, img_hsv, 0)
    if dst is None:
        return cv2.cvtColor(img_hsv, cv2.COLOR_HSV2BGR)
    cv2.cvtColor(img_hsv, cv2.COLOR_HSV2BGR, dst=dst)
    return dst


def augment_hsv(img, hgain=5, sgain=30, vgain=30):
    """Random HSV shift of a BGR uint8 image, in place (official gains and draws)."""
    _shift_hsv(img, _draw_hsv_gains(hgain, sgain, vgain), dst=img)


def get_aug_params(value, center=0):
    """A float v draws uniform(center - v, center + v); a pair (lo, hi) draws uniform(lo, hi)."""
    if isinstance(value, (float, int)) and not isinstance(value, bool):
        return random.uniform(center - value, center + value)
    if len(value) == 2:
        return random.uniform(value[0], value[1])
    raise ValueError(
        f"affine parameter {value!r} must be a float (symmetric range around {center}) or a (low, high) pair"
    )


def get_affine_matrix(target_size, degrees=10, translate=0.1, scales=0.1, shear=10):
    """The official random (2, 3) affine: rotation+scale about (0, 0), shear, translation; draws in that order."""
    twidth, theight = target_size

    angle = get_aug_params(degrees)
    scale = get_aug_params(scales, center=1.0)
    if scale <= 0.0:
        raise ValueError(f"mosaic scale drew {scale}; the scale range {scales!r} must stay positive")
    R = cv2.getRotationMatrix2D(angle=angle, center=(0, 0), scale=scale)

    M = np.ones([2, 3])
    shear_x = math.tan(get_aug_params(shear) * math.pi / 180)
    shear_y = math.tan(get_aug_params(shear) * math.pi / 180)
    M[0] = R[0] + shear_y * R[1]
    M[1] = R[1] + shear_x * R[0]

    M[0, 2] = get_aug_params(translate) * twidth  # x translation in pixels
    M[1, 2] = get_aug_params(translate) * theight  # y translation in pixels
    return M, scale


def apply_affine_to_bboxes(targets, target_size, M, scale):
    """Boxes (N, >=4) x1y1x2y2 -> the axis-aligned hull of their 4 warped corners, clipped to target_size; in place."""
    num_gts = len(targets)
    twidth, theight = target_size
    corner_points = np.ones((4 * num_gts, 3))
    # corners x1y1, x2y2, x1y2, x2y1 -> (4N, 2)
    corner_points[:, :2] = targets[:, [0, 1, 2, 3, 0, 3, 2, 1]].reshape(4 * num_gts, 2)
    corner_points = (corner_points @ M.T).reshape(num_gts, 8)  # (N, 4 corners * xy)
    corner_xs = corner_points[:, 0::2]
    corner_ys = corner_points[:, 1::2]
    new_bboxes = np.stack((corner_xs.min(1), corner_ys.min(1), corner_xs.max(1), corner_ys.max(1)), axis=1)
    new_bboxes[:, 0::2] = new_bboxes[:, 0::2].clip(0, twidth)
    new_bboxes[:, 1::2] = new_bboxes[:, 1::2].clip(0, theight)
    targets[:, :4] = new_bboxes
    return targets


def random_affine(img, targets=(), target_size=(640, 640), degrees=10, translate=0.1, scales=0.1, shear=10):
    """Warp img (and its xyxy targets) with a random official affine; output size target_size (w, h)."""
    M, scale = get_affine_matrix(target_size, degrees, translate, scales, shear)
    img = cv2.warpAffine(img, M, dsize=target_size, borderValue=(114, 114, 114))
    if len(targets) > 0:
        targets = apply_affine_to_bboxes(targets, target_size, M, scale)
    return img, targets


def _mirror(image, boxes, prob=0.5, inplace=False):
    """Horizontal flip with probability prob (one random.random() draw); boxes (N, 4) xyxy changed in place.

    inplace: the caller owns a contiguous uint8 image, which is flipped where it is instead of into a new array."""
    _, width, _ = image.shape
    if random.random() < prob:
        if image.dtype != np.uint8:
            image = image[:, ::-1]  # the official view
        elif inplace and image.flags.c_contiguous and image.flags.writeable:
            cv2.flip(image, 1, dst=image)
        else:
            image = cv2.flip(np.ascontiguousarray(image), 1)
        boxes[:, 0::2] = width - boxes[:, 2::-2]
    return image, boxes


def preproc(img, input_size, swap=(2, 0, 1)):
    """Letterbox: resize by r = min(h_in / h, w_in / w), paste top-left on 114, HWC -> CHW float32 (0-255 BGR).

    Returns (image (3, h_in, w_in) float32, r).
    """
    padded_img, r = _letterbox(img, input_size)
    return _to_chw(padded_img, swap), r


def _letterbox(img, input_size):
    """(image (h_in, w_in[, 3]) uint8 resized by r and pasted top-left on 114, r); the image itself when it fits."""
    h, w = img.shape[:2]
    r = min(input_size[0] / h, input_size[1] / w)
    new_h, new_w = int(h * r), int(w * r)
    if (new_h, new_w) == tuple(input_size[:2]) and (new_h, new_w) == (h, w):
        return img, r  # already the input size: no resize and no padding needed
    shape = (input_size[0], input_size[1], 3) if img.ndim == 3 else tuple(input_size[:2])
    padded_img = np.full(shape, 114, dtype=np.uint8)
    resized = img if (new_h, new_w) == (h, w) else cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    padded_img[:new_h, :new_w] = resized
    return padded_img, r


def _to_chw(img, swap=(2, 0, 1), dtype=np.float32):
    """(H, W, C) uint8 -> np.ascontiguousarray(img.transpose(swap), dtype), by channel planes when CHW."""
    if tuple(swap) != (2, 0, 1) or img.ndim != 3 or img.dtype != np.uint8 or img.shape[2] > 4:
        return np.ascontiguousarray(img.transpose(swap), dtype=dtype)
    out = np.empty((img.shape[2], img.shape[0], img.shape[1]), dtype=dtype)  # (C, H, W)
    img = np.ascontiguousarray(img)
    # splitting into contiguous uint8 planes, then widening each, is 2-3x faster than one strided transpose copy
    for c, plane in enumerate(cv2.split(img)):
        out[c] = plane
    return out


class TrainTransform:
    """HSV, flip and letterbox of a training image; targets (N, 5) x1y1x2y2+class -> (max_labels, 5) class cx cy w h.

    Boxes at most 1 pixel wide or high after the resize are dropped; unlike the official release, which then keeps
    them all when none is left, a sample with no valid box gets no label (rows of zeros are padding).
    image_dtype: np.float32 (official) or np.uint8: the same 0-255 values in a quarter of the bytes, which is what
    DataLoader workers copy to the main process; the trainer casts the batch on its device. The uint8 image is a
    (C, H, W) view of this call's own (H, W, C) array, not a planar copy: the (C, H, W) values are the official
    ones, and `channels_last_collate` stacks such views into a channels_last batch with one plain copy each.
    """

    def __init__(self, max_labels=50, flip_prob=0.5, hsv_prob=1.0, image_dtype=np.float32):
        self.max_labels = max_labels
        self.flip_prob = flip_prob
        self.hsv_prob = hsv_prob
        self.image_dtype = np.dtype(image_dtype)
        if self.image_dtype not in (np.float32, np.uint8):
            raise ValueError(f"TrainTransform image_dtype={image_dtype!r}: use np.float32 (official) or np.uint8")

    def _chw(self, image, input_dim, source):
        """(C, H, W) letterboxed image; for uint8, a view of an (H, W, C) array that shares no memory with source."""
        padded = _letterbox(image, input_dim)[0]  # (h_in, w_in, 3) uint8
        if self.image_dtype != np.uint8 or padded.ndim != 3:
            return _to_chw(padded, dtype=self.image_dtype)
        if np.may_share_memory(padded, source) or not padded.flags.c_contiguous:
            padded = np.array(padded, order="C")  # never hand out (a view of) the caller's image
        return padded.transpose(2, 0, 1)  # (3, h_in, w_in) view, HWC memory

    def __call__(self, image, targets, input_dim):
        padded_labels = np.zeros((self.max_labels, 5), dtype=np.float32)
        if len(targets) == 0:
            return self._chw(image, input_dim, image), padded_labels

        boxes = np.array(targets[:, :4], dtype=np.float64)
        labels = np.array(targets[:, 4], dtype=np.float64)
        image_o = image

        # the official draw order: hsv_prob, (hsv gains), flip; kept even when every box turns out degenerate
        do_hsv = random.random() < self.hsv_prob
        if do_hsv:
            # a new array: the caller's image (image_o) is never changed
            image = _shift_hsv(np.ascontiguousarray(image), _draw_hsv_gains())
        image_t, boxes = _mirror(image, boxes, self.flip_prob, inplace=do_hsv)  # the HSV image is this call's own

        r_ = min(input_dim[0] / image_t.shape[0], input_dim[1] / image_t.shape[1])
        boxes = xyxy2cxcywh(boxes)
        boxes *= r_
        keep = np.minimum(boxes[:, 2], boxes[:, 3]) > 1
        if not keep.any():
            # the official falls back to the un-augmented image; its labels would all be degenerate, so none is kept
            return self._chw(image_o, input_dim, image_o), padded_labels

        image_t = self._chw(image_t, input_dim, image_o)
        targets_t = np.hstack((labels[keep, None], boxes[keep]))[: self.max_labels]
        padded_labels[: len(targets_t)] = targets_t
        return image_t, padded_labels


class ValTransform:
    """Evaluation letterbox: BGR 0-255 float CHW (no mean/std); legacy=True gives the old RGB /255 normalised input."""

    def __init__(self, swap=(2, 0, 1), legacy=False):
        self.swap = swap
        self.legacy = legacy

    def __call__(self, img, res, input_size):
        img, _ = preproc(img, input_size, self.swap)
        if self.legacy:
            img = img[::-1, :, :].copy()
            img /= 255.0
            img -= np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(3, 1, 1)
            img /= np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(3, 1, 1)
        return img, np.zeros((1, 5))
