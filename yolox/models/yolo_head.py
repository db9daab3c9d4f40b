"""YOLOXHead: the decoupled head (stem, cls and reg branches), SimOTA assignment and the losses. The anchor grid and
the box decoding live in yolox.utils.anchors."""
import math
from typing import NamedTuple

import torch
from torch import nn

from ..utils.anchors import AnchorGrid, decode_boxes, decode_outputs
from .losses import IOUloss
from .network_blocks import BaseConv, DWConv
from .simota import SIMOTA_MODES, TOPK_IOU, assign

__all__ = ["YOLOXHead", "Positives", "gather_positives"]


class YOLOXHead(nn.Module):
    def __init__(self, num_classes, width=1.0, strides=(8, 16, 32), in_channels=(256, 512, 1024), act="silu",
                 depthwise=False, simota_mode="batched", simota_pack_width=10000):
        super().__init__()
        if simota_mode not in SIMOTA_MODES:
            raise ValueError(f"simota_mode={simota_mode!r} is not one of {SIMOTA_MODES}")
        self.num_classes = num_classes
        self.decode_in_inference = True  # False returns the raw concatenated outputs (export)
        self.strides = list(strides)
        self.simota_mode = simota_mode
        self.simota_pack_width = simota_pack_width
        Conv = DWConv if depthwise else BaseConv
        hidden = int(256 * width)

        self.cls_convs = nn.ModuleList()
        self.reg_convs = nn.ModuleList()
        self.cls_preds = nn.ModuleList()
        self.reg_preds = nn.ModuleList()
        self.obj_preds = nn.ModuleList()
        self.stems = nn.ModuleList()
        for c in in_channels:
            self.stems.append(BaseConv(int(c * width), hidden, ksize=1, stride=1, act=act))
            self.cls_convs.append(nn.Sequential(Conv(hidden, hidden, 3, 1, act=act), Conv(hidden, hidden, 3, 1, act=act)))
            self.reg_convs.append(nn.Sequential(Conv(hidden, hidden, 3, 1, act=act), Conv(hidden, hidden, 3, 1, act=act)))
            self.cls_preds.append(nn.Conv2d(hidden, num_classes, 1, 1, 0))
            self.reg_preds.append(nn.Conv2d(hidden, 4, 1, 1, 0))
            self.obj_preds.append(nn.Conv2d(hidden, 1, 1, 1, 0))

        self.use_l1 = False  # switched on for the last no-augmentation epochs
        self.l1_loss = nn.L1Loss(reduction="none")
        self.bcewithlog_loss = nn.BCEWithLogitsLoss(reduction="none")
        self.iou_loss = IOUloss(reduction="none")
        self.hw = []
        self._grid_cache = {}

    def initialize_biases(self, prior_prob):
        """Set cls and obj biases to -log((1 - p) / p) so that initial scores are `prior_prob`."""
        value = -math.log((1 - prior_prob) / prior_prob)
        for conv in list(self.cls_preds) + list(self.obj_preds):
            nn.init.constant_(conv.bias, value)

    # ------------------------------------------------------------------------------------------------------
    def forward(self, xin, labels=None, imgs=None):
        # imgs: the official signature's; the assignment takes every size it needs from the anchor grid
        if self.training:
            return self._forward_train(xin, labels)
        raw_levels = []
        for k, x in enumerate(xin):
            reg_out, obj_out, cls_out = self._level_outputs(k, x)
            raw_levels.append(torch.cat([reg_out, obj_out.sigmoid(), cls_out.sigmoid()], 1))
        self.hw = [x.shape[-2:] for x in raw_levels]
        outputs = torch.cat([x.flatten(start_dim=2) for x in raw_levels], dim=2).permute(0, 2, 1)  # (B, A, 5+K)
        if self.decode_in_inference:
            return self.decode_outputs(outputs, dtype=outputs.dtype)
        return outputs

    def _level_outputs(self, k, x):
        """Raw (reg (B, 4, h, w), obj (B, 1, h, w), cls (B, K, h, w)) of level k."""
        x = self.stems[k](x)
        cls_feat = self.cls_convs[k](x)
        reg_feat = self.reg_convs[k](x)
        return self.reg_preds[k](reg_feat), self.obj_preds[k](reg_feat), self.cls_preds[k](cls_feat)

    def _forward_train(self, xin, labels):
        """Training: the three outputs are kept apart, (B, A, 4), (B, A) and (B, A, K), each flattened with one
        permute (a view for channels_last maps), instead of concatenating them and slicing the result again (the
        slices' backward would zero-fill three (B, A, 5 + K) tensors)."""
        if labels is None:
            raise ValueError("YOLOXHead in train mode needs labels (B, max_labels, 5)")
        regs, objs, clss, level_shapes = [], [], [], []
        for k, (x, stride) in enumerate(zip(xin, self.strides)):
            reg_out, obj_out, cls_out = self._level_outputs(k, x)
            regs.append(_flatten_level(reg_out))  # (B, h*w, 4)
            objs.append(_flatten_level(obj_out))  # (B, h*w, 1)
            clss.append(_flatten_level(cls_out))  # (B, h*w, K)
            level_shapes.append((reg_out.shape[-2], reg_out.shape[-1], stride))
        self.hw = [(h, w) for h, w, _ in level_shapes]
        reg_raw = torch.cat(regs, 1)  # (B, A, 4)
        obj_logits = torch.cat(objs, 1)[..., 0]  # (B, A)
        cls_logits = torch.cat(clss, 1)  # (B, A, K)
        grid = self.anchor_grid(level_shapes, reg_raw.device)
        return self.get_losses_split(reg_raw, obj_logits, cls_logits, labels, grid)

    def anchor_grid(self, level_shapes, device):
        """The AnchorGrid of levels (h, w, stride) on `device`, kept for the next call with the same levels."""
        key = (tuple(level_shapes), str(device))
        if key not in self._grid_cache:
            self._grid_cache = {key: AnchorGrid.from_shapes(level_shapes, device=device)}
        return self._grid_cache[key]

    decode_boxes = staticmethod(decode_boxes)  # yolox.utils.anchors.decode_boxes, reached from the head too

    def decode_outputs(self, outputs, dtype=None):
        """Eval-mode decoding of the concatenated (B, A, 5+K) outputs, using the level sizes of the last forward."""
        grid = self.anchor_grid([(int(h), int(w), s) for (h, w), s in zip(self.hw, self.strides)], outputs.device)
        return decode_outputs(outputs, grid)  # the module's function (yolox.utils.anchors), not this method

    # ------------------------------------------------------------------------------------------------------
    def get_assignments(self, bbox_preds, cls_logits, obj_logits, labels, grid: AnchorGrid):
        """SimOTA for the whole batch in `self.simota_mode`. labels (B, M, 5); rows summing to zero are padding."""
        labels = labels.float()
        gt_valid = labels.sum(-1) > 0  # (B, M)
        gt_classes = labels[..., 0].long()
        gt_boxes = labels[..., 1:5]
        return assign(self.simota_mode, bbox_preds.detach(), cls_logits.detach(), obj_logits.detach(),
                      gt_boxes, gt_classes, gt_valid, grid, pack_width=self.simota_pack_width)

    def get_losses(self, outputs, labels, grid: AnchorGrid):
        """Loss terms as the official release: (total, 5 * iou, obj, cls, l1, num_fg / num_gts), each / num_fg.

        outputs: raw (B, A, 5 + K) = reg (4), obj (1), cls (K) per anchor, the official layout.
        """
        return self.get_losses_split(outputs[..., :4], outputs[..., 4], outputs[..., 5:], labels, grid)

    def get_losses_split(self, reg_raw, obj_logits, cls_logits, labels, grid: AnchorGrid):
        """get_losses on the outputs kept apart: reg_raw (B, A, 4), obj_logits (B, A), cls_logits (B, A, K)."""
        B, A, _ = reg_raw.shape
        if reg_raw.dtype == torch.bfloat16:
            # bfloat16 (--fp16 on a CPU) keeps 8 significant bits: decoded in it, box centres at input 352 would be
            # up to 1 pixel off (0.25 on average), where float16, the official --fp16, keeps them within 1/8 pixel.
            # The losses and the assignment take float32 outputs instead.
            reg_raw, obj_logits, cls_logits = reg_raw.float(), obj_logits.float(), cls_logits.float()
        bbox_preds = self.decode_boxes(reg_raw, grid)  # (B, A, 4)

        asg = self.get_assignments(bbox_preds, cls_logits, obj_logits, labels, grid)
        num_fg = asg.fg_mask.sum().float().clamp(min=1.0)  # tensor: no host synchronisation

        loss_obj = self.bcewithlog_loss(obj_logits, asg.fg_mask.to(obj_logits.dtype)).sum() / num_fg
        bound = min(B * A, TOPK_IOU * asg.num_gts)  # each gt takes at most TOPK_IOU anchors
        if bound == 0:
            loss_iou, loss_cls, loss_l1 = self._losses_without_positives(reg_raw, bbox_preds, cls_logits)
        else:
            pos = gather_positives(asg.fg_mask, bound)
            loss_iou, loss_cls, loss_l1 = self._positive_losses(pos, reg_raw, bbox_preds, cls_logits, labels, asg,
                                                                grid, num_fg)

        reg_weight = 5.0
        loss = reg_weight * loss_iou + loss_obj + loss_cls + loss_l1
        return loss, reg_weight * loss_iou, loss_obj, loss_cls, loss_l1, num_fg / max(asg.num_gts, 1)

    def _positive_losses(self, pos, reg_raw, bbox_preds, cls_logits, labels, asg, grid: AnchorGrid, num_fg):
        """(iou, cls, l1) losses over the positives `pos` (gather_positives), each summed and divided by num_fg."""
        K = self.num_classes
        real = pos.real.unsqueeze(-1)  # (N, 1)
        # Filler rows (negatives past the positives) get a harmless unit box *before* the loss, so that a
        # diverging prediction there cannot send 0 x inf = NaN into the gradients; their loss is zeroed too.
        reg_targets = labels[pos.image, asg.matched_gt.reshape(-1)[pos.index], 1:5].float()  # (N, 4)
        reg_targets = torch.where(real, reg_targets, torch.ones_like(reg_targets))
        pred_boxes = torch.where(real, bbox_preds.reshape(-1, 4)[pos.index], torch.ones_like(reg_targets))
        loss_iou = _sum_over_real(self.iou_loss(pred_boxes, reg_targets), pos.real) / num_fg  # iou_loss: (N,)

        # one_hot(class) x IoU in float32, built by scatter (F.one_hot checks its input on the host)
        cls_targets = torch.zeros(pos.index.numel(), K, dtype=torch.float32, device=cls_logits.device)
        cls_targets.scatter_(1, asg.matched_cls.reshape(-1)[pos.index].unsqueeze(-1),
                             asg.matched_iou.reshape(-1)[pos.index].unsqueeze(-1).float())  # (N, K)
        loss_cls = _sum_over_real(self.bcewithlog_loss(cls_logits.reshape(-1, K)[pos.index], cls_targets),
                                  pos.real) / num_fg

        loss_l1 = reg_raw.new_zeros(())
        if self.use_l1:
            l1_targets = self.get_l1_target(reg_targets, grid.strides[pos.anchor], grid.x_shifts[pos.anchor],
                                            grid.y_shifts[pos.anchor])  # (N, 4) float32
            raw = torch.where(real, reg_raw.reshape(-1, 4)[pos.index], l1_targets.to(reg_raw.dtype))
            loss_l1 = _sum_over_real(self.l1_loss(raw, l1_targets), pos.real) / num_fg
        return loss_iou, loss_cls, loss_l1

    def _losses_without_positives(self, reg_raw, bbox_preds, cls_logits):
        """(iou, cls, l1) of a batch without any gt: sums over no positive, as the official's empty fg mask gives,
        still in the graph (zero gradients), so that under DistributedDataParallel every parameter of the head takes
        part in each process's backward even when its share of the batch has no box."""
        loss_iou = bbox_preds.reshape(-1, 4)[:0].sum()
        loss_cls = cls_logits.reshape(-1, self.num_classes)[:0].sum()
        loss_l1 = reg_raw.reshape(-1, 4)[:0].sum() if self.use_l1 else reg_raw.new_zeros(())
        return loss_iou, loss_cls, loss_l1

    @staticmethod
    def get_l1_target(gt, stride, x_shifts, y_shifts, eps=1e-8):
        """Targets of the raw regression outputs for the L1 loss: (N, 4) from gt (N, 4) cx, cy, w, h."""
        return torch.stack([
            gt[:, 0] / stride - x_shifts,
            gt[:, 1] / stride - y_shifts,
            torch.log(gt[:, 2] / stride + eps),
            torch.log(gt[:, 3] / stride + eps),
        ], dim=1)


