"""The YOLOX detector: a backbone+neck followed by the decoupled head."""
from torch import nn

from .yolo_head import YOLOXHead
from .yolo_pafpn import YOLOPAFPN

__all__ = ["YOLOX"]


class YOLOX(nn.Module):
    """Train mode: `model(imgs, targets)` returns the loss dict; eval mode: `model(imgs)` returns (B, A, 5 + K)."""

    def __init__(self, backbone=None, head=None):
        super().__init__()
        self.backbone = YOLOPAFPN() if backbone is None else backbone
        self.head = YOLOXHead(80) if head is None else head

    def forward(self, x, targets=None):
        fpn_outs = self.backbone(x)
        if not self.training:
            return self.head(fpn_outs)
        if targets is None:
            raise ValueError("YOLOX in train mode needs targets (B, max_labels, 5) = class, cx, cy, w, h; "
                             "call model.eval() for inference")
        loss, iou_loss, conf_loss, cls_loss, l1_loss, num_fg = self.head(fpn_outs, targets, x)
        return {
            "total_loss": loss,
            "iou_loss": iou_loss,
            "l1_loss": l1_loss,
            "conf_loss": conf_loss,
            "cls_loss": cls_loss,
            "num_fg": num_fg,
        }
