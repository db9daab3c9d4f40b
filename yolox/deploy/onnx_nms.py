"""NMS inside an exported graph: a YOLOX wrapped so that its ONNX file returns the kept detections of each image
(num_dets, boxes, scores, classes), as yolox.utils.postprocess(..., class_agnostic=False) keeps them; and the
conversion of those four outputs back into postprocess's list of (n, 7) tensors.

The NMS is ONNX's NonMaxSuppression (opset 10+; the export needs opset 11 for ScatterElements), run per image and per
class on a (B, K, A) score tensor where each anchor scores only under its best class, so that classes never suppress
each other and no coordinate offsets (which round far boxes in float32) are needed.
"""
from dataclasses import dataclass

import torch
import torchvision
from torch import nn

__all__ = ["NMS_OUTPUTS", "NMS_MIN_OPSET", "NMSSettings", "NMSDetector", "nms_detections"]

NMS_OUTPUTS = ("num_dets", "boxes", "scores", "classes")
NMS_MIN_OPSET = 11  # NonMaxSuppression is opset 10; the scatter of the kept anchors (ScatterElements) opset 11


@dataclass(frozen=True)
class NMSSettings:
    """The thresholds baked into an NMS export (None where a file without metadata does not say)."""

    conf: float = None
    nmsthre: float = None
    max_det: int = None


class _NonMaxSuppression(torch.autograd.Function):
    """ONNX NonMaxSuppression: computed with torchvision in PyTorch, emitted as the ONNX operator on export.

    boxes (B, A, 4) corners, scores (B, K, A) -> selected (S, 3) int64 rows of (image, class, anchor), image-major,
    then class, then decreasing score; at most max_out per image and class; a box enters when its score is
    > score_thr and is suppressed by a kept box of its class with IoU > iou_thr (as ONNX Runtime computes it).
    """

    @staticmethod
    def forward(ctx, boxes, scores, max_out, iou_thr, score_thr):
        rows = []
        for b in range(boxes.shape[0]):
            cls, anchor = torch.nonzero(scores[b] > score_thr, as_tuple=True)  # (N,) each
            s = scores[b, cls, anchor]  # (N,)
            keep = _per_class_nms(boxes[b, anchor].double(), s.double(), cls, iou_thr)  # (M,) by score
            keep = keep[torch.sort(cls[keep], stable=True).indices]  # class-major, by score within a class
            first = torch.searchsorted(cls[keep], cls[keep], right=False)  # (M,) where each one's class starts
            keep = keep[torch.arange(keep.shape[0]) - first < max_out]
            rows.append(torch.stack([torch.full_like(keep, b), cls[keep], anchor[keep]], 1))
        return torch.cat(rows) if rows else torch.zeros(0, 3, dtype=torch.int64)

    @staticmethod
    def symbolic(g, boxes, scores, max_out, iou_thr, score_thr):
        def const(value, dtype):
            return g.op("Constant", value_t=torch.tensor([value], dtype=dtype))

        return g.op("NonMaxSuppression", boxes, scores, const(max_out, torch.int64),
                    const(iou_thr, torch.float32), const(score_thr, torch.float32))


def _per_class_nms(boxes, scores, cls, iou_thr):
    """Indices NMS keeps per class, by decreasing score: boxes (N, 4) float64 moved apart class by class (exact in
    float64), one torchvision nms call (batched_nms would be scripted while the export traces this forward)."""
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64)
    span = boxes.max() - boxes.min() + 1  # each class's boxes shifted past all of the previous class's
    return torchvision.ops.nms(boxes + cls[:, None].double() * span, scores, iou_thr)