def _flatten_level(x):
    """(B, C, h, w) -> (B, h * w, C), rows in the official anchor order (y outer, x inner)."""
    b, c = x.shape[:2]
    return x.permute(0, 2, 3, 1).reshape(b, -1, c)


class Positives(NamedTuple):
    """The positive anchors of a batch as rows of a length known on the host; filler rows follow the positives."""

    index: torch.Tensor  # (N,) int64, flat index into the batch's B * A anchors
    real: torch.Tensor  # (N,) bool, a positive (True) or a filler row, a negative past the last positive (False)
    image: torch.Tensor  # (N,) int64, image of the row
    anchor: torch.Tensor  # (N,) int64, anchor of the row within its image


def gather_positives(fg_mask, bound):
    """The positives of fg_mask (B, A), in batch order, then negatives as filler up to `bound` rows: Positives (N,).

    `bound` is a host-known upper limit of the number of positives (each gt takes at most TOPK_IOU anchors), at
    most B * A. The count itself is on the device: a boolean index or nonzero() would wait for it, a host
    synchronisation every iteration. A stable sort of the negative flags puts the positives first instead, and the
    cut at `bound` gives every loss tensor a size known in advance; the losses mask the filler rows out (`real`).
    """
    B, A = fg_mask.shape
    index = torch.sort((~fg_mask).reshape(-1).to(torch.uint8), stable=True).indices[:bound]  # (N,) positives first
    return Positives(index, fg_mask.reshape(-1)[index], index // A, index % A)


def _sum_over_real(loss, real):
    """Sum of the loss rows (N, ...) whose `real` (N,) is True; the filler rows count zero."""
    real = real.reshape(real.shape + (1,) * (loss.dim() - 1))  # (N, 1, ...) against (N, ...)
    return torch.where(real, loss, torch.zeros_like(loss)).sum()
