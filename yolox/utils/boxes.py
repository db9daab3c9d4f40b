"""Box helpers: format conversions, pairwise IoU, and the score-threshold + NMS post-processing of YOLOX outputs."""
import numpy as np
import torch
import torchvision

__all__ = [
    "filter_box",
    "grouped_nms",
    "postprocess",
    "bboxes_iou",
    "matrix_iou",
    "adjust_box_anns",
    "xyxy2xywh",
    "xyxy2cxcywh",
    "cxcywh2xyxy",
]


def filter_box(output, scale_range):
    """Keep the (N, >=4) xyxy rows whose area lies strictly between min_scale**2 and max_scale**2."""
    min_scale, max_scale = scale_range
    w = output[:, 2] - output[:, 0]
    h = output[:, 3] - output[:, 1]
    area = w * h
    keep = (area > min_scale * min_scale) & (area < max_scale * max_scale)
    return output[keep]


def _cxcywh_to_xyxy_copy(boxes):
    """(..., 4) cx, cy, w, h -> a new (..., 4) x1, y1, x2, y2 tensor."""
    centre, size = boxes[..., :2], boxes[..., 2:4]
    return torch.cat([centre - size / 2, centre + size / 2], dim=-1)


# Above this many boxes on the CPU torchvision.ops.batched_nms runs one NMS per group (exact); below it, and on a
# GPU up to far more boxes, it runs one NMS over boxes moved apart by group * (max coordinate + 1).
_PER_GROUP_NMS_MIN_BOXES_CPU = 1000


def grouped_nms(boxes, scores, groups, iou_threshold):
    """Indices (int64) that NMS keeps within each group, by decreasing score over all groups.

    boxes (N, 4) x1y1x2y2, scores (N,), groups (N,) int64. Every group gets the same result as its own
    torchvision.ops.nms in the boxes' dtype: one group goes to nms directly, and where torchvision would move
    the groups apart by adding offsets, the boxes are given to it in float64, where those integer offsets are exact
    (in float32 they would round the coordinates of far groups by up to 1/32 pixel).
    """
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    if bool((groups == groups[0]).all()):
        return torchvision.ops.nms(boxes, scores, iou_threshold)
    per_group = boxes.device.type == "cpu" and boxes.shape[0] > _PER_GROUP_NMS_MIN_BOXES_CPU
    if per_group:
        return torchvision.ops.batched_nms(boxes, scores, groups, iou_threshold)
    # float32 scores are exact in float64, so the order of the boxes is unchanged
    return torchvision.ops.batched_nms(boxes.double(), scores.double(), groups, iou_threshold)


def postprocess(prediction, num_classes, conf_thre=0.7, nms_thre=0.45, class_agnostic=False):
    """Turn decoded YOLOX outputs into per-image detections, the whole batch at once.

    prediction: (B, A, 5 + num_classes) rows of cx, cy, w, h, objectness, class scores (after sigmoid).
    Returns a list of B entries: None when nothing survives, otherwise an (n, 7) tensor of
    x1, y1, x2, y2, obj, cls_conf, cls, sorted by decreasing score = obj * cls_conf.
    Each anchor takes its best class; anchors scoring at least conf_thre enter NMS, per image (class_agnostic) or
    per image and class. One NMS call covers the batch (groups image or image * K + class), with the same result
    per image as NMS run image by image. Unlike the official release, the input tensor is left unchanged.
    """
    if prediction.dim() != 3 or prediction.shape[-1] < 5 + num_classes:
        raise ValueError(
            f"postprocess expects predictions of shape (B, A, 5 + num_classes={5 + num_classes}); "
            f"got {tuple(prediction.shape)}. Check num_classes against the model's head."
        )
    batch = prediction.shape[0]
    if batch == 0 or prediction.shape[1] == 0:
        return [None] * batch
    class_conf = prediction[..., 5 : 5 + num_classes].amax(-1)  # (B, A) best class score
    img, anchor = torch.nonzero(prediction[..., 4] * class_conf >= conf_thre, as_tuple=True)  # (N,) each
    if img.numel() == 0:
        return [None] * batch
    rows = prediction[img, anchor]  # (N, 5 + K) image-major, anchors in order
    class_pred = rows[:, 5 : 5 + num_classes].argmax(1)  # (N,) first best class, as torch.max picks it
    # (N, 7): x1 y1 x2 y2 obj cls_conf cls
    detections = torch.cat(
        (_cxcywh_to_xyxy_copy(rows[:, :4]), rows[:, 4:5], class_conf[img, anchor, None],
         class_pred[:, None].to(rows.dtype)), dim=1
    )
    scores = detections[:, 4] * detections[:, 5]  # (N,)
    groups = img if class_agnostic else img * num_classes + class_pred  # (N,)
    keep = grouped_nms(detections[:, :4], scores, groups, nms_thre)  # (M,)
    # image by image, each by decreasing score, ties in anchor order (as NMS on one image orders them)
    keep = keep.sort().values
    keep = keep[torch.sort(scores[keep], descending=True, stable=True).indices]
    keep = keep[torch.sort(img[keep], stable=True).indices]
    counts = torch.bincount(img[keep], minlength=batch).tolist()  # (B,) the one host synchronisation
    return [d if d.shape[0] else None for d in torch.split(detections[keep], counts)]


