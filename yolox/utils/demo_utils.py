"""The official helpers for deployment demos (ONNX Runtime, OpenVINO, ...): decoding of raw outputs and NMS on numpy
arrays, plus the drawing of a label assignment. Same names, parameters and results layout as the official release."""
import os
import random

import cv2
import numpy as np
import torch
import torchvision

from .anchors import AnchorGrid, decode_boxes

__all__ = ["mkdir", "nms", "multiclass_nms", "demo_postprocess", "random_color", "visualize_assign"]


def mkdir(path):
    """Create the folder `path` (and its parents) unless it exists."""
    os.makedirs(path, exist_ok=True)


def random_color():
    """A random (b, g, r) colour, each an int in 0..255."""
    return random.randint(0, 255), random.randint(0, 255), random.randint(0, 255)


def _keep_indices(boxes, scores, nms_thr, classes=None):
    """Indices (int64 numpy) that torchvision's NMS keeps, by decreasing score; per class when classes is given."""
    b = torch.as_tensor(np.asarray(boxes, dtype=np.float32)).reshape(-1, 4)
    s = torch.as_tensor(np.asarray(scores, dtype=np.float32)).reshape(-1)
    if classes is None:
        keep = torchvision.ops.nms(b, s, float(nms_thr))
    else:
        keep = torchvision.ops.batched_nms(b, s, torch.as_tensor(np.asarray(classes)).reshape(-1), float(nms_thr))
    return keep.numpy()


def nms(boxes, scores, nms_thr):
    """Single-class NMS of boxes (N, 4) x1y1x2y2 with scores (N,); the list of kept indices, best score first.

    Unlike the official numpy version, which adds one pixel to every width and height (a convention of integer
    pixel boxes), the overlap is torchvision's, the one `postprocess` uses: the ONNX / numpy path then keeps the same
    boxes as the PyTorch path.
    """
    return _keep_indices(boxes, scores, nms_thr).tolist()


def multiclass_nms(boxes, scores, nms_thr, score_thr, class_agnostic=True):
    """NMS of boxes (N, 4) x1y1x2y2 with per-class scores (N, K); (M, 6) rows x1, y1, x2, y2, score, class, or None.

    class_agnostic: each box takes its best class and one NMS runs over all boxes (rows by decreasing score);
    otherwise every (box, class) pair scoring above score_thr enters an NMS within its class (rows grouped by
    class, each group by decreasing score, as the official release orders them). Scores must exceed score_thr.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32)
    scores = scores.reshape(boxes.shape[0], -1)  # (N, K)
    if class_agnostic:
        cls_inds = scores.argmax(1)  # (N,)
        cls_scores = scores[np.arange(scores.shape[0]), cls_inds]
        valid = np.nonzero(cls_scores > score_thr)[0]
        if valid.size == 0:
            return None
        keep = valid[_keep_indices(boxes[valid], cls_scores[valid], nms_thr)]
        return np.concatenate([boxes[keep], cls_scores[keep, None], cls_inds[keep, None].astype(np.float32)], 1)
    anchor, cls = np.nonzero(scores > score_thr)  # (P,) each: the candidate (box, class) pairs
    if anchor.size == 0:
        return None
    pair_scores = scores[anchor, cls]
    keep = _keep_indices(boxes[anchor], pair_scores, nms_thr, classes=cls)  # by decreasing score
    keep = keep[np.argsort(cls[keep], kind="stable")]  # grouped by class, by score within a class
    dets = np.concatenate([boxes[anchor[keep]], pair_scores[keep, None], cls[keep, None].astype(np.float32)], 1)
    return dets


def demo_postprocess(outputs, img_size, p6=False):
    """Decode raw head outputs (B, A, 5 + K), as exported with decode_in_inference off, into input-pixel boxes.

    Columns 0-3 become cx, cy, w, h: (raw xy + grid cell) * stride and exp(raw wh) * stride, for strides 8, 16, 32
    (and 64 with p6), the grid of each level being img_size (h, w) // stride. The scores (columns 4+) are already
    sigmoids. Like the official helper, `outputs` (a float numpy array or a tensor) is changed in place and returned.
    The decoding is the model head's own (yolox.utils.anchors.decode_boxes), so every backend decodes the same way.
    """
    strides = (8, 16, 32, 64) if p6 else (8, 16, 32)
    level_shapes = [(int(img_size[0]) // s, int(img_size[1]) // s, s) for s in strides]
    grid = AnchorGrid.from_shapes(level_shapes)
    tensor = outputs if torch.is_tensor(outputs) else torch.from_numpy(outputs)  # shares the memory
    if tensor.shape[-2] != grid.num_anchors:
        raise ValueError(
            f"demo_postprocess: the outputs have {tensor.shape[-2]} anchors but img_size {tuple(img_size)} with "
            f"strides {strides} gives {grid.num_anchors}; pass the input size the model was exported with "
            f"(and p6=True only for a model with a stride-64 level)."
        )
    tensor[..., :4] = decode_boxes(tensor[..., :4], grid)
    return outputs


def visualize_assign(img, boxes, coords, match_results, save_name=None) -> np.ndarray:
    """Draw a label assignment on img (BGR, changed in place) and return it.

    boxes: (M, 4) gt boxes x1y1x2y2; coords: (P, 2) x, y of the positive anchor points; match_results: (P,) index of
    the gt box each positive is matched to. Each gt and its anchors get a random colour; a gt without any anchor is
    drawn in red and labelled "unmatched". save_name: also write the picture to that file.
    """
    boxes = np.asarray(boxes.cpu() if torch.is_tensor(boxes) else boxes, dtype=np.float32).reshape(-1, 4)
    coords = np.asarray(coords.cpu() if torch.is_tensor(coords) else coords, dtype=np.float32).reshape(-1, 2)
    matches = np.asarray(match_results.cpu() if torch.is_tensor(match_results) else match_results).reshape(-1)
    for box_id, (x1, y1, x2, y2) in enumerate(boxes):
        color = random_color()
        assigned = coords[matches == box_id]
        if len(assigned) == 0:
            color = (0, 0, 255)
            cv2.putText(img, "unmatched", (int(x1), int(y1) - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1)
        for x, y in assigned:
            cv2.circle(img, (int(x), int(y)), 3, color, -1)
        cv2.rectangle(img, (int(x1), int(y1)), (int(x2), int(y2)), color, 2)
    if save_name is not None:
        cv2.imwrite(save_name, img)
    return img
