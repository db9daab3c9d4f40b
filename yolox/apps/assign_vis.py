"""Pictures of SimOTA's choices: each gt box and the anchor points assigned to it, one colour per gt, on the Exp's
images letterboxed without augmentation."""
import cv2
import numpy as np
import torch

from yolox.models.simota import AnchorGrid, assign
from yolox.utils import color_for

__all__ = ["assignment_dataset", "assign_image", "draw_assignment", "chw_to_bgr"]


def assignment_dataset(exp, split):
    """The Exp's dataset of `split`, letterboxed with its labels as (class, cx, cy, w, h), no augmentation."""
    from yolox.data import TrainTransform

    dataset = exp.get_dataset() if split == "train" else exp.get_eval_dataset()
    # The plain letterbox of the training transform (no flip, no HSV) keeps the labels, which ValTransform drops.
    dataset.preproc = TrainTransform(max_labels=200, flip_prob=0.0, hsv_prob=0.0)
    return dataset


@torch.no_grad()
def assign_image(model, img, labels, mode=None):
    """SimOTA on one letterboxed image with the model's current predictions (eval-mode network, BN statistics).

    img: (3, H, W) float tensor as the model takes it; labels: (M, 5) class, cx, cy, w, h in input pixels.
    Returns (fg (A,) bool, matched_gt (A,) row of labels, anchor centres (A, 2) in pixels, strides (A,)).
    """
    head = model.head
    device = next(model.parameters()).device
    was_training, was_decoding = model.training, head.decode_in_inference
    model.eval()
    head.decode_in_inference = False
    try:
        raw = model(img.unsqueeze(0).to(device=device, dtype=torch.float32))  # (1, A, 5 + K): reg raw, sigmoids
    finally:
        head.decode_in_inference = was_decoding
        model.train(was_training)
    level_shapes = [(int(h), int(w), int(s)) for (h, w), s in zip(head.hw, head.strides)]
    grid = AnchorGrid.from_shapes(level_shapes, device=device)
    pred_boxes = head.decode_boxes(raw[..., :4], grid)  # (1, A, 4) cx, cy, w, h
    # The assigner takes logits and applies the sigmoid itself; eval outputs are already sigmoids.
    obj_logits = torch.logit(raw[..., 4].double()).float()  # (1, A)
    cls_logits = torch.logit(raw[..., 5:].double()).float()  # (1, A, K)
    labels = torch.as_tensor(labels, dtype=torch.float32, device=device).reshape(1, -1, 5)
    gt_valid = labels.sum(-1) > 0  # (1, M)
    asg = assign(mode or head.simota_mode, pred_boxes, cls_logits, obj_logits, labels[..., 1:5],
                 labels[..., 0].long(), gt_valid, grid)
    cx, cy = grid.centres()
    return asg.fg_mask[0].cpu(), asg.matched_gt[0].cpu(), torch.stack([cx, cy], 1).cpu(), grid.strides.cpu()


def chw_to_bgr(img):
    """(3, H, W) float 0-255 BGR (the model's input) -> (H, W, 3) uint8 for drawing."""
    arr = img.detach().cpu().numpy() if torch.is_tensor(img) else np.asarray(img)
    return np.ascontiguousarray(np.clip(arr.transpose(1, 2, 0), 0, 255).astype(np.uint8))


def draw_assignment(img_bgr, labels, fg, matched_gt, centres, strides):
    """Draw each real gt (labels rows with a non-zero sum) in its own colour, and a dot of that colour on every
    anchor point assigned to it (bigger dots on coarser levels). Returns a new image."""
    out = img_bgr.copy()
    labels = np.asarray(labels, dtype=np.float32).reshape(-1, 5)
    fg, matched_gt = np.asarray(fg, dtype=bool), np.asarray(matched_gt)
    centres, strides = np.asarray(centres), np.asarray(strides)
    for row, (cls, cx, cy, w, h) in enumerate(labels):
        if labels[row].sum() <= 0:
            continue
        color = color_for(row)
        x0, y0, x1, y1 = (int(round(v)) for v in (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
        cv2.rectangle(out, (x0, y0), (x1, y1), color, 1)
        anchors = np.nonzero(fg & (matched_gt == row))[0]
        for a in anchors:
            radius = max(2, int(strides[a] // 8) + 1)
            centre = (int(round(centres[a, 0])), int(round(centres[a, 1])))
            cv2.circle(out, centre, radius, color, -1)
            cv2.circle(out, centre, radius, (0, 0, 0), 1)  # outline: dots stay visible on any background
        cv2.putText(out, str(len(anchors)), (x0 + 2, max(y0 - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.35, color, 1,
                    cv2.LINE_AA)
    return out