class NMSDetector(nn.Module):
    """`model` (a YOLOX decoding its boxes) followed by postprocess's selection, in exportable operations.

    forward(images (B, 3, H, W)) -> num_dets (B, 1) int64, boxes (B, M, 4) x1y1x2y2 in input pixels, scores (B, M)
    = objectness x best class score, classes (B, M) int64; per image by decreasing score, rows past num_dets zero.
    M = max_det: the most detections kept per image (the highest scores); None keeps all (M = anchor count).
    """

    def __init__(self, model, conf, nmsthre, max_det=None):
        super().__init__()
        if max_det is not None and max_det < 1:
            raise ValueError(f"--max-det {max_det}: keep at least 1 detection per image (or leave it out)")
        self.model = model
        self.conf, self.nmsthre, self.max_det = float(conf), float(nmsthre), max_det

    @property
    def head(self):
        """The YOLOX head (export_metadata describes the export from it)."""
        return self.model.head

    def forward(self, images):
        outputs = self.model(images)  # (B, A, 5 + K) decoded
        num_anchors, num_classes = outputs.shape[1], outputs.shape[2] - 5
        max_det = num_anchors if self.max_det is None else self.max_det
        centre, size = outputs[..., :2], outputs[..., 2:4]
        boxes = torch.cat([centre - size / 2, centre + size / 2], -1)  # (B, A, 4) as postprocess computes them
        class_conf = outputs[..., 5:].amax(-1)  # (B, A)
        class_pred = outputs[..., 5:].argmax(-1)  # (B, A) the first best class, as postprocess picks it
        scores = outputs[..., 4] * class_conf  # (B, A)
        candidate = scores >= self.conf  # (B, A) postprocess's >= (NonMaxSuppression's own threshold is a >)
        per_class = class_pred[:, None, :] == torch.arange(num_classes)[None, :, None]  # (B, K, A)
        class_scores = torch.where(per_class & candidate[:, None, :], scores[:, None, :], -1.0)  # (B, K, A)
        selected = _NonMaxSuppression.apply(boxes, class_scores, max_det, self.nmsthre, -0.5)  # (S, 3)
        kept = _kept_mask(scores, selected)  # (B, A)
        ranked = torch.where(kept, scores, -1.0)  # (B, A) kept scores, -1 elsewhere
        k = min(max_det, num_anchors)
        top, index = torch.topk(ranked, k, dim=1)  # (B, k) each; ties in anchor order, as postprocess
        valid = top > -0.5  # (B, k) the kept ones, first (scores are >= 0)
        num_dets = valid.sum(1, keepdim=True)  # (B, 1) (a count, not a clamp: Clip takes no int64 in opset 11)
        out_boxes = torch.gather(boxes, 1, index[..., None].expand(-1, -1, 4))  # (B, k, 4)
        out = (torch.where(valid[..., None], out_boxes, 0.0), torch.where(valid, top, 0.0),
               torch.where(valid, torch.gather(class_pred, 1, index), 0))
        return (num_dets.long(), *(_pad_to(t, max_det) for t in out))


def _kept_mask(scores, selected):
    """(B, A) bool: the anchors that `selected` (S, 3) rows of (image, class, anchor) name."""
    flat = selected[:, 0] * scores.shape[1] + selected[:, 2]  # (S,) index into the flattened (B * A)
    mask = torch.zeros_like(scores).reshape(-1).scatter(0, flat, torch.ones_like(flat, dtype=scores.dtype))
    return mask.reshape(scores.shape) > 0


def _pad_to(t, size):
    """t (B, k, ...) with zero rows appended along dim 1 up to `size` (max_det above the anchor count)."""
    missing = size - t.shape[1]
    if missing <= 0:
        return t
    pad = [0, 0] * (t.dim() - 2) + [0, missing]
    return nn.functional.pad(t, pad)


def nms_detections(num_dets, boxes, scores, classes):
    """The four outputs of an NMS export as postprocess's list: per image None or an (n, 7) float32 tensor of
    x1, y1, x2, y2, score, 1.0, class, so that column 4 x column 5 is the score (obj x cls_conf) as postprocess's."""
    num_dets = torch.as_tensor(num_dets).reshape(-1).long()  # (B,)
    boxes, scores = torch.as_tensor(boxes).float(), torch.as_tensor(scores).float()  # (B, M, 4), (B, M)
    classes = torch.as_tensor(classes).float()  # (B, M)
    out = []
    for b, n in enumerate(num_dets.tolist()):
        if n <= 0:
            out.append(None)
            continue
        s = scores[b, :n, None]  # (n, 1)
        out.append(torch.cat([boxes[b, :n], s, torch.ones_like(s), classes[b, :n, None]], 1))
    return out
