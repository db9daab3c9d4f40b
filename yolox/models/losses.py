"""Box regression loss of YOLOX: 1 - IoU^2 ("iou") or 1 - GIoU ("giou") on (cx, cy, w, h) boxes."""
import torch
from torch import nn

__all__ = ["IOUloss"]


class IOUloss(nn.Module):
    def __init__(self, reduction="none", loss_type="iou"):
        super().__init__()
        if loss_type not in ("iou", "giou"):
            raise ValueError(f"IOUloss loss_type={loss_type!r}; expected 'iou' or 'giou'")
        if reduction not in ("none", "mean", "sum"):
            raise ValueError(f"IOUloss reduction={reduction!r}; expected 'none', 'mean' or 'sum'")
        self.reduction = reduction
        self.loss_type = loss_type

    def forward(self, pred, target):
        """pred, target: (..., 4) cx, cy, w, h -> loss (...,) (or reduced)."""
        pred = pred.reshape(-1, 4)
        target = target.reshape(-1, 4)
        tl = torch.max(pred[:, :2] - pred[:, 2:] / 2, target[:, :2] - target[:, 2:] / 2)  # (N, 2)
        br = torch.min(pred[:, :2] + pred[:, 2:] / 2, target[:, :2] + target[:, 2:] / 2)
        area_p = pred[:, 2] * pred[:, 3]
        area_g = target[:, 2] * target[:, 3]
        overlap = (tl < br).all(dim=1).to(tl.dtype)
        wh = br - tl
        area_i = wh[:, 0] * wh[:, 1] * overlap
        area_u = area_p + area_g - area_i
        iou = area_i / (area_u + 1e-16)
        if self.loss_type == "iou":
            loss = 1 - iou ** 2
        else:
            c_tl = torch.min(pred[:, :2] - pred[:, 2:] / 2, target[:, :2] - target[:, 2:] / 2)
            c_br = torch.max(pred[:, :2] + pred[:, 2:] / 2, target[:, :2] + target[:, 2:] / 2)
            c_wh = c_br - c_tl
            area_c = c_wh[:, 0] * c_wh[:, 1]
            giou = iou - (area_c - area_u) / area_c.clamp(min=1e-16)
            loss = 1 - giou.clamp(min=-1.0, max=1.0)
        if self.reduction == "mean":
            return loss.mean()
        if self.reduction == "sum":
            return loss.sum()
        return loss