def bboxes_iou(bboxes_a, bboxes_b, xyxy=True):
    """Pairwise IoU: (N, 4) x (M, 4) -> (N, M). Boxes are xyxy, or cx, cy, w, h when xyxy=False.

    The intersection counts as zero wherever top-left >= bottom-right on either axis (official semantics).
    """
    if bboxes_a.shape[-1] != 4 or bboxes_b.shape[-1] != 4 or bboxes_a.dim() != 2 or bboxes_b.dim() != 2:
        raise IndexError(
            f"bboxes_iou expects two (N, 4) tensors; got {tuple(bboxes_a.shape)} and {tuple(bboxes_b.shape)}"
        )
    if xyxy:
        tl = torch.max(bboxes_a[:, None, :2], bboxes_b[:, :2])  # (N, M, 2)
        br = torch.min(bboxes_a[:, None, 2:], bboxes_b[:, 2:])  # (N, M, 2)
        area_a = torch.prod(bboxes_a[:, 2:] - bboxes_a[:, :2], 1)  # (N,)
        area_b = torch.prod(bboxes_b[:, 2:] - bboxes_b[:, :2], 1)  # (M,)
    else:
        tl = torch.max(
            bboxes_a[:, None, :2] - bboxes_a[:, None, 2:] / 2, bboxes_b[:, :2] - bboxes_b[:, 2:] / 2
        )
        br = torch.min(
            bboxes_a[:, None, :2] + bboxes_a[:, None, 2:] / 2, bboxes_b[:, :2] + bboxes_b[:, 2:] / 2
        )
        area_a = torch.prod(bboxes_a[:, 2:], 1)
        area_b = torch.prod(bboxes_b[:, 2:], 1)
    overlaps = (tl < br).to(tl.dtype).prod(dim=2)  # (N, M) 1 where the boxes overlap on both axes
    area_i = torch.prod(br - tl, 2) * overlaps
    return area_i / (area_a[:, None] + area_b - area_i)


def matrix_iou(a, b):
    """Pairwise IoU of numpy xyxy boxes: (N, 4) x (M, 4) -> (N, M), with 1e-12 in the denominator."""
    lt = np.maximum(a[:, np.newaxis, :2], b[:, :2])  # (N, M, 2)
    rb = np.minimum(a[:, np.newaxis, 2:], b[:, 2:])
    area_i = np.prod(rb - lt, axis=2) * (lt < rb).all(axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return area_i / (area_a[:, np.newaxis] + area_b - area_i + 1e-12)


def adjust_box_anns(bbox, scale_ratio, padw, padh, w_max, h_max):
    """Scale and shift numpy xyxy boxes (in place) then clip them to [0, w_max] x [0, h_max]; returns bbox."""
    bbox[:, 0::2] = np.clip(bbox[:, 0::2] * scale_ratio + padw, 0, w_max)
    bbox[:, 1::2] = np.clip(bbox[:, 1::2] * scale_ratio + padh, 0, h_max)
    return bbox


# The three conversions below work in place on an (N, >=4) array or tensor and return it, as the
# official release does: ported code that relies on either the return value or the mutation behaves the same.


def xyxy2xywh(bboxes):
    """x1, y1, x2, y2 -> x1, y1, w, h (in place)."""
    bboxes[:, 2] = bboxes[:, 2] - bboxes[:, 0]
    bboxes[:, 3] = bboxes[:, 3] - bboxes[:, 1]
    return bboxes


def xyxy2cxcywh(bboxes):
    """x1, y1, x2, y2 -> cx, cy, w, h (in place)."""
    bboxes[:, 2] = bboxes[:, 2] - bboxes[:, 0]
    bboxes[:, 3] = bboxes[:, 3] - bboxes[:, 1]
    bboxes[:, 0] = bboxes[:, 0] + bboxes[:, 2] * 0.5
    bboxes[:, 1] = bboxes[:, 1] + bboxes[:, 3] * 0.5
    return bboxes


def cxcywh2xyxy(bboxes):
    """cx, cy, w, h -> x1, y1, x2, y2 (in place)."""
    bboxes[:, 0] = bboxes[:, 0] - bboxes[:, 2] * 0.5
    bboxes[:, 1] = bboxes[:, 1] - bboxes[:, 3] * 0.5
    bboxes[:, 2] = bboxes[:, 0] + bboxes[:, 2]
    bboxes[:, 3] = bboxes[:, 1] + bboxes[:, 3]
    return bboxes
